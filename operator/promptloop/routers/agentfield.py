"""The AgentField connector as a traffic backend: write per-version weights, read them back.

Facts this code is built around (``shared/notes/agentfield-api.md`` §0-1, from the control plane's
Go source):

- Routes live under ``/api/v1/connector`` and authenticate with the ``X-Connector-Token``
  header; a wrong token answers 403 (never 401), so 403 is final and is not retried.
- ``PUT /reasoners/{node}/versions/{version}/weight`` takes ``{"weight": int}`` in 0..10000, a
  relative share. 0 counts as 100, so a version cannot be drained by weight; the canary's share
  equals its percentage when stable and canary add up to 10000 (see
  :func:`promptloop.routers.base.plan_shares`).
- Every (re-)registration of a version resets its weight to 100, so :meth:`apply_weights`
  writes every share on every call and reads all of them back; nothing is cached.
- An unknown version answers 500 (not 404): it is mapped to :class:`UnknownVersion` and not
  retried. The versions list repeats the smallest version: it is de-duplicated here.

The token is given by the caller (the operator reads it from the Secret); it is sent only as a
header and never appears in a log line, an exception message or a ``repr``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from promptloop.api import VersionWeight
from promptloop.routers.base import (
    ConnectorDisabled,
    Readiness,
    RouterError,
    RouterForbidden,
    RouterUnavailable,
    Split,
    UnknownVersion,
    VersionInfo,
    plan_shares,
    readback,
)

__all__ = ["AgentFieldConnector", "AgentFieldTraffic", "RetryPolicy", "parse_go_time"]

log = logging.getLogger(__name__)

_CONNECTOR = "/api/v1/connector"

# The storage errors behind the connector's 500 for a missing (node, version): scanAgentNode's
# "agent node with ID '' version '' not found" (local.go:4721) and UpdateAgentTrafficWeight's
# "agent (id=..., version=...) not found" (local.go:5148).
_NOT_FOUND_500 = re.compile(r"\bnot found\b")

_GO_ZERO_TIME_YEAR = 1
_FRACTION = re.compile(r"(\.\d{6})\d+")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry connection errors and 5xx answers.

    Attributes
    ----------
    attempts
        Tries in all (1 means no retry).
    backoff
        Seconds to wait before the 2nd, 3rd, ... try; the last value repeats.
    """

    attempts: int = 3
    backoff: tuple[float, ...] = (0.2, 0.5, 1.0)

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        if not self.backoff:
            return 0.0
        return self.backoff[min(retry, len(self.backoff)) - 1]


def parse_go_time(value: Any) -> datetime | None:
    """Parse a Go ``time.Time`` from JSON; None for null, garbage or Go's zero time.

    Parameters
    ----------
    value
        An RFC 3339 string, possibly with nanoseconds (Python keeps microseconds).

    Returns
    -------
    datetime or None
        A timezone-aware datetime.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", value))
    except ValueError:
        return None
    if parsed.year <= _GO_ZERO_TIME_YEAR or parsed.tzinfo is None:
        return None
    return parsed


def _error_text(response: httpx.Response) -> str:
    """The control plane's ``error``/``message`` fields, else a short slice of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("error", "message") if body.get(k)]
        if parts:
            return ": ".join(parts)
    return response.text[:200]


