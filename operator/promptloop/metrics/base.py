"""What every failure-count provider shares: cumulative counters, the error that means "no
data", the ``{{ version }}`` placeholder, and the factory that picks a provider from the spec.

A provider answers one question: how many requests has this version served, and how many of
them failed, since it started counting? The counters are cumulative; the rollout logic takes
differences between ticks. A provider never answers zeros when it cannot tell: it raises
:class:`MetricsUnavailable`, so "no data" and "no traffic" stay distinguishable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx

if TYPE_CHECKING:
    from promptloop.api import MetricsSpec

__all__ = [
    "VERSION_PLACEHOLDER",
    "Counters",
    "MetricsProvider",
    "MetricsUnavailable",
    "counters_from_json",
    "provider_for",
    "render_version",
]

# ``{{ version }}`` with any spacing, as users write jinja-style placeholders.
VERSION_PLACEHOLDER = re.compile(r"\{\{\s*version\s*\}\}")


class MetricsUnavailable(Exception):
    """The provider could not give trustworthy counts for a version (never a silent zero)."""


@dataclass(frozen=True)
class Counters:
    """Cumulative requests and failures of one version.

    Raises
    ------
    ValueError
        When a count is not a non-negative integer or ``failed`` exceeds ``total``.
    """

    total: int
    failed: int

    def __post_init__(self) -> None:
        for name in ("total", "failed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.failed > self.total:
            raise ValueError(f"failed ({self.failed}) exceeds total ({self.total})")


class MetricsProvider(Protocol):
    """Reads one version's cumulative counters."""

    async def read(self, version: str) -> Counters:
        """The version's counters; :class:`MetricsUnavailable` when they cannot be read."""
        ...


def render_version(template: str, version: str, *, escape: Callable[[str], str]) -> str:
    """Replace every ``{{ version }}`` in ``template`` with ``escape(version)``.

    Parameters
    ----------
    template
        A URL or a query holding the placeholder.
    version
        The version to put in.
    escape
        How the version must be escaped where it lands (URL-encoding, a PromQL string...).

    Returns
    -------
    str
        The rendered text.
    """
    escaped = escape(version)
    # A function replacement, so backslashes in the version are not read as group references.
    return VERSION_PLACEHOLDER.sub(lambda _match: escaped, template)


def counters_from_json(body: Any, where: str) -> Counters:
    """Validate a ``{"total": int, "failed": int}`` object.

    Parameters
    ----------
    body
        The decoded JSON.
    where
        Names the source in the error message.

    Returns
    -------
    Counters
        The validated counters.

    Raises
    ------
    MetricsUnavailable
        When the shape or the numbers are wrong (floats, negatives, failed above total...).
    """
    if not isinstance(body, dict) or "total" not in body or "failed" not in body:
        raise MetricsUnavailable(f"{where} did not answer an object with total and failed")
    try:
        return Counters(total=body["total"], failed=body["failed"])
    except ValueError as error:
        raise MetricsUnavailable(f"{where} answered bad counters: {error}") from None


def provider_for(
    metrics_spec: MetricsSpec,
    *,
    node_id: str,
    router_url: str | None,
    client: httpx.AsyncClient,
    api_key: str | None = None,
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | None = None,
) -> MetricsProvider:
    """The provider the rollout's ``spec.metrics`` asks for.

    Parameters
    ----------
    metrics_spec
        ``spec.metrics``; exactly one of ``prometheus``, ``agentfieldMemory``, ``http``.
    node_id
        The agent's AgentField node id (part of the memory key).
    router_url
        The AgentField URL from ``spec.router``, the default for ``agentfieldMemory.url``.
    client
        The shared HTTP client.
    api_key
        AgentField's API key for ``agentfieldMemory`` (read by the caller from
        ``apiKeySecretRef``), if the control plane requires one.
    timeout
        Seconds each request may take.
    headers, auth
        For ``prometheus`` and ``http``: what :func:`promptloop.metrics.endpoint.resolve` made
        of their headers and credentials.

    Returns
    -------
    MetricsProvider
        A provider bound to this rollout.

    Raises
    ------
    ValueError
        When not exactly one provider is set, or agentfieldMemory has no URL to use.
    """
    # Imported here: the concrete providers import this module.
    from promptloop.metrics.agentfield_memory import AgentFieldMemoryProvider
    from promptloop.metrics.http import HttpProvider
    from promptloop.metrics.prometheus import PrometheusProvider

    chosen = [
        name
        for name in ("prometheus", "agentfield_memory", "http")
        if getattr(metrics_spec, name) is not None
    ]
    if len(chosen) != 1:
        raise ValueError(
            "exactly one metrics provider must be set: prometheus, agentfieldMemory or http"
        )
    if metrics_spec.prometheus is not None:
        spec = metrics_spec.prometheus
        return PrometheusProvider(
            spec.url,
            total_query=spec.total_query,
            failed_query=spec.failed_query,
            client=client,
            timeout=timeout,
            headers=headers,
            auth=auth,
        )
    if metrics_spec.agentfield_memory is not None:
        memory = metrics_spec.agentfield_memory
        url = memory.url or router_url
        if not url:
            raise ValueError("metrics.agentfieldMemory.url is unset and there is no router URL")
        return AgentFieldMemoryProvider(
            url,
            node_id=node_id,
            key_prefix=memory.key_prefix,
            client=client,
            api_key=api_key,
            timeout=timeout,
        )
    assert metrics_spec.http is not None  # one provider is set, checked above
    return HttpProvider(
        metrics_spec.http.url, client=client, timeout=timeout, headers=headers, auth=auth
    )
