"""Pick the evidence provider a rollout's ``spec.metrics`` asks for.

Kept apart from :mod:`promptloop.metrics.base`, which every provider imports, so that there is no
import cycle between the base and the providers.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from promptloop.api import MetricsSpec
from promptloop.metrics.agentfield_memory import AgentFieldMemoryProvider
from promptloop.metrics.base import MetricsProvider
from promptloop.metrics.http import HttpProvider
from promptloop.metrics.prometheus import PrometheusProvider

__all__ = ["provider_for"]


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