class AgentFieldConnector:
    """Steps traffic weights through AgentField's connector API.

    Parameters
    ----------
    url
        Base URL of the control plane, e.g. ``http://agentfield:8080``.
    token
        The connector token (``X-Connector-Token``).
    client
        A shared ``httpx.AsyncClient`` (recommended: building a client loads the CA bundle,
        blocking file I/O of tens of milliseconds); one is created, and closed by
        :meth:`aclose`, when omitted. The token is never set on the client, so sharing it with
        other code is safe.
    timeout
        Seconds each request may take.
    retry
        Retries for connection errors and 5xx answers.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()
        self._timeout = timeout
        self._retry = retry or RetryPolicy()

    def __repr__(self) -> str:
        return f"AgentFieldConnector(url={self.url!r})"

    async def __aenter__(self) -> AgentFieldConnector:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this connector created it."""
        if self._owns_client:
            await self._client.aclose()

    # -- reads -------------------------------------------------------------------------------

    async def manifest(self) -> dict[str, Any]:
        """The connector's manifest: whether it is enabled and which capabilities it has.

        Returns
        -------
        dict
            ``{"connector_enabled", "capabilities", "features"}``.

        Raises
        ------
        RouterForbidden
            Wrong token.
        RouterUnavailable
            Unreachable or failing after retries.
        RouterError
            The connector is not enabled (404) or answered something unexpected.
        """
        response = await self._request("GET", "/manifest")
        self._expect_ok(response, "GET /manifest")
        body = self._json(response, "GET /manifest")
        if not isinstance(body, dict):
            raise RouterError("AgentField's manifest is not a JSON object")
        return body

    async def list_versions(self, node_id: str) -> list[VersionInfo]:
        """Every registered version of a node, each once.

        The control plane lists its ``GetAgent`` row first and then every versioned row, so the
        smallest version usually appears twice; the first occurrence is kept.

        Parameters
        ----------
        node_id
            The AgentField node id.

        Returns
        -------
        list of VersionInfo
            In the control plane's order; empty when the node has no registered version (404).

        Raises
        ------
        RouterForbidden, RouterUnavailable, RouterError
            As for every call.
        """
        what = f"GET versions of node {node_id!r}"
        response = await self._request("GET", f"/reasoners/{quote(node_id, safe='')}/versions")
        if response.status_code == 404:
            self._raise_if_disabled(response, what)
            # {"error":"agent not found"}: nothing registered yet.
            return []
        self._expect_ok(response, what)
        body = self._json(response, what)
        entries = body.get("versions") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise RouterError(f"AgentField answered {what} without a versions list")
        seen: dict[str, VersionInfo] = {}
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("version"), str):
                raise RouterError(f"AgentField answered {what} with a malformed entry")
            version = entry["version"]
            if version in seen:
                continue
            weight = entry.get("traffic_weight")
            seen[version] = VersionInfo(
                version=version,
                weight=weight if isinstance(weight, int) and not isinstance(weight, bool) else 0,
                health_status=str(entry.get("health_status") or ""),
                lifecycle_status=str(entry.get("lifecycle_status") or ""),
                last_heartbeat=parse_go_time(entry.get("last_heartbeat")),
                base_url=str(entry.get("base_url") or ""),
            )
        return list(seen.values())

    # -- writes ------------------------------------------------------------------------------

    async def set_weight(self, node_id: str, version: str, weight: int) -> int:
        """Write one version's raw share.

        Parameters
        ----------
        node_id, version
            Which row.
        weight
            0..10000 (0 is refused: AgentField would treat it as 100).

        Returns
        -------
        int
            The weight the control plane reports it had before.

        Raises
        ------
        ValueError
            For a weight outside 1..10000.
        UnknownVersion
            The version is not registered (the control plane's 500).
        RouterForbidden, RouterUnavailable, RouterError
            As for every call.
        """
        if not 1 <= weight <= 10000:
            raise ValueError(f"weight must be within 1..10000, got {weight}")
        path = f"/reasoners/{quote(node_id, safe='')}/versions/{quote(version, safe='')}/weight"
        what = f"PUT weight of {node_id!r} {version!r}"
        response = await self._request(
            "PUT", path, json={"weight": weight}, unknown_version=(node_id, version)
        )
        self._expect_ok(response, what)
        body = self._json(response, what)
        previous = body.get("previous_weight") if isinstance(body, dict) else None
        log.debug("AgentField weight of %s %s set to %d", node_id, version, weight)
        return previous if isinstance(previous, int) else 0

    async def apply_weights(
        self,
        node_id: str,
        *,
        stable: str,
        canary: str | None,
        canary_percent: int,
        others: Sequence[str] = (),
        current: Sequence[VersionInfo] | None = None,
    ) -> list[VersionWeight]:
        """Write the split (stable, canary at ``canary_percent``, everyone else at the minimum
        share), then read every version back.

        Every call writes every share, because any re-registration resets a version to 100;
        the result is what the control plane holds afterwards, not what was meant.

        Parameters
        ----------
        node_id
            The AgentField node id.
        stable
            The incumbent version.
        canary
            The challenger version, or None (stable gets everything).
        canary_percent
            The challenger's percentage, 1..100 (0 is refused: scale the challenger to zero).
        others
            Versions to hold at the minimum share; every other registered version gets it too.
        current
            The versions as this caller just listed them (one read per pass, not three). When
            every share already equals the plan, nothing is written and that listing *is* the
            read-back; otherwise the shares are written and read back afresh.

        Returns
        -------
        list of VersionWeight
            The read-back raw weights and effective percentages, with roles.

        Raises
        ------
        ValueError
            For an impossible split (see :func:`promptloop.routers.base.plan_shares`).
        UnknownVersion
            Stable or canary is not registered.
        RouterForbidden, RouterUnavailable, RouterError
            As for every call.
        """
        # Validate the request before touching the network.
        plan_shares(stable=stable, canary=canary, canary_percent=canary_percent)
        listed = current if current is not None else await self.list_versions(node_id)
        current_shares = {info.version: info.weight for info in listed}
        for role, version in (("stable", stable), ("canary", canary)):
            if version is not None and version not in current_shares:
                raise UnknownVersion(
                    f"{role} version {version!r} of node {node_id!r} is not registered with "
                    "AgentField"
                )
        rest = [
            v
            for v in [*others, *current_shares]
            if v in current_shares and v not in (stable, canary)
        ]
        shares = plan_shares(
            stable=stable, canary=canary, canary_percent=canary_percent, others=rest
        )
        order = list(shares)
        if canary is not None and shares[canary] < current_shares.get(canary, 100):
            # Stepping down: lower the canary before raising stable, so the canary's share is
            # never above either the old or the new one in between.
            order.remove(canary)
            order.insert(0, canary)
        if current is not None and all(
            current_shares.get(version) == share for version, share in shares.items()
        ):
            # Nothing to change: the listing just made is what the control plane holds.
            return readback(current_shares, stable=stable, canary=canary)
        for version in order:
            await self.set_weight(node_id, version, shares[version])
        after = {info.version: info.weight for info in await self.list_versions(node_id)}
        return readback(after, stable=stable, canary=canary)

    # -- plumbing ----------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        # The control plane never echoes the token, but nothing it says reaches a message
        # unredacted either.
        return text.replace(self._token, "***") if self._token else text

    def _raise_if_disabled(self, response: httpx.Response, what: str) -> None:
        """A 404 from gin's catch-all (``endpoint_not_found``, handlers/agentic/discover.go:88-98
        in 0.1.128): the connector group was never registered (server/routes_connector.go:17-20).
        """
        try:
            body = response.json()
        except ValueError:
            return
        if isinstance(body, dict) and body.get("error") == "endpoint_not_found":
            raise ConnectorDisabled(
                f"AgentField answered {what} with 404 endpoint_not_found: its connector is not "
                "enabled (start the control plane with features.connector.enabled and a token, "
                "AGENTFIELD_CONNECTOR_ENABLED=true and AGENTFIELD_CONNECTOR_TOKEN)"
            )

    def _expect_ok(self, response: httpx.Response, what: str) -> None:
        if 200 <= response.status_code < 300:
            return
        detail = self._redact(_error_text(response))
        if response.status_code == 404:
            self._raise_if_disabled(response, what)
            raise RouterError(
                f"AgentField answered {what} with 404 ({detail}); is the connector enabled "
                "(it needs a token at control-plane start)?"
            )
        raise RouterError(f"AgentField refused {what}: HTTP {response.status_code}: {detail}")

    def _json(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise RouterError(
                f"AgentField answered {what} with something other than JSON"
            ) from None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        unknown_version: tuple[str, str] | None = None,
    ) -> httpx.Response:
        """One connector call with retries on connection errors and 5xx, none on 403."""
        url = f"{self.url}{_CONNECTOR}{path}"
        what = f"{method} {_CONNECTOR}{path}"
        problem = ""
        for attempt in range(1, self._retry.attempts + 1):
            try:
                response = await self._client.request(
                    method,
                    url,
                    json=json,
                    headers={"X-Connector-Token": self._token},
                    timeout=self._timeout,
                )
            except httpx.TransportError as error:
                # Includes timeouts, refused connections and protocol errors; messages from
                # httpx name the URL, never the headers.
                problem = self._redact(f"{type(error).__name__}: {error}".rstrip(": "))
            else:
                status = response.status_code
                if status in (401, 403):
                    raise RouterForbidden(
                        f"AgentField refused {what} (HTTP {status}: "
                        f"{self._redact(_error_text(response))}); check the connector token "
                        "and that the reasoner_management capability is enabled"
                    )
                if status < 500:
                    return response
                detail = self._redact(_error_text(response))
                if unknown_version is not None and _NOT_FOUND_500.search(detail):
                    node_id, version = unknown_version
                    raise UnknownVersion(
                        f"version {version!r} of node {node_id!r} is not registered with "
                        f"AgentField (HTTP {status}: {detail})"
                    )
                problem = f"HTTP {status}: {detail}"
            if attempt < self._retry.attempts:
                delay = self._retry.delay(attempt)
                log.warning(
                    "AgentField %s failed (%s); retry %d/%d in %.1fs",
                    what,
                    problem,
                    attempt,
                    self._retry.attempts - 1,
                    delay,
                )
                await asyncio.sleep(delay)
        raise RouterUnavailable(
            f"AgentField {what} failed after {self._retry.attempts} attempts: {problem}"
        )


