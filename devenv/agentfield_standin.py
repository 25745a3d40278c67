"""The AgentField control-plane STAND-IN: a small aiohttp server, not the real AgentField.

Why a stand-in: the Go module proxy refuses ``github.com/Agent-Field/agentfield/control-plane``
(``403 Forbidden ... This module version is not available`` for @latest, @main, @v0.1.127, the
lower-case path and the root module), so the real control plane cannot be built here. Per the
project's rules this module implements the routes promptloop and the Python SDK (``agentfield``
0.1.144) use, with the JSON shapes and quirks read from the control plane's Go source
(``shared/notes/agentfield-api.md``; line numbers below refer to ``dizcare-ce/agentfield`` @
``f39f9575``, control plane 0.1.80, whose connector code is the same up to ~0.1.127). It calls
itself a stand-in everywhere it shows up: the ``/health`` body, an ``X-AgentField-Standin``
header on every response, and its log lines.

Served routes:

- ``GET /health``, ``GET /api/v1/health`` (no auth).
- Agents (as the SDK sends them): ``POST /api/v1/nodes/register`` and ``POST /api/v1/nodes``,
  ``POST /api/v1/nodes/{id}/heartbeat``, ``POST /api/v1/nodes/{id}/shutdown``,
  ``GET /api/v1/nodes``, ``GET /api/v1/nodes/{id}[?version=]``, ``GET /api/v1/nodes/{id}/status``.
- Connector, only when started with a token: ``/api/v1/connector/manifest``, ``/reasoners``,
  ``/reasoners/{id}``, ``/reasoners/{id}/versions``, ``/reasoners/{id}/versions/{version}``,
  ``PUT /reasoners/{id}/versions/{version}/weight``, ``/nodes``, ``/nodes/{id}/status``.
- Memory: ``POST /api/v1/memory/set|get|delete``, ``GET /api/v1/memory/list?scope=``, and the
  change-event WebSocket ``GET /api/v1/memory/events/ws`` that the Python SDK opens at start-up.
- Execute: ``POST /api/v1/execute/{node}.{reasoner}`` (synchronous; an agent that answers 202,
  as the Python SDK does, reports back to ``POST /api/v1/executions/{id}/status``), and
  ``GET /api/v1/executions/{id}``.

Quirks kept on purpose (each pinned by a test in ``tests/unit/test_agentfield_standin.py``):
registration resets a version's weight to 100; the versions list repeats the smallest version;
an unknown version answers 500; weight 0 and ``{}`` are accepted; health and lifecycle are
node-wide; execute ignores weights and always calls the lexicographically smallest version, and
answers 503 ``node_unavailable`` when that row is inactive or offline; heartbeats reach the
database at most once per 2 s **per node id** (not per version), and a heartbeat that carries a
status also stamps the ``GetAgent`` row; an unknown route (a disabled connector's included)
answers the control plane's 404 ``endpoint_not_found`` body; with an API key configured, every
route but health and the connector needs it (401 otherwise).

Line numbers marked "0.1.128" refer to ``Agent-Field/agentfield`` at v0.1.128-rc.3 (commit
``586859fe``, the fork ``7vignesh/agentfield`` holds it); they are the newest read with lines.

Simplifications (the real control plane does more): state is in memory; there is no HTTP health
monitor (a heartbeat's status sets the node-wide health the way the status manager derives it);
callback URLs are not probed; no DIDs, tag approval, ``/execute/async``, webhooks,
workflow records, vector memory, memory event history or SSE. The SDK's best-effort reports
(``POST /api/v1/workflow/executions/events``, ``POST /api/v1/executions/{id}/logs``) answer 404;
the SDK ignores that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import hmac
import json
import logging
import os
import re
import secrets
import signal
import string
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

__all__ = [
    "DEV_CAPABILITIES",
    "HEARTBEAT_DB_INTERVAL",
    "MEMORY_SCOPES",
    "STANDIN_NAME",
    "STANDIN_REASON",
    "AgentRow",
    "Capability",
    "ExecutionRecord",
    "Fault",
    "MemorySubscriber",
    "RunningStandin",
    "StandinState",
    "build_app",
    "capabilities_from_env",
    "main",
    "start_standin",
]

STANDIN_NAME = "agentfield-standin"
STANDIN_REASON = (
    "the Go module proxy refused github.com/Agent-Field/agentfield/control-plane "
    "(403 Forbidden: This module version is not available), so this stand-in implements the "
    "documented routes with the same JSON shapes and quirks"
)

log = logging.getLogger("devenv.agentfield_standin")

# BoltDB has buckets for exactly these scopes; any other scope is a storage error
# (storage/local.go:943, SetMemory :3976-3980).
MEMORY_SCOPES = frozenset({"workflow", "session", "actor", "reasoner", "global"})

# Heartbeat statuses the control plane accepts (handlers/nodes_heartbeat.go:190-195).
_HEARTBEAT_STATUSES = frozenset({"starting", "ready", "degraded", "offline"})

# lifecycle -> unified state (services/status_manager.go:479-491), state -> legacy health_status
# (pkg/types/types.go:356-365).
_STATE_OF_LIFECYCLE = {
    "ready": "active",
    "starting": "starting",
    "degraded": "active",
    "offline": "inactive",
}
_HEALTH_OF_STATE = {"active": "active", "inactive": "inactive", "stopping": "inactive"}

# dbUpdateThreshold (handlers/nodes_heartbeat.go:37, 0.1.128), per node id.
HEARTBEAT_DB_INTERVAL = 2.0

_WEIGHT_MIN = 0
_WEIGHT_MAX = 10000
_DEFAULT_WEIGHT = 100
_CONNECTOR_PREFIX = "/api/v1/connector"
_REQUEST_LOG_LIMIT = 10_000
# Events a slow memory-events client may fall behind by before it misses some.
_SUBSCRIBER_QUEUE = 1000


@dataclass(frozen=True)
class Capability:
    """One connector capability (config.go ConnectorCapability)."""

    enabled: bool = True
    read_only: bool = False


# What `promptloop dev agentfield up` enables, the same as the notes' minimal run
# (AGENTFIELD_CONNECTOR_CAP_REASONER_MANAGEMENT=true, ..._STATUS_READ=true). The real control plane
# defaults to no capabilities at all; pass ``capabilities={}`` to get that.
DEV_CAPABILITIES: Mapping[str, Capability] = {
    "reasoner_management": Capability(),
    "status_read": Capability(),
}

_CAPABILITY_NAMES = (
    "POLICY_MANAGEMENT",
    "TAG_MANAGEMENT",
    "DID_MANAGEMENT",
    "REASONER_MANAGEMENT",
    "STATUS_READ",
    "OBSERVABILITY_CONFIG",
    "CONFIG_MANAGEMENT",
)


def capabilities_from_env(environ: Mapping[str, str]) -> dict[str, Capability] | None:
    """Read ``AGENTFIELD_CONNECTOR_CAP_<NAME>`` as the control plane does (config.go:570-600).

    Parameters
    ----------
    environ
        The environment to read.

    Returns
    -------
    dict or None
        ``true`` enables a capability, ``readonly`` enables it read-only, anything else disables
        it; None when no such variable is set (the caller then uses its default).
    """
    found: dict[str, Capability] = {}
    for name in _CAPABILITY_NAMES:
        value = environ.get(f"AGENTFIELD_CONNECTOR_CAP_{name}")
        if value is None:
            continue
        lowered = value.strip().lower()
        found[name.lower()] = Capability(
            enabled=lowered in ("true", "readonly"), read_only=lowered == "readonly"
        )
    return found or None


def _now() -> datetime:
    return datetime.now(UTC)


def _rfc3339(moment: datetime) -> str:
    """Go's RFC 3339 rendering of a UTC time (``...Z``)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _rfc3339_seconds(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _random_suffix(length: int = 8) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass
class AgentRow:
    """One ``agent_nodes`` row; the primary key is ``(id, version)``."""

    id: str
    version: str
    group_id: str
    team_id: str
    base_url: str
    traffic_weight: int
    deployment_type: str
    reasoners: list[Any]
    skills: list[Any]
    communication_config: dict[str, Any]
    health_status: str
    lifecycle_status: str
    last_heartbeat: datetime
    registered_at: datetime
    instance_id: str
    features: dict[str, Any]
    metadata: dict[str, Any]
    proposed_tags: list[str]
    approved_tags: list[str]
    # Insertion order: breaks registered_at ties the way SQLite's rowid order would.
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        """The row as ``types.AgentNode`` marshals it (pkg/types/types.go:158-196)."""
        body: dict[str, Any] = {
            "id": self.id,
            "group_id": self.group_id,
            "team_id": self.team_id,
            "base_url": self.base_url,
            "version": self.version,
            "traffic_weight": self.traffic_weight,
            "deployment_type": self.deployment_type,
            "reasoners": self.reasoners,
            "skills": self.skills,
            "communication_config": self.communication_config,
            "health_status": self.health_status,
            "lifecycle_status": self.lifecycle_status,
            "last_heartbeat": _rfc3339(self.last_heartbeat),
            "registered_at": _rfc3339(self.registered_at),
            "features": self.features,
            "metadata": self.metadata,
        }
        if self.instance_id:
            body["instance_id"] = self.instance_id
        if self.proposed_tags:
            body["proposed_tags"] = self.proposed_tags
        if self.approved_tags:
            body["approved_tags"] = self.approved_tags
        return body


@dataclass
class Fault:
    """An injected failure: the next ``times`` requests matching ``method`` and ``path`` fail."""

    method: str
    path: re.Pattern[str]
    status: int
    times: int
    body: dict[str, Any] = field(default_factory=lambda: {"error": "injected fault (stand-in)"})


@dataclass
class ExecutionRecord:
    """One execution, as far as the stand-in tracks it (``types.Execution``, no version)."""

    execution_id: str
    run_id: str
    status: str = "running"
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    completed_at: datetime | None = None
    duration_ms: int | None = None
    result: Any = None
    error: str | None = None
    status_reason: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def finish(
        self,
        status: str,
        *,
        result: Any = None,
        error: str | None = None,
        duration_ms: int | None = None,
    ) -> None:
        """Record a terminal status and wake whoever waits for it."""
        now = datetime.now(UTC)
        self.status = status
        if result is not None:
            self.result = result
        self.error = error if error is not None else (None if status == "succeeded" else self.error)
        self.completed_at = now
        self.duration_ms = (
            duration_ms
            if duration_ms is not None
            else int((now - self.started_at).total_seconds() * 1000)
        )
        self.done.set()

    def render(self) -> dict[str, Any]:
        """``ExecutionStatusResponse`` (handlers/execute.go:89-106, renderStatus :1754-1782)."""
        body: dict[str, Any] = {
            "execution_id": self.execution_id,
            "run_id": self.run_id,
            "status": self.status,
            "started_at": _rfc3339_seconds(self.started_at),
            "webhook_registered": False,
        }
        if self.status_reason is not None:
            body["status_reason"] = self.status_reason
        if self.result is not None:
            body["result"] = self.result
            if self.status == "failed":
                body["error_details"] = self.result
        if self.error is not None:
            body["error"] = self.error
        if self.completed_at is not None:
            body["completed_at"] = _rfc3339_seconds(self.completed_at)
        if self.duration_ms is not None:
            body["duration_ms"] = self.duration_ms
        return body


@dataclass
class MemorySubscriber:
    """One memory-events WebSocket: its filters and the queue its sender drains.

    ``SubscribeToMemoryChanges(ctx, scope, scopeID)`` filters on scope and scope id when they are
    non-empty; the handler then matches each key against the comma-separated ``patterns`` with
    Go's ``filepath.Match`` (handlers/memory_events.go WebSocketHandler, ``wunitb/agentfield`` @
    ``59af08e4``), approximated here by :func:`fnmatch.fnmatchcase`.
    """

    scope: str
    scope_id: str
    patterns: tuple[str, ...]
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=_SUBSCRIBER_QUEUE), repr=False
    )

    def wants(self, event: Mapping[str, Any]) -> bool:
        """Whether the event passes this subscriber's scope, scope id and key filters."""
        if self.scope and self.scope != event["scope"]:
            return False
        if self.scope_id and self.scope_id != event["scope_id"]:
            return False
        return not self.patterns or any(
            fnmatch.fnmatchcase(event["key"], pattern) for pattern in self.patterns
        )


@dataclass
class StandinState:
    """Everything the stand-in knows; tests read and poke it directly."""

    rows: dict[tuple[str, str], AgentRow] = field(default_factory=dict)
    # (scope, scope_id, key) -> stored Memory object
    memory: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    # (method, path, status) of the requests served, for tests that count calls; bounded so a
    # long-running demo (heartbeats every 2 s) does not grow without end.
    requests: deque[tuple[str, str, int]] = field(
        default_factory=lambda: deque(maxlen=_REQUEST_LOG_LIMIT)
    )
    # Unbounded count of every request served (the log above forgets): the scale bench reads
    # connector requests per second from here, not from the operator's own bookkeeping.
    served_total: int = 0
    connector_served_total: int = 0
    faults: list[Fault] = field(default_factory=list)
    # Executions by id, oldest first; bounded like the request log.
    executions: dict[str, ExecutionRecord] = field(default_factory=dict)
    # Open memory-events WebSockets.
    subscribers: list[MemorySubscriber] = field(default_factory=list)
    # node id -> when its last heartbeat reached the "database" (the per-node throttle).
    heartbeat_writes: dict[str, datetime] = field(default_factory=dict)
    _seq: int = 0
    _event_seq: int = 0

    def heartbeat_slot(self, node_id: str, now: datetime) -> bool:
        """Whether a heartbeat at ``now`` reaches the database: once per 2 s per node id.

        ``HeartbeatCache.shouldUpdateDatabase`` (handlers/nodes_heartbeat.go:41-69, 0.1.128).
        """
        last = self.heartbeat_writes.get(node_id)
        if last is not None and (now - last).total_seconds() < HEARTBEAT_DB_INTERVAL:
            return False
        self.heartbeat_writes[node_id] = now
        return True

    def publish_memory_change(
        self,
        request: web.Request,
        *,
        scope: str,
        scope_id: str,
        key: str,
        action: str,
        data: Any,
        previous: Any,
    ) -> dict[str, Any]:
        """Build a ``types.MemoryChangeEvent`` and queue it for every matching subscriber.

        The shape and the fields come from ``SetMemoryHandler`` and ``DeleteMemoryHandler``
        (handlers/memory.go): ``type`` is ``memory_change``, ``action`` ``set`` or ``delete``,
        ``data`` and ``previous_data`` are omitted when empty, ``metadata`` carries the caller's
        ``X-Agent-Node-ID``, ``X-Actor-ID`` and ``X-Workflow-ID``. A subscriber whose queue is full
        misses the event rather than slowing the writer (the storage's channel send is
        non-blocking). Returns the event.
        """
        self._event_seq += 1
        metadata = {
            name: value
            for name, header in (
                ("agent_id", "X-Agent-Node-ID"),
                ("actor_id", "X-Actor-ID"),
                ("workflow_id", "X-Workflow-ID"),
            )
            if (value := request.headers.get(header, ""))
        }
        event: dict[str, Any] = {
            "id": str(self._event_seq),
            "type": "memory_change",
            "timestamp": _rfc3339(_now()),
            "scope": scope,
            "scope_id": scope_id,
            "key": key,
            "action": action,
            "metadata": metadata,
        }
        if data is not None:
            event["data"] = data
        if previous is not None:
            event["previous_data"] = previous
        for subscriber in self.subscribers:
            if subscriber.wants(event):
                with contextlib.suppress(asyncio.QueueFull):
                    subscriber.queue.put_nowait(event)
        return event

    def new_execution(self, *, execution_id: str, run_id: str) -> ExecutionRecord:
        """Create and remember a running execution, forgetting the oldest beyond the bound."""
        record = ExecutionRecord(execution_id=execution_id, run_id=run_id)
        self.executions[execution_id] = record
        while len(self.executions) > _REQUEST_LOG_LIMIT:
            del self.executions[next(iter(self.executions))]
        return record

    def next_seq(self) -> int:
        """A strictly increasing number for insertion order."""
        self._seq += 1
        return self._seq

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        *,
        status: int = 503,
        times: int = 1,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Make the next ``times`` matching requests answer ``status`` (fault injection).

        Parameters
        ----------
        method
            HTTP method to match (``*`` for any).
        path_pattern
            Regular expression searched in the request path.
        status
            The status to answer with.
        times
            How many requests fail before the route behaves normally again.
        body
            The JSON body of the failing answers.
        """
        fault = Fault(method.upper(), re.compile(path_pattern), status, times)
        if body is not None:
            fault.body = body
        self.faults.append(fault)

    def count(self, method: str, path_pattern: str) -> int:
        """How many served requests matched ``method`` and ``path_pattern``."""
        pattern = re.compile(path_pattern)
        return sum(
            1 for m, path, _ in self.requests if m == method.upper() and pattern.search(path)
        )

    # -- the storage queries the handlers rely on ---------------------------------------------

    def get_agent(self, node_id: str) -> AgentRow | None:
        """``GetAgent``: the unversioned row, else the lexicographically smallest version.

        ``WHERE id=? ORDER BY CASE WHEN version='' THEN 0 ELSE 1 END, version ASC LIMIT 1``
        (storage/local.go:4539-4551). SQLite's BINARY collation compares UTF-8 bytes, which
        orders like Python's code-point comparison.
        """
        candidates = [row for (rid, _), row in self.rows.items() if rid == node_id]
        if not candidates:
            return None
        return min(candidates, key=lambda row: (row.version != "", row.version))

    def list_agent_versions(self, node_id: str) -> list[AgentRow]:
        """``ListAgentVersions``: rows with a version, ``ORDER BY registered_at DESC``.

        storage/local.go:4683-4693.
        """
        rows = [row for (rid, ver), row in self.rows.items() if rid == node_id and ver != ""]
        return sorted(rows, key=lambda row: (row.registered_at, row.seq), reverse=True)

    def list_agents(self, health_status: str | None = None) -> list[AgentRow]:
        """``ListAgents``: every row (every version), ``ORDER BY registered_at DESC``.

        storage/local.go:4835-4870.
        """
        rows = [r for r in self.rows.values() if health_status in (None, r.health_status)]
        return sorted(rows, key=lambda row: (row.registered_at, row.seq), reverse=True)

    def set_node_wide(self, node_id: str, *, health: str | None, lifecycle: str | None) -> None:
        """``UPDATE agent_nodes SET ... WHERE id=?``: health and lifecycle are per node.

        storage/local.go:4936-4966 (health), 5068-5098 (lifecycle).
        """
        for (rid, _), row in self.rows.items():
            if rid != node_id:
                continue
            if health is not None:
                row.health_status = health
            if lifecycle is not None:
                row.lifecycle_status = lifecycle


# ------------------------------------------------------------------------------------------------
# helpers


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


async def _read_json(request: web.Request) -> tuple[bool, Any]:
    """Parse the body as gin's ShouldBindJSON would; (False, reason) on an empty or bad body."""
    raw = await request.read()
    if not raw.strip():
        return False, "EOF"
    try:
        return True, json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return False, str(error)


