"""Reaching a provider's backend as its spec says: headers, a bearer token or basic auth from
Secrets, a CA bundle, a timeout.

:func:`resolve` turns ``EndpointOptions`` (the spec) into a :class:`ResolvedEndpoint` (headers,
``httpx`` auth, the client to use, seconds), reading the Secrets it names. Credentials live only
in the resolved value: its ``repr`` hides them and no error message carries them (a missing
Secret is named, never its content).

TLS verification in ``httpx`` belongs to the client, not to a request, so a rollout with its own
CA gets a client of its own: :class:`ClientPool` keeps one per distinct CA bundle (by digest)
and closes them with the operator.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from promptloop.api.common import SecretKeyRef, parse_duration
from promptloop.api.endpoint import EndpointOptions
from promptloop.metrics.base import MetricsUnavailable

__all__ = ["ClientPool", "ResolvedEndpoint", "SecretReader", "resolve"]

SecretReader = Callable[[str, str, str], Awaitable[str | None]]


@dataclass(frozen=True)
class ResolvedEndpoint:
    """What a provider sends with each request."""

    client: httpx.AsyncClient = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    auth: httpx.Auth | None = field(default=None, repr=False)
    timeout: float = 5.0


class ClientPool:
    """The shared client, plus one client per distinct CA bundle.

    Parameters
    ----------
    default
        The operator's shared client (system trust store).
    """

    def __init__(self, default: httpx.AsyncClient) -> None:
        self.default = default
        self._by_ca: dict[str, httpx.AsyncClient] = {}

    def client_for(self, ca_pem: str | None) -> httpx.AsyncClient:
        """The client that trusts ``ca_pem`` (the shared one when None).

        Raises
        ------
        MetricsUnavailable
            When the bundle holds no usable certificate.
        """
        if not ca_pem:
            return self.default
        digest = hashlib.sha256(ca_pem.encode()).hexdigest()
        found = self._by_ca.get(digest)
        if found is None:
            try:
                context = ssl.create_default_context(cadata=ca_pem)
            except (ssl.SSLError, ValueError) as error:
                raise MetricsUnavailable(f"the CA bundle is not usable PEM: {error}") from None
            found = httpx.AsyncClient(verify=context, timeout=httpx.Timeout(5.0, connect=2.0))
            self._by_ca[digest] = found
        return found

    async def close(self) -> None:
        """Close the per-CA clients (the shared one belongs to its creator)."""
        for client in self._by_ca.values():
            await client.aclose()
        self._by_ca.clear()


async def _secret(read_secret: SecretReader, namespace: str, ref: SecretKeyRef, what: str) -> str:
    try:
        value = await read_secret(namespace, ref.name, ref.key)
    except Exception as error:  # RBAC or the API server; the message names the Secret only
        raise MetricsUnavailable(
            f"cannot read the {what} from Secret {ref.name}: {type(error).__name__}"
        ) from None
    if value is None:
        raise MetricsUnavailable(f"Secret {ref.name} has no key {ref.key} (the {what})")
    return value


async def resolve(
    options: EndpointOptions,
    *,
    namespace: str,
    read_secret: SecretReader,
    pool: ClientPool,
) -> ResolvedEndpoint:
    """Read the Secrets ``options`` names and build what each request carries.

    Raises
    ------
    MetricsUnavailable
        When a Secret or key is missing, or the CA bundle is not usable.
    """
    headers: dict[str, str] = {}
    for header in options.headers:
        if header.value_from is not None:
            headers[header.name] = (
                await _secret(read_secret, namespace, header.value_from, f"header {header.name}")
            ).strip()
        else:
            headers[header.name] = header.value or ""
    auth: httpx.Auth | None = None
    if options.bearer_token_secret_ref is not None:
        token = await _secret(
            read_secret, namespace, options.bearer_token_secret_ref, "bearer token"
        )
        headers["Authorization"] = f"Bearer {token.strip()}"
    elif options.basic_auth is not None:
        user = await _secret(read_secret, namespace, options.basic_auth.username, "user name")
        password = await _secret(read_secret, namespace, options.basic_auth.password, "password")
        auth = httpx.BasicAuth(user.strip(), password.strip())
    ca = options.ca_bundle
    if options.ca_bundle_secret_ref is not None:
        ca = await _secret(read_secret, namespace, options.ca_bundle_secret_ref, "CA bundle")
    return ResolvedEndpoint(
        client=pool.client_for(ca),
        headers=headers,
        auth=auth,
        timeout=parse_duration(options.timeout).total_seconds(),
    )