class AgentFieldTraffic:
    """:class:`AgentFieldConnector` bound to one node: AgentField as a ``TrafficRouter``.

    AgentField cannot drain by weight (0 counts as 100) and its execute route sends every call
    to the smallest version string, so ``drains_by_weight`` is False and
    ``orders_by_version_string`` True: the reconciler scales a drained challenger to zero and
    refuses a version that would sort first.

    Readiness of a version is what AgentField can vouch for plus what the version itself
    answers: registered (else "not registered", told apart from a disabled connector), and a
    ``GET {base_url}/health`` of its own address (the SDK serves it). The version's
    ``last_heartbeat`` is only advisory: the control plane writes at most one heartbeat per
    2 s per *node id*, and a beat that carries a status stamps the smallest version's row
    (handlers/nodes_heartbeat.go:41-69/141, services/status_manager.go:336/660 in 0.1.128).
    """

    kind = "agentfield"
    drains_by_weight = False
    orders_by_version_string = True

    def __init__(
        self,
        connector: AgentFieldConnector,
        node_id: str,
        *,
        client: httpx.AsyncClient,
        probe_timeout: float = 2.0,
    ) -> None:
        self.connector = connector
        self.node_id = node_id
        self._client = client
        self._probe_timeout = probe_timeout
        self._versions: list[VersionInfo] | None = None

    def __repr__(self) -> str:
        return f"AgentFieldTraffic({self.connector.url!r}, node={self.node_id!r})"

    async def aclose(self) -> None:
        """Close the connector's client if it owns one."""
        await self.connector.aclose()

    async def listed(self) -> list[VersionInfo]:
        """The node's versions, listed once and remembered for this object's life (one pass)."""
        if self._versions is None:
            self._versions = await self.connector.list_versions(self.node_id)
        return self._versions

    async def known_versions(self) -> list[str]:
        """Every version AgentField keeps registered for the node (rows are never deleted)."""
        return [v.version for v in await self.listed()]

    async def apply(self, split: Split) -> list[VersionWeight]:
        """Write every share and read them back; a 0 % canary is held at the minimum share
        (AgentField cannot drain by weight: the caller scales the challenger to zero)."""
        canary = split.canary if split.canary_percent > 0 else None
        others = tuple(v for v in split.others if v != canary)
        if split.canary is not None and canary is None:
            others = (*others, split.canary)
        # This pass's listing (the gatherer's) spares a second GET when nothing needs writing.
        current, self._versions = self._versions, None
        return await self.connector.apply_weights(
            self.node_id,
            stable=split.stable,
            canary=canary,
            canary_percent=split.canary_percent if canary else 0,
            others=others,
            current=current,
        )

    async def read(self) -> list[VersionWeight]:
        """The raw shares AgentField holds now (roles are the caller's business)."""
        self._versions = None
        return [
            VersionWeight(version=v.version, percent=0.0, raw=v.weight, role=None)
            for v in await self.listed()
        ]

    async def version_ready(self, version: str) -> Readiness:
        """Registered, and its own address answers ``/health``; the heartbeat is advisory."""
        try:
            versions = await self.listed()
        except ConnectorDisabled as error:
            return Readiness(False, "ConnectorDisabled", str(error))
        except RouterUnavailable as error:
            return Readiness(None, "Unavailable", f"cannot list versions in AgentField: {error}")
        except RouterError as error:
            return Readiness(None, "Unavailable", str(error))
        match = next((v for v in versions if v.version == version), None)
        if match is None:
            return Readiness(
                False,
                "NotRegistered",
                f"version {version} is not registered in AgentField for node {self.node_id}",
            )
        if not match.base_url:
            return Readiness(False, "NoAddress", f"version {version} registered no base_url")
        probe = f"{match.base_url.rstrip('/')}/health"
        try:
            answer = await self._client.get(probe, timeout=self._probe_timeout)
        except httpx.HTTPError as error:
            return Readiness(
                False,
                "ProbeFailed",
                f"version {version} does not answer at its own address {probe}: "
                f"{type(error).__name__}",
            )
        if not 200 <= answer.status_code < 300:
            return Readiness(
                False,
                "ProbeFailed",
                f"version {version} answered {answer.status_code} at {probe}",
            )
        advisory = (
            f"; last heartbeat {match.last_heartbeat.isoformat()} (advisory: AgentField keeps one "
            "heartbeat per node every 2 s, on the smallest version's row)"
            if match.last_heartbeat is not None
            else ""
        )
        return Readiness(True, "Ready", f"{version} registered and answers {probe}{advisory}")

    async def drain(self, version: str) -> None:
        """Nothing AgentField can do: weight 0 counts as 100 and no route deletes a version
        (the storage's DeleteAgentVersion is reached only from registration). The caller scales
        the challenger to zero."""