def _go_field(body: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """Look a field up as encoding/json does: exact name, else case-insensitive; last one wins."""
    found = False
    value: Any = None
    for key, candidate in body.items():
        if key == name or key.lower() == name.lower():
            found, value = True, candidate
    return found, value


def _str_field(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    return value if isinstance(value, str) else ""


def _is_json_int(value: Any) -> bool:
    # encoding/json refuses 2.0, 2e3, true and "2" for an int field; Python parses 2.0 as float.
    return isinstance(value, int) and not isinstance(value, bool)


def _agent_not_found(node_id: str) -> str:
    # storage/local.go:4572
    return f"agent node with ID '{node_id}' not found"


# scanAgentNode formats the error from the half-scanned (empty) row, so the ids are always
# blank (storage/local.go:4721; storage/coverage_storage92_additional_test.go:143).
_VERSION_NOT_FOUND = "agent node with ID '' version '' not found"


# ------------------------------------------------------------------------------------------------
# the application


@dataclass
class _Config:
    connector_token: str | None
    capabilities: Mapping[str, Capability]
    agent_call_timeout: float
    api_key: str | None = None


_STATE_KEY = web.AppKey("standin_state", StandinState)
_CONFIG_KEY = web.AppKey("standin_config", _Config)
_SESSION_KEY = web.AppKey("standin_session", aiohttp.ClientSession)
_SOCKETS_KEY: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("standin_sockets")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(
    *,
    connector_token: str | None,
    capabilities: Mapping[str, Capability] | None = None,
    agent_call_timeout: float = 90.0,
    state: StandinState | None = None,
    api_key: str | None = None,
) -> web.Application:
    """Build the stand-in's aiohttp application.

    Parameters
    ----------
    connector_token
        The connector token; without one the ``/api/v1/connector`` routes do not exist (404),
        as in the real control plane (server/routes_connector.go:17-20).
    capabilities
        Connector capabilities; default :data:`DEV_CAPABILITIES`. ``{}`` mirrors the real
        default, where every capability is disabled.
    agent_call_timeout
        Seconds the execute route waits for an agent (the control plane's default is 90).
    state
        Existing state to serve (tests share it); a fresh one by default.
    api_key
        ``api.auth.api_key``: when set, every route except health and the connector needs it
        (``X-API-Key`` or ``Authorization: Bearer``), as middleware/auth.go:20-135 (0.1.128).

    Returns
    -------
    aiohttp.web.Application
        The application, ready for an ``AppRunner``.
    """
    app = web.Application(middlewares=[_standin_middleware])
    app[_STATE_KEY] = state if state is not None else StandinState()
    app[_CONFIG_KEY] = _Config(
        connector_token=connector_token or None,
        capabilities=dict(DEV_CAPABILITIES if capabilities is None else capabilities),
        agent_call_timeout=agent_call_timeout,
        api_key=api_key or None,
    )
    app.cleanup_ctx.append(_client_session)
    app[_SOCKETS_KEY] = set()
    # Open WebSockets would otherwise hold the shutdown for aiohttp's whole grace period.
    app.on_shutdown.append(_close_sockets)

    routes = [
        web.get("/health", _health),
        web.get("/api/v1/health", _health),
        web.post("/api/v1/nodes/register", _register),
        web.post("/api/v1/nodes", _register),
        web.get("/api/v1/nodes", _list_nodes),
        web.get("/api/v1/nodes/{node_id}", _get_node),
        web.post("/api/v1/nodes/{node_id}/heartbeat", _heartbeat),
        web.post("/api/v1/nodes/{node_id}/shutdown", _shutdown),
        web.get("/api/v1/nodes/{node_id}/status", _node_status),
        web.post("/api/v1/memory/set", _memory_set),
        web.post("/api/v1/memory/get", _memory_get),
        web.post("/api/v1/memory/delete", _memory_delete),
        web.get("/api/v1/memory/list", _memory_list),
        web.get("/api/v1/memory/events/ws", _memory_events_ws),
        web.post("/api/v1/execute/{target}", _execute),
        web.get("/api/v1/executions/{execution_id}", _execution_status),
        web.post("/api/v1/executions/{execution_id}/status", _execution_status_update),
    ]
    if app[_CONFIG_KEY].connector_token:
        reasoner = "reasoner_management"
        status_read = "status_read"
        c = _CONNECTOR_PREFIX
        routes += [
            web.get(f"{c}/manifest", _manifest),
            web.get(f"{c}/reasoners", _capability(reasoner, _list_reasoners)),
            web.get(f"{c}/reasoners/{{id}}", _capability(reasoner, _get_reasoner)),
            web.get(f"{c}/reasoners/{{id}}/versions", _capability(reasoner, _list_versions)),
            web.get(
                f"{c}/reasoners/{{id}}/versions/{{version}}",
                _capability(reasoner, _get_version),
            ),
            web.put(
                f"{c}/reasoners/{{id}}/versions/{{version}}/weight",
                _capability(reasoner, _set_weight),
            ),
            web.get(f"{c}/nodes", _capability(status_read, _connector_nodes)),
            web.get(f"{c}/nodes/{{id}}/status", _capability(status_read, _connector_node_status)),
        ]
    app.add_routes(routes)
    return app


async def _client_session(app: web.Application) -> Any:
    timeout = aiohttp.ClientTimeout(total=app[_CONFIG_KEY].agent_call_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        app[_SESSION_KEY] = session
        yield


@web.middleware
async def _standin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record every request, apply injected faults, check the connector token, mark responses."""
    state = request.app[_STATE_KEY]
    config = request.app[_CONFIG_KEY]
    response: web.StreamResponse
    fault = next(
        (
            f
            for f in state.faults
            if f.times > 0 and f.method in ("*", request.method) and f.path.search(request.path)
        ),
        None,
    )
    if fault is not None:
        fault.times -= 1
        response = _json(fault.body, status=fault.status)
    elif config.api_key and not _api_key_ok(request, config.api_key):
        # middleware/auth.go:121-134 (0.1.128): 401 with this body.
        response = _json(
            {
                "error": "unauthorized",
                "message": (
                    "invalid or missing API key. Provide via X-API-Key header or "
                    "Authorization: Bearer <token>"
                ),
            },
            status=401,
        )
    elif request.match_info.http_exception is not None and (
        request.match_info.http_exception.status == 404
    ):
        # No route matched: gin's NoRoute is Smart404Handler (handlers/agentic/discover.go:49-99,
        # server/routes_ui.go:356, 0.1.128). A disabled connector is this too: its group is never
        # registered (server/routes_connector.go:17-20).
        response = _json(
            {
                "error": "endpoint_not_found",
                "message": f"{request.method} {request.path} does not exist",
                "suggestions": None,
                "help": {
                    "api_search": "GET /api/v1/agentic/discover?q=<keyword> — search all API "
                    "endpoints",
                },
            },
            status=404,
        )
    elif (
        request.path.startswith(_CONNECTOR_PREFIX + "/")
        and config.connector_token
        # gin runs group middleware only on matched routes; unknown paths stay a plain 404.
        and request.match_info.http_exception is None
        and not _token_ok(request.headers.get("X-Connector-Token", ""), config.connector_token)
    ):
        # server/middleware/connector_auth.go:25-30: 403, never 401.
        response = _json(
            {
                "error": "forbidden",
                "message": (
                    "connector token required for this operation (use X-Connector-Token header)"
                ),
            },
            status=403,
        )
    else:
        try:
            response = await handler(request)
        except web.HTTPException as error:
            # Returned, not re-raised, so that it is recorded and marked like any answer.
            response = web.Response(status=error.status, reason=error.reason, text=error.text)
            if "Allow" in error.headers:
                response.headers["Allow"] = error.headers["Allow"]
    response.headers["X-AgentField-Standin"] = "1"
    state.requests.append((request.method, request.path, response.status))
    state.served_total += 1
    if request.path.startswith(_CONNECTOR_PREFIX + "/"):
        state.connector_served_total += 1
    return response


def _api_key_ok(request: web.Request, expected: str) -> bool:
    """middleware/auth.go:30-121 (0.1.128): what needs no key, else X-API-Key or Bearer."""
    path = request.path
    if (
        path == "/health"
        or path.startswith("/api/v1/health")
        or path.startswith(_CONNECTOR_PREFIX + "/")  # :83-86, the connector has its own token
    ):
        return True
    provided = request.headers.get("X-API-Key", "")
    if not provided:
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            provided = authorization.removeprefix("Bearer ")
    return _token_ok(provided, expected)


def _token_ok(provided: str, expected: str) -> bool:
    # crypto/subtle.ConstantTimeCompare in the control plane; hmac.compare_digest here.
    return hmac.compare_digest(provided.encode(), expected.encode())


def _capability(name: str, handler: Handler) -> Handler:
    """Gate a connector route on a capability (server/middleware/connector_capability.go:14-36)."""

    async def gated(request: web.Request) -> web.StreamResponse:
        cap = request.app[_CONFIG_KEY].capabilities.get(name)
        if cap is None or not cap.enabled:
            return _json(
                {
                    "error": "capability_disabled",
                    "message": f"capability {name} is not enabled for this connector",
                },
                status=403,
            )
        if cap.read_only and request.method in ("POST", "PUT", "DELETE", "PATCH"):
            return _json(
                {
                    "error": "read_only",
                    "message": (
                        f"capability {name} is read-only; write operations are not permitted"
                    ),
                },
                status=403,
            )
        return await handler(request)

    return gated


# ------------------------------------------------------------------------------------------------
# health


async def _health(request: web.Request) -> web.StreamResponse:
    """server/routes_core.go:162-208, plus the stand-in's own name."""
    return _json(
        {
            "status": "healthy",
            "timestamp": _rfc3339_seconds(_now()),
            "version": "1.0.0",
            "checks": {
                "storage": {
                    "status": "healthy",
                    "message": "storage is responsive (stand-in: in memory)",
                    "response_time": 0,
                },
                "cache": {"status": "healthy", "message": "cache not configured (optional)"},
            },
            "standin": True,
            "name": STANDIN_NAME,
            "reason": STANDIN_REASON,
            "connector_enabled": bool(request.app[_CONFIG_KEY].connector_token),
        }
    )


# ------------------------------------------------------------------------------------------------
# registration, heartbeat, node reads


def _validate_callback_url(base_url: str) -> str | None:
    """handlers/nodes_register.go:37-64; returns the error text or None."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https"):
        return f"URL must use http or https scheme, got: {parts.scheme}"
    if parts.username is not None or "@" in parts.netloc:
        return "URL must not include user info"
    if not parts.netloc:
        return "URL must include a host"
    return None


_STRING_FIELDS = ("id", "group_id", "team_id", "base_url", "version", "lifecycle_status")


async def _register(request: web.Request) -> web.StreamResponse:
    """``RegisterNodeHandler`` (handlers/nodes_register.go:348-769): 201 and an upsert."""
    state = request.app[_STATE_KEY]
    ok, body = await _read_json(request)
    if not ok or not isinstance(body, dict):
        reason = body if not ok else "json: cannot unmarshal into Go value of type types.AgentNode"
        return _json({"error": f"Invalid JSON format: {reason}"}, status=400)
    for name in _STRING_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], str):
            return _json(
                {
                    "error": (
                        "Invalid JSON format: json: cannot unmarshal "
                        f"{type(body[name]).__name__} into Go struct field AgentNode.{name} "
                        "of type string"
                    )
                },
                status=400,
            )
    node_id: str = body.get("id") or ""
    if not node_id:
        return _json(
            {
                "error": "Validation failed: Key: 'AgentNode.ID' Error:Field validation for "
                "'ID' failed on the 'required' tag"
            },
            status=400,
        )
    version: str = body.get("version") or ""
    base_url: str = body.get("base_url") or ""
    if base_url and (problem := _validate_callback_url(base_url)):
        return _json(
            {
                "error": f"Invalid callback URL: {problem}",
                "details": "The provided base_url must be a valid, reachable HTTP/HTTPS endpoint",
            },
            status=400,
        )

    # The stand-in does not probe callback candidates: the submitted base_url is the resolved
    # one (the real handler may pick another candidate, nodes_register.go:402-435).
    submitted = body.get("callback_discovery")
    discovery: dict[str, Any] = dict(submitted) if isinstance(submitted, dict) else {}
    # Empty fields get the handler's defaults (nodes_register.go:449-476).
    if not discovery.get("mode"):
        discovery["mode"] = "auto"
    if not discovery.get("preferred"):
        discovery["preferred"] = base_url
    discovery["resolved"] = base_url
    discovery["submitted_at"] = _rfc3339_seconds(_now())

    if version:
        existing = state.rows.get((node_id, version))
        # A versioned registration deletes a stale unversioned row (nodes_register.go:485-492).
        state.rows.pop((node_id, ""), None)
    else:
        existing = state.get_agent(node_id)

    lifecycle: str = body.get("lifecycle_status") or ""
    if existing is not None:
        # Re-registration: offline/empty restarts at "starting" (nodes_register.go:563-566).
        if lifecycle in ("", "offline"):
            lifecycle = "starting"
    elif not lifecycle:
        lifecycle = "starting"

    # A new or re-registered version always starts with health "unknown" (nodes_register.go:499)
    # and, since the SDK never sends traffic_weight, with weight 0, which the upsert stores as
    # 100 (storage/local.go:4469-4520): re-registration resets the weight.
    raw_weight = body.get("traffic_weight", 0)
    weight = raw_weight if _is_json_int(raw_weight) else 0
    if weight == 0:
        weight = _DEFAULT_WEIGHT
    now = _now()
    submitted_metadata = body.get("metadata")
    metadata: dict[str, Any] = (
        dict(submitted_metadata) if isinstance(submitted_metadata, dict) else {}
    )
    custom = metadata.setdefault("custom", {})
    if isinstance(custom, dict):
        custom["callback_discovery"] = discovery
    instance_id: str = body.get("instance_id") or ""
    row = AgentRow(
        id=node_id,
        version=version,
        group_id=body.get("group_id") or node_id,
        team_id=body.get("team_id") or "",
        base_url=base_url,
        traffic_weight=weight,
        deployment_type=body.get("deployment_type") or "long_running",
        reasoners=list(body.get("reasoners") or []),
        skills=list(body.get("skills") or []),
        communication_config=dict(body.get("communication_config") or {}),
        health_status="unknown",
        lifecycle_status=lifecycle,
        last_heartbeat=now,
        # The upsert's SET list has no registered_at: the first registration time stays.
        registered_at=now,
        # instance_id = CASE WHEN excluded.instance_id = '' THEN old ELSE new (local.go:4486).
        instance_id=instance_id,
        features=dict(body.get("features") or {}),
        metadata=metadata,
        proposed_tags=list(body.get("proposed_tags") or []),
        approved_tags=[],
        seq=state.next_seq(),
    )
    previous = state.rows.get((node_id, version))
    if previous is not None:
        row.registered_at = previous.registered_at
        row.seq = previous.seq
        row.approved_tags = previous.approved_tags
        if not instance_id:
            row.instance_id = previous.instance_id
    state.rows[(node_id, version)] = row
    log.info(
        "stand-in: registered node %s version %r at %s (weight reset to %d)",
        node_id,
        version,
        base_url,
        weight,
    )

    response: dict[str, Any] = {
        "success": True,
        "message": "Node registered successfully",
        "node_id": node_id,
        "callback_discovery": discovery,
    }
    if base_url:
        response["resolved_base_url"] = base_url
    return _json(response, status=201)


async def _heartbeat(request: web.Request) -> web.StreamResponse:
    """``HeartbeatHandler`` (handlers/nodes_heartbeat.go:106-298, 0.1.128).

    Two writes, both less per-version than they look:

    - ``last_heartbeat`` reaches the database at most once per :data:`HEARTBEAT_DB_INTERVAL`
      **per node id** (``shouldUpdateDatabase`` keys its cache by node id, :41-69, :141): the
      version whose beat wins the slot is stamped, every other version's beat in that window is
      acknowledged and dropped. Only a beat that wins the slot is checked for an unknown
      version (404, :143-156).
    - A beat that carries a status goes through ``StatusManager.UpdateFromHeartbeat`` (:185-229),
      whose ``UpdateAgentStatus`` resolves ``GetAgent``'s row first (status_manager.go:336) and
      persists ``last_heartbeat`` on *that* row (:439-443, :660-661): the smallest version is
      stamped whoever sent the beat. Lifecycle and health move for the whole node.
    """
    state = request.app[_STATE_KEY]
    node_id = request.match_info["node_id"]
    version = ""
    status = ""
    if request.content_length:
        ok, body = await _read_json(request)
        # A body that does not parse is a "simple" heartbeat (nodes_heartbeat.go:127-133).
        if ok and isinstance(body, dict):
            version = _str_field(body, "version")
            status = _str_field(body, "status")
    now = _now()
    if state.heartbeat_slot(node_id, now):
        row = state.rows.get((node_id, version)) if version else state.get_agent(node_id)
        if row is None:
            return _json({"error": "node not found"}, status=404)
        row.last_heartbeat = now
    if status in _HEARTBEAT_STATUSES:
        current = state.get_agent(node_id)
        if current is not None:
            current.last_heartbeat = now
        # A "starting" heartbeat never demotes a ready/degraded node (status_manager.go:498-503).
        regresses = (
            status == "starting"
            and current is not None
            and current.lifecycle_status in ("ready", "degraded")
        )
        if not regresses and current is not None:
            node_state = _STATE_OF_LIFECYCLE[status]
            health = _HEALTH_OF_STATE.get(node_state, "unknown")
            state.set_node_wide(node_id, health=health, lifecycle=status)
    return _json(
        {"success": True, "message": "heartbeat received", "timestamp": _rfc3339_seconds(now)}
    )


async def _shutdown(request: web.Request) -> web.StreamResponse:
    """``NodeShutdownHandler`` (handlers/nodes_rest.go:243-297): the whole node goes offline."""
    state = request.app[_STATE_KEY]
    node_id = request.match_info["node_id"]
    version = ""
    ok, body = await _read_json(request)
    if ok and isinstance(body, dict) and isinstance(body.get("version"), str):
        version = body["version"]
    row = state.rows.get((node_id, version)) if version else state.get_agent(node_id)
    if row is None:
        return _json({"error": "node not found"}, status=404)
    now = _now()
    row.last_heartbeat = now
    # state "stopping" -> health inactive; lifecycle offline; both node-wide.
    state.set_node_wide(node_id, health="inactive", lifecycle="offline")
    return _json(
        {
            "lease_seconds": 0,
            "next_lease_renewal": _rfc3339_seconds(now),
            "message": "shutdown acknowledged",
        },
        status=202,
    )


async def _list_nodes(request: web.Request) -> web.StreamResponse:
    """``ListNodesHandler`` (handlers/nodes_list.go): only active nodes unless show_all=true."""
    state = request.app[_STATE_KEY]
    health: str | None = request.query.get("health_status") or "active"
    if request.query.get("show_all") == "true":
        health = None
    rows = state.list_agents(health)
    filters = {"health_status": health} if health else {}
    return _json({"nodes": [r.to_json() for r in rows], "count": len(rows), "filters": filters})


async def _get_node(request: web.Request) -> web.StreamResponse:
    """``GetNodeHandler`` (handlers/nodes_detail.go): a clean 404, unlike the connector's 500."""
    state = request.app[_STATE_KEY]
    node_id = request.match_info["node_id"]
    version = request.query.get("version", "")
    row = state.rows.get((node_id, version)) if version else state.get_agent(node_id)
    if row is None:
        return _json({"error": "node not found"}, status=404)
    return _json(row.to_json())


def _unified_status(row: AgentRow) -> dict[str, Any]:
    """An approximation of ``types.AgentStatus`` (pkg/types/types.go:277-295) from the row."""
    node_state = _STATE_OF_LIFECYCLE.get(row.lifecycle_status, "inactive")
    if row.lifecycle_status == "pending_approval":
        node_state = "inactive"
    return {
        "state": node_state,
        "health_score": {"active": 100, "starting": 50}.get(node_state, 0),
        "last_seen": _rfc3339(row.last_heartbeat),
        "lifecycle_status": row.lifecycle_status,
        "health_status": row.health_status,
        "last_updated": _rfc3339(_now()),
        "source": "heartbeat",
    }


async def _node_status(request: web.Request) -> web.StreamResponse:
    """``GetNodeStatusHandler`` (handlers/nodes_status.go:101-137): node-wide."""
    state = request.app[_STATE_KEY]
    node_id = request.match_info["node_id"]
    row = state.get_agent(node_id)
    if row is None:
        return _json(
            {
                "error": "Node not found or status unavailable",
                "code": "NODE_NOT_FOUND",
                "details": _agent_not_found(node_id),
            },
            status=404,
        )
    return _json({"success": True, "node_id": node_id, "status": _unified_status(row)})


# ------------------------------------------------------------------------------------------------
# connector (handlers/connector/handlers.go)


async def _manifest(request: web.Request) -> web.StreamResponse:
    """``GetManifest`` (:138-157): always allowed, whatever the capabilities."""
    caps = request.app[_CONFIG_KEY].capabilities
    return _json(
        {
            "connector_enabled": True,
            "capabilities": {
                name: {"enabled": cap.enabled, "read_only": cap.read_only}
                for name, cap in caps.items()
            },
            "features": {"did_enabled": False, "authorization_enabled": False},
        }
    )


async def _list_reasoners(request: web.Request) -> web.StreamResponse:
    """``ListReasoners`` (:160-195): one item per row, so one per version."""
    state = request.app[_STATE_KEY]
    items = [
        {
            "node_id": row.id,
            "group_id": row.group_id,
            "team_id": row.team_id,
            "version": row.version,
            "health_status": row.health_status,
            "reasoners": row.reasoners,
            "skills": row.skills,
        }
        for row in state.list_agents()
    ]
    # A nil Go slice marshals as null: no agents gives "reasoners": null.
    return _json({"reasoners": items or None, "total": len(items)})


async def _get_reasoner(request: web.Request) -> web.StreamResponse:
    """``GetReasoner`` (:198-223): the GetAgent row; an unknown node is a storage error (500)."""
    state = request.app[_STATE_KEY]
    node_id = request.match_info["id"]
    row = state.get_agent(node_id)
    if row is None:
        return _json({"error": _agent_not_found(node_id)}, status=500)
    return _json(
        {
            "id": row.id,
            "group_id": row.group_id,
            "team_id": row.team_id,
            "version": row.version,
            "health_status": row.health_status,
            "lifecycle_status": row.lifecycle_status,
            "reasoners": row.reasoners,
            "skills": row.skills,
            "base_url": row.base_url,
        }
    )


def _version_info(row: AgentRow) -> dict[str, Any]:
    return {
        "version": row.version,
        "traffic_weight": row.traffic_weight,
        "health_status": row.health_status,
        "lifecycle_status": row.lifecycle_status,
        "base_url": row.base_url,
        "last_heartbeat": _rfc3339(row.last_heartbeat),
    }


async def _list_versions(request: web.Request) -> web.StreamResponse:
    """``ListReasonerVersions`` (:363-418).

    The first entry is the GetAgent row, then every versioned row by registered_at DESC; with
    no unversioned row the smallest version therefore appears twice, and ``total`` counts both.
    """
    state = request.app[_STATE_KEY]
    node_id = request.match_info["id"]
    result: list[dict[str, Any]] = []
    default = state.get_agent(node_id)
    if default is not None:
        result.append(_version_info(default))
    result.extend(_version_info(row) for row in state.list_agent_versions(node_id))
    if not result:
        return _json({"error": "agent not found"}, status=404)
    return _json({"id": node_id, "versions": result, "total": len(result)})


async def _get_version(request: web.Request) -> web.StreamResponse:
    """``GetReasonerVersion`` (:420-446): an unknown version is 500, not 404."""
    state = request.app[_STATE_KEY]
    row = state.rows.get((request.match_info["id"], request.match_info["version"]))
    if row is None:
        return _json({"error": _VERSION_NOT_FOUND}, status=500)
    return _json(
        {
            "id": row.id,
            "version": row.version,
            "traffic_weight": row.traffic_weight,
            "health_status": row.health_status,
            "lifecycle_status": row.lifecycle_status,
            "reasoners": row.reasoners,
            "skills": row.skills,
            "base_url": row.base_url,
        }
    )


async def _set_weight(request: web.Request) -> web.StreamResponse:
    """``SetReasonerTrafficWeight`` (:448-491), validation as ``handlers.go:451-463``.

    The body binds into ``struct{ Weight int }``: an empty or malformed body, a float (even
    ``2.0``), a string or a boolean fail to bind (400 "weight is required"); ``{}`` and
    ``{"weight": null}`` bind to 0 and are accepted; JSON ``null`` as the whole body too.
    """
    state = request.app[_STATE_KEY]
    node_id = request.match_info["id"]
    version = request.match_info["version"]
    ok, body = await _read_json(request)
    weight: Any = 0
    if ok and isinstance(body, dict):
        present, value = _go_field(body, "weight")
        if present and value is not None:
            weight = value
    elif not (ok and body is None):
        ok = False
    if not ok or not _is_json_int(weight) or not -(2**63) <= weight < 2**63:
        return _json({"error": "weight is required"}, status=400)
    if weight < _WEIGHT_MIN or weight > _WEIGHT_MAX:
        return _json({"error": "weight must be between 0 and 10000"}, status=400)
    row = state.rows.get((node_id, version))
    if row is None:
        return _json({"error": _VERSION_NOT_FOUND}, status=500)
    previous = row.traffic_weight
    row.traffic_weight = weight
    log.info("stand-in: weight of %s %s: %d -> %d", node_id, version, previous, weight)
    return _json(
        {
            "success": True,
            "id": node_id,
            "version": version,
            "previous_weight": previous,
            "new_weight": weight,
        }
    )


async def _connector_nodes(request: web.Request) -> web.StreamResponse:
    """``ListNodes`` (:102-110): every row, unfiltered."""
    rows = request.app[_STATE_KEY].list_agents()
    return _json({"agents": [r.to_json() for r in rows], "total": len(rows)})


async def _connector_node_status(request: web.Request) -> web.StreamResponse:
    """``GetNodeStatus`` (:113-134): the GetAgent row; an unknown node is 500."""
    node_id = request.match_info["id"]
    row = request.app[_STATE_KEY].get_agent(node_id)
    if row is None:
        return _json({"error": _agent_not_found(node_id)}, status=500)
    return _json(
        {
            "id": row.id,
            "group_id": row.group_id,
            "health_status": row.health_status,
            "lifecycle_status": row.lifecycle_status,
            "version": row.version,
        }
    )


# ------------------------------------------------------------------------------------------------
# memory (handlers/memory.go, storage/local.go:3966-4110)


def _scope_id(request: web.Request, scope: str) -> str:
    """``getScopeID`` (handlers/memory.go:421-434): a missing header silently gives ""."""
    header = {"workflow": "X-Workflow-ID", "session": "X-Session-ID", "actor": "X-Actor-ID"}
    if scope == "global":
        return "global"
    name = header.get(scope)
    return request.headers.get(name, "") if name else ""


def _resolve_scope(request: web.Request, explicit: str | None) -> tuple[str, str]:
    """``resolveScope`` (handlers/memory.go:402-418): explicit, else workflow, session, actor,
    global, the first header present."""
    if explicit is not None:
        return explicit, _scope_id(request, explicit)
    for scope, header in (
        ("workflow", "X-Workflow-ID"),
        ("session", "X-Session-ID"),
        ("actor", "X-Actor-ID"),
    ):
        if value := request.headers.get(header, ""):
            return scope, value
    return "global", "global"


def _memory_error(error: str, status: int, details: Any) -> web.Response:
    # handlers/errors.go ErrorResponse: {"error", "code", "details"}.
    return _json({"error": error, "code": status, "details": details}, status=status)


async def _memory_request(
    request: web.Request, *, needs_data: bool
) -> dict[str, Any] | web.Response:
    ok, body = await _read_json(request)
    if not ok:
        return _memory_error("invalid_request", 400, body)
    if not isinstance(body, dict):
        return _memory_error("invalid_request", 400, "json: cannot unmarshal into request")
    key = body.get("key")
    if not isinstance(key, str) or not key:
        return _memory_error(
            "invalid_request",
            400,
            "Key: 'SetMemoryRequest.Key' Error:Field validation for 'Key' failed on the "
            "'required' tag",
        )
    if needs_data and body.get("data") is None:
        # binding:"required" on interface{}: only a missing or null value fails.
        return _memory_error(
            "invalid_request",
            400,
            "Key: 'SetMemoryRequest.Data' Error:Field validation for 'Data' failed on the "
            "'required' tag",
        )
    scope = body.get("scope")
    if scope is not None and not isinstance(scope, str):
        return _memory_error("invalid_request", 400, "json: cannot unmarshal scope")
    return body


async def _memory_set(request: web.Request) -> web.StreamResponse:
    """``SetMemoryHandler``: 200 with the stored Memory object; created_at is not preserved."""
    state = request.app[_STATE_KEY]
    body = await _memory_request(request, needs_data=True)
    if isinstance(body, web.Response):
        return body
    scope, scope_id = _resolve_scope(request, body.get("scope"))
    if scope not in MEMORY_SCOPES:
        return _memory_error("storage_error", 500, f"BoltDB bucket '{scope}' not found")
    now = _rfc3339(_now())
    memory = {
        "scope": scope,
        "scope_id": scope_id,
        "key": body["key"],
        "data": body["data"],
        "access_level": "",
        "created_at": now,
        "updated_at": now,
        "metadata": {},
    }
    previous = state.memory.get((scope, scope_id, body["key"]))
    state.memory[(scope, scope_id, body["key"])] = memory
    state.publish_memory_change(
        request,
        scope=scope,
        scope_id=scope_id,
        key=body["key"],
        action="set",
        data=body["data"],
        previous=previous["data"] if previous is not None else None,
    )
    return _json(memory)


async def _memory_get(request: web.Request) -> web.StreamResponse:
    """``GetMemoryHandler``: explicit scope, else search workflow → session → actor → global."""
    state = request.app[_STATE_KEY]
    body = await _memory_request(request, needs_data=False)
    if isinstance(body, web.Response):
        return body
    key: str = body["key"]
    if body.get("scope") is not None:
        scope, scope_id = _resolve_scope(request, body["scope"])
        if scope not in MEMORY_SCOPES:
            return _memory_error("not_found", 404, f"BoltDB bucket '{scope}' not found")
        memory = state.memory.get((scope, scope_id, key))
        if memory is None:
            return _memory_error(
                "not_found",
                404,
                f"memory with key '{key}' not found in scope '{scope}' for ID '{scope_id}'",
            )
        return _json(memory)
    for scope in ("workflow", "session", "actor", "global"):
        scope_id = _scope_id(request, scope)
        if scope_id or scope == "global":
            memory = state.memory.get((scope, scope_id, key))
            if memory is not None:
                return _json(memory)
    return _memory_error("not_found", 404, "Memory key not found in any scope")


async def _memory_delete(request: web.Request) -> web.StreamResponse:
    """``DeleteMemoryHandler``: 204 even for a key that never existed (BoltDB Delete is silent).

    Only an unknown scope (no bucket) answers 404 (storage/local.go:4049-4076).
    """
    state = request.app[_STATE_KEY]
    body = await _memory_request(request, needs_data=False)
    if isinstance(body, web.Response):
        return body
    scope, scope_id = _resolve_scope(request, body.get("scope"))
    if scope not in MEMORY_SCOPES:
        return _memory_error("not_found", 404, f"BoltDB bucket '{scope}' not found")
    previous = state.memory.pop((scope, scope_id, body["key"]), None)
    state.publish_memory_change(
        request,
        scope=scope,
        scope_id=scope_id,
        key=body["key"],
        action="delete",
        data=None,
        previous=previous["data"] if previous is not None else None,
    )
    return web.Response(status=204)


async def _memory_list(request: web.Request) -> web.StreamResponse:
    """``ListMemoryHandler``: scope required; BoltDB prefix scan on ``"<scope_id>:"``.

    The scan is a byte prefix over ``"<scope_id>:<key>"`` (storage/local.go:4079-4105), in key
    order, so a scope id containing ``:`` also lists its "children".
    """
    state = request.app[_STATE_KEY]
    scope_param = request.query.get("scope", "")
    if not scope_param:
        return _memory_error("missing_scope", 400, "Scope parameter is required for listing memory")
    scope, scope_id = _resolve_scope(request, scope_param)
    if scope not in MEMORY_SCOPES:
        return _memory_error("storage_error", 500, f"BoltDB bucket '{scope}' not found")
    prefix = f"{scope_id}:".encode()
    found = sorted(
        (f"{sid}:{key}".encode(), memory)
        for (s, sid, key), memory in state.memory.items()
        if s == scope and f"{sid}:{key}".encode().startswith(prefix)
    )
    return _json([memory for _, memory in found])


async def _memory_events_ws(request: web.Request) -> web.StreamResponse:
    """``MemoryEventsHandler.WebSocketHandler`` (handlers/memory_events.go, ``wunitb/agentfield``
    @ ``59af08e4``; routes_memory.go registers it at ``GET /api/v1/memory/events/ws``).

    Upgrades, subscribes with the ``scope`` and ``scope_id`` query parameters, and forwards each
    change whose key matches one of the comma-separated ``patterns`` (all when none) as a JSON
    text message; what the client sends is read and ignored (the Go handler's reader goroutine
    only watches for the close). The Python SDK opens this socket when an agent starts
    (agent_server.py, memory_events.py ``connect``) and logs an error on every retry when the
    route is missing.
    """
    state = request.app[_STATE_KEY]
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    patterns = tuple(
        part.strip() for part in request.query.get("patterns", "").split(",") if part.strip()
    )
    subscriber = MemorySubscriber(
        scope=request.query.get("scope", ""),
        scope_id=request.query.get("scope_id", ""),
        patterns=patterns,
    )
    state.subscribers.append(subscriber)
    sockets = request.app[_SOCKETS_KEY]
    sockets.add(socket)

    async def forward() -> None:
        while True:
            event = await subscriber.queue.get()
            await socket.send_json(event)

    sender = asyncio.create_task(forward())
    try:
        async for _message in socket:
            pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
            await sender
        state.subscribers.remove(subscriber)
        sockets.discard(socket)
    return socket


async def _close_sockets(app: web.Application) -> None:
    sockets = app[_SOCKETS_KEY]
    for socket in list(sockets):
        await socket.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")


# ------------------------------------------------------------------------------------------------
# execute (handlers/execute.go)


def _ids(items: list[Any]) -> set[Any]:
    return {item.get("id") for item in items if isinstance(item, dict)}


def _execution_error(message: str, category: str, status: int) -> web.Response:
    return _json({"error": message, "error_category": category}, status=status)


async def _execute(request: web.Request) -> web.StreamResponse:
    """Synchronous execute (handlers/execute.go:216-356, prepareExecution :1010-1058).

    The target agent is ``GetAgent``'s row: the unversioned row or else the lexicographically
    smallest version. The weighted ``selectVersionedAgent`` branch runs only when that lookup
    fails, which it never does while the node has a row, so weights are ignored and no
    ``X-Routed-Version`` header is sent.
    """
    state = request.app[_STATE_KEY]
    target = request.match_info["target"]
    parts = target.split(".")
    if len(parts) != 2:
        # parseTarget (:1512-1524); untyped errors are 400 internal_error (:1958-2016).
        return _execution_error(
            "invalid target: target must be in format 'node_id.reasoner_name'",
            "internal_error",
            400,
        )
    node_id, name = parts
    ok, body = await _read_json(request)
    if not ok or not (body is None or isinstance(body, dict)):
        return _execution_error(f"invalid request body: {body}", "internal_error", 400)
    payload: dict[str, Any] = (body or {}).get("input") or {}
    if not isinstance(payload, dict):
        return _execution_error(
            "invalid request body: json: cannot unmarshal into Go struct field "
            "ExecuteRequest.input of type map[string]interface {}",
            "internal_error",
            400,
        )
    agent = state.get_agent(node_id)
    if agent is None:
        return _execution_error(f"agent '{node_id}' not found", "internal_error", 400)
    if agent.lifecycle_status == "pending_approval":
        return _json(
            {
                "error": "agent_pending_approval",
                "error_category": "agent_error",
                "message": f"agent node '{node_id}' is awaiting tag approval and cannot execute",
            },
            status=503,
        )
    if agent.health_status == "inactive" or agent.lifecycle_status == "offline":
        # ensureAgentDispatchable (handlers/execute_agent_restart.go, Agent-Field/agentfield
        # @ 04c90993), called from execute_prepare.go before any execution record exists; the
        # body as writeExecutionError writes it (execute_test.go
        # TestWriteExecutionError_NodeUnavailableIncludesRetryAfter). The row is GetAgent's:
        # a dead smallest version refuses the whole node, whatever else is running.
        message = (
            f"agent node '{node_id}' is offline; start the node and retry"
            if agent.health_status != "inactive"
            else f"agent node '{node_id}' is not reachable (health: inactive); start the node "
            "and retry"
        )
        return _json(
            {
                "error": "node_unavailable",
                "message": message,
                "error_category": "node_unavailable",
                "retry_after": 1,
            },
            status=503,
            headers={"Retry-After": "1"},
        )
    if name in _ids(agent.reasoners):
        kind = "reasoners"
    elif name in _ids(agent.skills):
        kind = "skills"
    else:
        # determineTargetType (:1526-1538)
        return _execution_error(
            f"target '{name}' not found on agent '{node_id}'", "internal_error", 400
        )

    run_id = request.headers.get("X-Run-ID", "").strip()
    stamp = time.strftime("%Y%m%d_%H%M%S")
    record = state.new_execution(
        execution_id=f"exec_{stamp}_{_random_suffix()}",
        run_id=run_id or f"run_{stamp}_{_random_suffix()}",
    )
    url = f"{agent.base_url.rstrip('/')}/{kind}/{name}"
    headers = {
        "X-Run-ID": record.run_id,
        "X-Execution-ID": record.execution_id,
        "X-Workflow-ID": record.run_id,
    }
    for optional in ("X-Parent-Execution-ID", "X-Session-ID", "X-Actor-ID"):
        if value := request.headers.get(optional, "").strip():
            headers[optional] = value
    config = request.app[_CONFIG_KEY]
    started = time.monotonic()
    try:
        async with request.app[_SESSION_KEY].post(url, json=payload, headers=headers) as answer:
            status = answer.status
            raw = await answer.read()
    except TimeoutError as error:
        record.finish("failed", error=f"agent call failed: {error!r}")
        return _execution_error(f"agent call failed: {error!r}", "agent_timeout", 504)
    except aiohttp.ClientConnectorError as error:
        record.finish("failed", error=f"agent call failed: {error}")
        return _execution_error(f"agent call failed: {error}", "agent_unreachable", 504)
    except aiohttp.ClientError as error:
        record.finish("failed", error=f"agent call failed: {error}")
        return _execution_error(f"agent call failed: {error}", "internal_error", 400)
    reply_headers = {"X-Execution-ID": record.execution_id, "X-Run-ID": record.run_id}

    if status == 202:
        # The Python SDK acknowledges with 202 whenever X-Execution-ID is set and reports the
        # outcome later to POST /api/v1/executions/{id}/status (SDK agent.py:2296-2319, 3071);
        # the control plane waits for that callback (handleSync :238-315,
        # waitForExecutionCompletion :858-933).
        try:
            await asyncio.wait_for(record.done.wait(), timeout=config.agent_call_timeout)
        except TimeoutError:
            return _execution_error(
                f"execution timeout after {_go_duration(config.agent_call_timeout)}",
                "internal_error",
                400,
            )
        finished = {
            "execution_id": record.execution_id,
            "run_id": record.run_id,
            "status": record.status,
            "duration_ms": record.duration_ms or 0,
            "finished_at": _rfc3339_seconds(record.completed_at or _now()),
        }
        if record.status == "failed":
            # Only "failed" is an error here; cancelled and timeout fall through to 200.
            finished["error_message"] = record.error or "execution failed"
            if record.result is not None:
                finished["error_details"] = record.result
            return _json(finished, status=502, headers=reply_headers)
        if record.result is not None:
            finished["result"] = record.result
        return _json(finished, headers=reply_headers)

    elapsed_ms = int((time.monotonic() - started) * 1000)
    if status >= 400:
        # callAgent :1293-1299 and writeExecutionError :1966-1989.
        text = raw.decode(errors="replace")
        truncated = text if len(raw) <= 1024 else raw[:1024].decode(errors="replace") + "..."
        parsed: Any = None
        parsed_ok = False
        if raw:
            with contextlib.suppress(ValueError):
                parsed, parsed_ok = json.loads(raw), True
        if status >= 500 or status == 408:
            category = "agent_error" if status >= 500 else "agent_timeout"
        elif raw and not parsed_ok:
            category = "bad_response"
        else:
            category = "agent_error"
        response: dict[str, Any] = {
            "error": f"agent error ({status}): {truncated}",
            "error_category": category,
            "status": "failed",
        }
        if parsed_ok:
            response["error_details"] = parsed
        record.finish("failed", error=response["error"], duration_ms=elapsed_ms)
        return _json(response, status=status if status < 500 else 502)

    result: Any = None
    if raw:
        try:
            result = json.loads(raw)
        except ValueError:
            result = raw.decode(errors="replace")
    record.finish("succeeded", result=result, duration_ms=elapsed_ms)
    answer_body: dict[str, Any] = {
        "execution_id": record.execution_id,
        "run_id": record.run_id,
        "status": "succeeded",
        "duration_ms": elapsed_ms,
        "finished_at": _rfc3339_seconds(_now()),
    }
    if result is not None:
        answer_body["result"] = result
    return _json(answer_body, headers=reply_headers)


def _go_duration(seconds: float) -> str:
    """Go's ``time.Duration`` String() for the usual cases (``90s`` → ``1m30s``)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{rest:g}s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


# types.NormalizeExecutionStatus (pkg/types/status.go:36-74).
_EXECUTION_STATUSES = frozenset(
    {
        "pending",
        "queued",
        "waiting",
        "running",
        "paused",
        "succeeded",
        "failed",
        "cancelled",
        "timeout",
    }
)
_EXECUTION_STATUS_ALIASES = {
    "success": "succeeded",
    "successful": "succeeded",
    "completed": "succeeded",
    "complete": "succeeded",
    "done": "succeeded",
    "ok": "succeeded",
    "error": "failed",
    "failure": "failed",
    "errored": "failed",
    "canceled": "cancelled",
    "cancel": "cancelled",
    "pause": "paused",
    "hold": "paused",
    "on_hold": "paused",
    "suspended": "paused",
    "timed_out": "timeout",
    "wait": "queued",
    "awaiting_approval": "waiting",
    "awaiting_human": "waiting",
    "approval_pending": "waiting",
    "in_progress": "running",
    "processing": "running",
}
_TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timeout"})


def _normalize_status(status: str) -> str:
    lowered = status.strip().lower()
    if lowered in _EXECUTION_STATUSES:
        return lowered
    return _EXECUTION_STATUS_ALIASES.get(lowered, "unknown")


async def _execution_status_update(request: web.Request) -> web.StreamResponse:
    """``handleStatusUpdate`` (handlers/execute.go:474-637): the agent's outcome callback.

    ``result`` binds into a JSON object (``map[string]interface{}``): any other JSON type fails
    the whole body (400), after which a synchronous caller waits until its timeout. A terminal
    status cannot regress to a non-terminal one (500).
    """
    state = request.app[_STATE_KEY]
    execution_id = request.match_info["execution_id"]
    ok, body = await _read_json(request)
    if not ok or not isinstance(body, dict):
        return _json({"error": f"invalid request body: {body}"}, status=400)
    raw_status = body.get("status")
    result = body.get("result")
    if (
        not isinstance(raw_status, str)
        or not raw_status
        or not (result is None or isinstance(result, dict))
    ):
        return _json(
            {"error": "invalid request body: json: cannot unmarshal into Go struct field"},
            status=400,
        )
    status = _normalize_status(raw_status)
    if status == "unknown":
        return _json({"error": f"unsupported status '{raw_status}'"}, status=400)
    record = state.executions.get(execution_id)
    if record is None:
        return _json(
            {"error": f"failed to update execution: execution {execution_id} not found"},
            status=500,
        )
    if record.status in _TERMINAL and status not in _TERMINAL:
        return _json(
            {
                "error": f"failed to update execution: execution {execution_id} is already in "
                f"terminal state '{record.status}'; cannot transition to '{status}'"
            },
            status=500,
        )
    duration = body.get("duration_ms")
    error = body.get("error")
    reason = body.get("status_reason")
    if status in _TERMINAL:
        record.finish(
            status,
            result=result or None,
            error=error if isinstance(error, str) and error else None,
            duration_ms=duration if _is_json_int(duration) else None,
        )
    else:
        record.status = status
    if isinstance(reason, str):
        record.status_reason = reason
    return _json(record.render())


async def _execution_status(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/executions/:id`` (handleStatus, execute.go:421-440)."""
    record = request.app[_STATE_KEY].executions.get(request.match_info["execution_id"])
    if record is None:
        return _json({"error": "execution not found"}, status=404)
    return _json(record.render())


# ------------------------------------------------------------------------------------------------
# running it


@dataclass
class RunningStandin:
    """A stand-in served from this process (tests), with its state at hand."""

    url: str
    token: str | None = field(repr=False)
    state: StandinState
    runner: web.AppRunner = field(repr=False)

    async def close(self) -> None:
        """Stop serving and release the port."""
        await self.runner.cleanup()


async def start_standin(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    connector_token: str | None = None,
    capabilities: Mapping[str, Capability] | None = None,
    agent_call_timeout: float = 90.0,
    state: StandinState | None = None,
    api_key: str | None = None,
) -> RunningStandin:
    """Serve the stand-in from the running event loop.

    Parameters
    ----------
    host
        Interface to bind; loopback by default.
    port
        Port to bind; 0 picks a free one.
    connector_token
        Enables the connector routes when set.
    capabilities
        Connector capabilities (default :data:`DEV_CAPABILITIES`).
    agent_call_timeout
        Seconds the execute route waits for an agent.
    state
        State to serve (a fresh one by default).
    api_key
        Require this API key on every route but health and the connector.

    Returns
    -------
    RunningStandin
        Its URL, token, state and runner; ``await running.close()`` stops it.
    """
    app = build_app(
        connector_token=connector_token,
        capabilities=capabilities,
        agent_call_timeout=agent_call_timeout,
        state=state,
        api_key=api_key,
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    return RunningStandin(
        url=f"http://{url_host}:{bound_port}",
        token=connector_token,
        state=app[_STATE_KEY],
        runner=runner,
    )


async def _serve(args: argparse.Namespace, token: str | None) -> None:
    capabilities = capabilities_from_env(os.environ)
    running = await start_standin(
        host=args.host,
        port=args.port,
        connector_token=token,
        capabilities=capabilities,
        agent_call_timeout=args.agent_call_timeout,
    )
    log.warning(
        "AgentField STAND-IN (%s) listening on %s, connector %s; this is not the real control "
        "plane: %s",
        STANDIN_NAME,
        running.url,
        "enabled" if token else "disabled (no token)",
        STANDIN_REASON,
    )
    if args.ready_file:
        # Written atomically once the port is bound, so a parent waiting on it never reads half.
        ready = Path(args.ready_file)
        partial = ready.with_suffix(ready.suffix + ".tmp")
        partial.write_text(json.dumps({"url": running.url, "pid": os.getpid()}))
        partial.replace(ready)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await running.close()
        log.warning("AgentField stand-in on %s stopped", running.url)


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in in the foreground until SIGTERM or SIGINT.

    Parameters
    ----------
    argv
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code.
    """
    parser = argparse.ArgumentParser(
        prog="python -m devenv.agentfield_standin",
        description=f"AgentField control-plane STAND-IN ({STANDIN_REASON}).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default loopback only)")
    parser.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one")
    parser.add_argument(
        "--connector-token",
        default=None,
        help=(
            "enable /api/v1/connector with this token (default: $AGENTFIELD_CONNECTOR_TOKEN; "
            "prefer the variable, a token on the command line is visible in ps)"
        ),
    )
    parser.add_argument(
        "--agent-call-timeout", type=float, default=90.0, help="seconds execute waits for an agent"
    )
    parser.add_argument(
        "--ready-file", default=None, help="write {url, pid} as JSON here once listening"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agentfield-standin %(message)s")
    token = args.connector_token or os.environ.get("AGENTFIELD_CONNECTOR_TOKEN") or None
    asyncio.run(_serve(args, token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
