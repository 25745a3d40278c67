"""The ``agentfieldMemory`` metrics provider: counters the agents keep in AgentField's memory.

Each agent version keeps ``{"total": int, "failed": int}`` (cumulative) at the key
``<keyPrefix>.<nodeId>.<version>`` in the **global** scope (``app.memory.global_scope.set`` in the
SDK; a plain ``app.memory.set`` inside a reasoner would land in the per-run workflow scope,
agentfield-api.md §3). This provider reads it with
``POST {url}/api/v1/memory/get {"key": ..., "scope": "global"}`` and no workflow headers.

A 404 whose body is the memory API's own ``{"error": "not_found", ...}`` means the key was never
written: the version has served nothing yet, so the answer is ``Counters(0, 0)``. That is a
deliberate choice: a freshly started challenger has no key until its first request, and
treating that as "no data" would stall every canary at its start. Any other failure (a
different 404 such as a missing route, 5xx, a connection error, a malformed value) is
:class:`~promptloop.metrics.base.MetricsUnavailable`. The optional API key is sent as
``X-API-Key`` and never appears in a message.

Counter contract (:mod:`promptloop.metrics.base`): the agent updates ``total`` and ``failed`` in
one write, when the request's outcome is known (the example classifier's ``OutcomeRecorder``
does), and once per task, not per retried attempt. A restarted agent that starts its counters
again from zero is a reset the rollout survives.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from promptloop.metrics.base import Counters, MetricsUnavailable, counters_from_json

__all__ = ["AgentFieldMemoryProvider", "memory_key"]


def memory_key(key_prefix: str, node_id: str, version: str) -> str:
    """The global memory key holding one version's counters: ``<prefix>.<node>.<version>``."""
    return f"{key_prefix}.{node_id}.{version}"


class AgentFieldMemoryProvider:
    """Reads per-version counters from AgentField global memory.

    Parameters
    ----------
    url
        AgentField base URL.
    node_id
        The agent's node id.
    key_prefix
        The key prefix (``spec.metrics.agentfieldMemory.keyPrefix``).
    client
        The shared HTTP client.
    api_key
        AgentField's API key, when the control plane requires one.
    timeout
        Seconds the request may take.
    """

    def __init__(
        self,
        url: str,
        *,
        node_id: str,
        key_prefix: str,
        client: httpx.AsyncClient,
        api_key: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.node_id = node_id
        self.key_prefix = key_prefix
        self._client = client
        self._api_key = api_key
        self._timeout = timeout

    def __repr__(self) -> str:
        return (
            f"AgentFieldMemoryProvider(url={self.url!r}, node_id={self.node_id!r}, "
            f"key_prefix={self.key_prefix!r})"
        )

    async def read(self, version: str) -> Counters:
        """The version's counters from global memory; ``Counters(0, 0)`` if never written.

        Parameters
        ----------
        version
            The version.

        Returns
        -------
        Counters
            The cumulative counters.

        Raises
        ------
        MetricsUnavailable
            On a connection error, an unexpected status, or a malformed value.
        """
        key = memory_key(self.key_prefix, self.node_id, version)
        where = f"AgentField memory key {key!r} at {self.url}"
        headers = {"X-API-Key": self._api_key} if self._api_key else {}
        try:
            response = await self._client.post(
                f"{self.url}/api/v1/memory/get",
                json={"key": key, "scope": "global"},
                headers=headers,
                timeout=self._timeout,
            )
        except httpx.HTTPError as error:
            raise MetricsUnavailable(f"{where}: {type(error).__name__}: {error}") from None
        body = _json_or_none(response)
        if response.status_code == 404:
            if isinstance(body, dict) and body.get("error") == "not_found":
                return Counters(total=0, failed=0)
            raise MetricsUnavailable(f"{where}: HTTP 404 from something other than memory/get")
        if response.status_code != 200:
            raise MetricsUnavailable(f"{where}: HTTP {response.status_code}")
        if not isinstance(body, dict) or "data" not in body:
            raise MetricsUnavailable(f"{where}: the answer is not a memory object")
        data = body["data"]
        if isinstance(data, str):
            # The SDK decodes string data that holds JSON (memory.py get()); so do we.
            try:
                data = json.loads(data)
            except ValueError:
                raise MetricsUnavailable(f"{where}: data is a string, not counters") from None
        return counters_from_json(data, where)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
