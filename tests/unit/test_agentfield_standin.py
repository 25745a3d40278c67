"""The AgentField stand-in: every quirk it keeps, pinned against the control-plane source line it
mirrors (``dizcare-ce/agentfield`` @ ``f39f9575``, control plane 0.1.80; see
``shared/notes/agentfield-api.md``), plus its process management (``promptloop dev agentfield``).

The stand-in is served in-process on a free loopback port; the process-management tests start it
as a real background process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web

from devenv import agentfield
from devenv.agentfield import (
    ENV_FILE,
    PID_FILE,
    read_handle,
    start_agentfield,
    stop_agentfield,
)
from devenv.agentfield_standin import (
    Capability,
    RunningStandin,
    start_standin,
)

__all__: list[str] = []

TOKEN = "s3cret-connector-token"
# One TLS context for every client here: building one per client reads the CA bundle each time.
TLS = ssl.create_default_context()
AUTH = {"X-Connector-Token": TOKEN}
C = "/api/v1/connector"

# What the Python SDK 0.1.144 sends (agentfield/client.py:1440-1488, register_agent_with_status).
SDK_REGISTRATION: dict[str, Any] = {
    "id": "classifier",
    "team_id": "default",
    "base_url": "http://127.0.0.1:9",
    "version": "2.0.0",
    "reasoners": [{"id": "classify", "input_schema": {}, "output_schema": {}}],
    "skills": [],
    "proposed_tags": [],
    "instance_id": "inst-1",
    "lifecycle_status": "starting",
    "communication_config": {
        "protocols": ["http"],
        "websocket_endpoint": "",
        "heartbeat_interval": "2s",
    },
    "health_status": "healthy",
    "last_heartbeat": "2026-01-01T00:00:00Z",
    "registered_at": "2026-01-01T00:00:00Z",
    "features": {"ab_testing": False, "experimental": {}},
    "metadata": {"deployment": {"platform": "python"}, "custom": {}},
}


@pytest.fixture
async def standin() -> AsyncIterator[RunningStandin]:
    running = await start_standin(connector_token=TOKEN, agent_call_timeout=2.0)
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def http(standin: RunningStandin) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=standin.url, timeout=5.0, verify=TLS) as client:
        yield client


async def register(
    http: httpx.AsyncClient, version: str, base_url: str = "http://127.0.0.1:9", **extra: Any
) -> httpx.Response:
    body = {**SDK_REGISTRATION, "version": version, "base_url": base_url, **extra}
    return await http.post("/api/v1/nodes/register", json=body)


async def versions(http: httpx.AsyncClient, node: str = "classifier") -> httpx.Response:
    return await http.get(f"{C}/reasoners/{node}/versions", headers=AUTH)


async def put_weight(
    http: httpx.AsyncClient, version: str, content: bytes | str, node: str = "classifier"
) -> httpx.Response:
    return await http.put(
        f"{C}/reasoners/{node}/versions/{version}/weight",
        content=content,
        headers={**AUTH, "Content-Type": "application/json"},
    )


async def serve_app(app: web.Application) -> tuple[str, web.AppRunner]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}", runner


# ---------------------------------------------------------------------------------------------
# health and naming


async def test_health_names_the_standin_and_needs_no_auth(http: httpx.AsyncClient) -> None:
    """``GET /health`` and ``/api/v1/health`` answer without auth (server/routes_core.go:22,29,
    middleware/auth.go:38) with the control plane's shape (routes_core.go:162-208), plus
    ``"standin": true`` and the stand-in's name; every response carries X-AgentField-Standin."""
    for path in ("/health", "/api/v1/health"):
        response = await http.get(path)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "healthy"
        assert body["version"] == "1.0.0"
        assert set(body["checks"]) == {"storage", "cache"}
        assert body["standin"] is True
        assert body["name"] == "agentfield-standin"
        assert "refused" in body["reason"]
        assert response.headers["X-AgentField-Standin"] == "1"


# ---------------------------------------------------------------------------------------------
# registration


async def test_registration_answers_201_with_resolved_base_url(http: httpx.AsyncClient) -> None:
    """The SDK's registration body gets 201 ``{"success", "message", "node_id",
    "resolved_base_url", "callback_discovery"}`` (handlers/nodes_register.go:741-768); the SDK
    treats 200/201 as success (client.py:1505) and applies resolved_base_url (agent.py:1999)."""
    response = await register(http, "2.0.0", base_url="http://10.0.0.7:8001")
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True
    assert body["message"] == "Node registered successfully"
    assert body["node_id"] == "classifier"
    assert body["resolved_base_url"] == "http://10.0.0.7:8001"
    assert body["callback_discovery"]["resolved"] == "http://10.0.0.7:8001"
    assert "status" not in body  # only "pending_approval" would set it

    alias = await http.post("/api/v1/nodes", json={**SDK_REGISTRATION, "version": "2.1.0"})
    assert alias.status_code == 201  # POST /api/v1/nodes is an alias (routes_core.go:39)


async def test_new_registration_starts_unknown_and_starting(http: httpx.AsyncClient) -> None:
    """A registration always stores health_status "unknown" (nodes_register.go:499) whatever the
    SDK sends ("healthy"), and lifecycle from the body or "starting" (:569-572)."""
    await register(http, "2.0.0", lifecycle_status="")
    node = (await http.get("/api/v1/nodes/classifier")).json()
    assert node["health_status"] == "unknown"
    assert node["lifecycle_status"] == "starting"
    assert node["group_id"] == "classifier"  # defaults to the id (nodes_register.go:378-380)
    assert node["traffic_weight"] == 100


async def test_registration_validates_id_and_callback_url(http: httpx.AsyncClient) -> None:
    """``id`` is ``validate:"required"`` (types.go:159) → 400 "Validation failed: ..."
    (nodes_register.go:370-374); a base_url that is not http(s) → 400 "Invalid callback URL"
    (nodes_register.go:37-64, 437-447)."""
    missing = await http.post("/api/v1/nodes/register", json={"version": "1.0.0"})
    assert missing.status_code == 400
    assert missing.json()["error"].startswith("Validation failed:")
    bad_url = await register(http, "1.0.0", base_url="ftp://example.com")
    assert bad_url.status_code == 400
    assert bad_url.json()["error"].startswith("Invalid callback URL:")
    garbage = await http.post(
        "/api/v1/nodes/register", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert garbage.status_code == 400
    assert garbage.json()["error"].startswith("Invalid JSON format:")


async def test_reregistration_resets_weight_to_100(http: httpx.AsyncClient) -> None:
    """Registration is an upsert with ``traffic_weight = excluded.traffic_weight`` and 0 stored
    as 100 (storage/local.go:4469-4520); the SDK never sends a weight (client.py:783-815), so
    every restart puts the version back at 100."""
    await register(http, "2.0.0")
    assert (await put_weight(http, "2.0.0", '{"weight": 9500}')).status_code == 200
    assert (await versions(http)).json()["versions"][0]["traffic_weight"] == 9500
    await register(http, "2.0.0")
    assert (await versions(http)).json()["versions"][0]["traffic_weight"] == 100


async def test_versioned_registration_deletes_the_unversioned_row(http: httpx.AsyncClient) -> None:
    """Registering with a version deletes a stale ``version=''`` row (nodes_register.go:485-492);
    while it exists, the unversioned row is the GetAgent row (local.go:4551) and is not repeated
    (ListAgentVersions has ``version != ''``, local.go:4693)."""
    await register(http, "")
    listed = (await versions(http)).json()
    assert [v["version"] for v in listed["versions"]] == [""]
    assert listed["total"] == 1
    await register(http, "1.0.0")
    listed = (await versions(http)).json()
    assert [v["version"] for v in listed["versions"]] == ["1.0.0", "1.0.0"]


# ---------------------------------------------------------------------------------------------
# connector: authentication and capabilities


async def test_wrong_or_missing_token_is_403_never_401(http: httpx.AsyncClient) -> None:
    """``X-Connector-Token`` compared in constant time; wrong or missing → 403 with this exact
    body (server/middleware/connector_auth.go:25-30)."""
    expected = {
        "error": "forbidden",
        "message": "connector token required for this operation (use X-Connector-Token header)",
    }
    for headers in ({}, {"X-Connector-Token": "wrong"}, {"X-Connector-Token": TOKEN + "x"}):
        response = await http.get(f"{C}/manifest", headers=headers)
        assert response.status_code == 403
        assert response.json() == expected
    # An unknown path is the catch-all 404: gin runs group middleware on matched routes only.
    assert (await http.get(f"{C}/no-such-route")).status_code == 404


async def test_connector_routes_exist_only_with_a_token() -> None:
    """Without a token at start the connector group is not registered at all → 404
    (server/routes_connector.go:17-20); the rest of the API still works."""
    running = await start_standin(connector_token=None)
    try:
        async with httpx.AsyncClient(base_url=running.url, verify=TLS) as client:
            missing = await client.get(f"{C}/reasoners/classifier/versions", headers=AUTH)
            # gin's NoRoute is Smart404Handler (Agent-Field/agentfield v0.1.128-rc.3
            # control-plane/internal/handlers/agentic/discover.go:49-99, installed at
            # server/routes_ui.go:356): not {"error":"agent not found"}, which an enabled
            # connector answers for an unknown node (connector/handlers.go ListReasonerVersions).
            assert missing.status_code == 404
            body = missing.json()
            assert body["error"] == "endpoint_not_found"
            assert body["message"] == f"GET {C}/reasoners/classifier/versions does not exist"
            assert "help" in body
            assert (await client.get(f"{C}/manifest", headers=AUTH)).status_code == 404
            assert (await client.get("/health")).json()["connector_enabled"] is False
    finally:
        await running.close()


async def test_capabilities_gate_routes_but_not_the_manifest() -> None:
    """A missing or disabled capability → 403 capability_disabled; read-only rejects writes with
    403 read_only (server/middleware/connector_capability.go:14-36); /manifest is always allowed
    (handlers/connector/handlers.go:52-57)."""
    running = await start_standin(
        connector_token=TOKEN,
        capabilities={"reasoner_management": Capability(read_only=True)},
    )
    try:
        async with httpx.AsyncClient(base_url=running.url, verify=TLS) as client:
            manifest = await client.get(f"{C}/manifest", headers=AUTH)
            assert manifest.status_code == 200
            assert manifest.json()["capabilities"] == {
                "reasoner_management": {"enabled": True, "read_only": True}
            }
            nodes = await client.get(f"{C}/nodes", headers=AUTH)
            assert nodes.status_code == 403
            assert nodes.json() == {
                "error": "capability_disabled",
                "message": "capability status_read is not enabled for this connector",
            }
            assert (await client.get(f"{C}/reasoners", headers=AUTH)).status_code == 200
            write = await client.put(
                f"{C}/reasoners/x/versions/1/weight", json={"weight": 5}, headers=AUTH
            )
            assert write.status_code == 403
            assert write.json()["error"] == "read_only"
    finally:
        await running.close()


# ---------------------------------------------------------------------------------------------
# connector: versions and weights


async def test_versions_list_repeats_the_smallest_version(http: httpx.AsyncClient) -> None:
    """The first entry is the GetAgent row (lexicographically smallest version, local.go:4551),
    then every versioned row by registered_at DESC (local.go:4693): with no unversioned row the
    smallest version appears twice and ``total`` counts both (connector/handlers.go:363-418)."""
    await register(http, "2.1.0")
    await register(http, "2.0.0")
    await register(http, "10.0.0")
    body = (await versions(http)).json()
    assert body["id"] == "classifier"
    # "10.0.0" < "2.0.0" < "2.1.0" as strings; then newest registration first.
    assert [v["version"] for v in body["versions"]] == ["10.0.0", "10.0.0", "2.0.0", "2.1.0"]
    assert body["total"] == 4
    assert set(body["versions"][0]) == {
        "version",
        "traffic_weight",
        "health_status",
        "lifecycle_status",
        "base_url",
        "last_heartbeat",
    }


async def test_reregistration_keeps_registered_at_order(http: httpx.AsyncClient) -> None:
    """The upsert's SET list has no registered_at (local.go:4469-4486): re-registering an older
    version does not move it up the registered_at DESC order."""
    await register(http, "1.0.0")
    await register(http, "1.1.0")
    await register(http, "1.0.0")
    names = [v["version"] for v in (await versions(http)).json()["versions"]]
    assert names == ["1.0.0", "1.1.0", "1.0.0"]


async def test_versions_of_an_unknown_node_is_404(http: httpx.AsyncClient) -> None:
    """No rows → 404 ``{"error":"agent not found"}`` (connector/handlers.go:404-409)."""
    response = await versions(http, "nobody")
    assert response.status_code == 404
    assert response.json() == {"error": "agent not found"}


async def test_unknown_version_is_500_not_404(http: httpx.AsyncClient) -> None:
    """GetAgentVersion errors on no rows with the half-scanned row's blank ids
    (storage/local.go:4721; storage/coverage_storage92_additional_test.go:143) and the handler
    maps any error to 500 (connector/handlers.go:425-429); its 404 is reachable only with mocks."""
    await register(http, "2.0.0")
    response = await http.get(f"{C}/reasoners/classifier/versions/9.9.9", headers=AUTH)
    assert response.status_code == 500
    assert response.json() == {"error": "agent node with ID '' version '' not found"}
    known = await http.get(f"{C}/reasoners/classifier/versions/2.0.0", headers=AUTH)
    assert known.status_code == 200
    assert known.json()["traffic_weight"] == 100
    weight = await put_weight(http, "9.9.9", '{"weight": 10}')
    assert weight.status_code == 500


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{not json",
        '{"weight": 2.0}',
        '{"weight": 2.5}',
        '{"weight": "5"}',
        '{"weight": true}',
        "[]",
        '{"weight": 1e3}',
    ],
)
async def test_weight_that_does_not_bind_is_weight_is_required(
    http: httpx.AsyncClient, content: str
) -> None:
    """The body binds into ``struct{Weight int}`` (connector/handlers.go:451-458): an empty or
    malformed body, a float (even 2.0), a string or a bool fail → 400 "weight is required"."""
    await register(http, "2.0.0")
    response = await put_weight(http, "2.0.0", content)
    assert response.status_code == 400
    assert response.json() == {"error": "weight is required"}


@pytest.mark.parametrize("content", ["{}", '{"weight": null}', "null"])
async def test_empty_object_is_accepted_as_weight_zero(
    http: httpx.AsyncClient, content: str
) -> None:
    """The field has no ``binding:"required"``: ``{}`` (and null) bind to 0 and are accepted
    (connector/handlers.go:451-458) — and 0 is then routed as 100 (execute.go:1591-1596)."""
    await register(http, "2.0.0")
    response = await put_weight(http, "2.0.0", content)
    assert response.status_code == 200
    assert response.json()["new_weight"] == 0


@pytest.mark.parametrize("weight", [-1, 10001])
async def test_weight_out_of_range_is_400(http: httpx.AsyncClient, weight: int) -> None:
    """``weight < 0 || > 10000`` → 400 (connector/handlers.go:459-462); 0 and 10000 are fine."""
    await register(http, "2.0.0")
    response = await put_weight(http, "2.0.0", json.dumps({"weight": weight}))
    assert response.status_code == 400
    assert response.json() == {"error": "weight must be between 0 and 10000"}
    for edge in (0, 10000):
        assert (await put_weight(http, "2.0.0", json.dumps({"weight": edge}))).status_code == 200


async def test_weight_success_shape_and_case_insensitive_field(http: httpx.AsyncClient) -> None:
    """200 ``{"success","id","version","previous_weight","new_weight"}`` (handlers.go:484-490);
    encoding/json matches field names case-insensitively, so ``{"Weight": n}`` binds too."""
    await register(http, "2.1.0")
    first = await put_weight(http, "2.1.0", '{"weight": 2500}')
    assert first.json() == {
        "success": True,
        "id": "classifier",
        "version": "2.1.0",
        "previous_weight": 100,
        "new_weight": 2500,
    }
    second = await put_weight(http, "2.1.0", '{"Weight": 700}')
    assert second.json()["previous_weight"] == 2500
    assert second.json()["new_weight"] == 700


async def test_connector_node_reads(http: httpx.AsyncClient) -> None:
    """/reasoners lists one item per row and ``null`` when empty (a nil Go slice,
    handlers.go:160-195); /reasoners/:id and /nodes/:id/status answer the GetAgent row and 500
    for an unknown node, since GetAgent errors on no rows (local.go:4572; handlers.go:113-134,
    198-223); /nodes lists every row (handlers.go:102-110)."""
    assert (await http.get(f"{C}/reasoners", headers=AUTH)).json() == {
        "reasoners": None,
        "total": 0,
    }
    await register(http, "2.1.0")
    await register(http, "2.0.0")
    reasoners = (await http.get(f"{C}/reasoners", headers=AUTH)).json()
    assert reasoners["total"] == 2
    assert (await http.get(f"{C}/reasoners/classifier", headers=AUTH)).json()["version"] == "2.0.0"
    status = await http.get(f"{C}/nodes/classifier/status", headers=AUTH)
    assert status.json() == {
        "id": "classifier",
        "group_id": "classifier",
        "health_status": "unknown",
        "lifecycle_status": "starting",
        "version": "2.0.0",
    }
    for path in ("/reasoners/nobody", "/nodes/nobody/status"):
        missing = await http.get(C + path, headers=AUTH)
        assert missing.status_code == 500
        assert missing.json() == {"error": "agent node with ID 'nobody' not found"}
    nodes = (await http.get(f"{C}/nodes", headers=AUTH)).json()
    assert nodes["total"] == 2
    assert {a["version"] for a in nodes["agents"]} == {"2.0.0", "2.1.0"}


# ---------------------------------------------------------------------------------------------
# heartbeat, shutdown, node reads


async def test_heartbeats_reach_the_database_once_per_2s_per_node_not_per_version(
    standin: RunningStandin, http: httpx.AsyncClient
) -> None:
    """``HeartbeatCache.shouldUpdateDatabase`` is keyed by node id, with
    ``dbUpdateThreshold = 2 * time.Second`` (Agent-Field/agentfield v0.1.128-rc.3
    control-plane/internal/handlers/nodes_heartbeat.go:37, :41-69, called at :141): the first
    beat in a 2 s window stamps its own ``(id, version)`` row (:147-151, :177 →
    ``processHeartbeatAsync`` :94); a second version's beat in the same window is acknowledged
    and written nowhere. So a version's ``last_heartbeat`` says little about that version."""
    await register(http, "2.0.0")
    await register(http, "2.1.0")
    before = {v["version"]: v["last_heartbeat"] for v in (await versions(http)).json()["versions"]}
    url = "/api/v1/nodes/classifier/heartbeat"
    first = await http.post(url, json={"version": "2.1.0", "instance_id": "inst-1"})
    assert first.status_code == 200
    assert first.json()["success"] is True
    assert first.json()["message"] == "heartbeat received"
    second = await http.post(url, json={"version": "2.0.0", "instance_id": "inst-0"})
    assert second.status_code == 200  # acknowledged, but inside the node's 2 s window
    after = {v["version"]: v["last_heartbeat"] for v in (await versions(http)).json()["versions"]}
    assert after["2.1.0"] > before["2.1.0"]
    assert after["2.0.0"] == before["2.0.0"]
    # The window is per node: another node's beat is not held back by this one's.
    await register(http, "1.0.0", id="other")
    other_before = (await versions(http, "other")).json()["versions"][0]["last_heartbeat"]
    await http.post("/api/v1/nodes/other/heartbeat", json={"version": "1.0.0"})
    other_after = (await versions(http, "other")).json()["versions"][0]["last_heartbeat"]
    assert other_after > other_before
    # Once the window has passed (made to pass here rather than slept through), the next beat
    # stamps its version.
    standin.state.heartbeat_writes.clear()
    await http.post(url, json={"version": "2.0.0", "instance_id": "inst-0"})
    final = {v["version"]: v["last_heartbeat"] for v in (await versions(http)).json()["versions"]}
    assert final["2.0.0"] > after["2.0.0"]


async def test_a_status_heartbeat_stamps_the_smallest_row_and_moves_the_whole_node(
    http: httpx.AsyncClient,
) -> None:
    """A beat with a status goes to ``StatusManager.UpdateFromHeartbeat``
    (nodes_heartbeat.go:185-229, v0.1.128-rc.3), whose ``UpdateAgentStatus`` resolves
    ``GetAgent``'s row first (services/status_manager.go:336) and persists ``last_heartbeat``
    on that row's version (:439-443, ``persistStatus`` :660-661): 2.1.0's beat stamps 2.0.0,
    every time, throttle or not. Lifecycle and health move for the whole node
    (ready → state active → health active). Body as the SDK sends it (types.py HeartbeatData)."""
    await register(http, "2.0.0")
    await register(http, "2.1.0")
    before = {v["version"]: v["last_heartbeat"] for v in (await versions(http)).json()["versions"]}
    url = "/api/v1/nodes/classifier/heartbeat"
    body = {"status": "ready", "timestamp": "2026-01-01T00:00:00", "instance_id": "inst-1"}
    await http.post(url, json={**body, "version": "2.0.0"})  # takes the node's 2 s slot
    middle = {v["version"]: v["last_heartbeat"] for v in (await versions(http)).json()["versions"]}
    beat = await http.post(url, json={**body, "version": "2.1.0"})
    assert beat.status_code == 200
    after = {v["version"]: v for v in (await versions(http)).json()["versions"]}
    assert after["2.0.0"]["last_heartbeat"] > middle["2.0.0"]  # stamped by 2.1.0's beat
    assert after["2.1.0"]["last_heartbeat"] == before["2.1.0"]  # its own row never was
    for version in ("2.0.0", "2.1.0"):
        assert after[version]["lifecycle_status"] == "ready"
        assert after[version]["health_status"] == "active"


async def test_starting_heartbeat_does_not_demote_a_ready_node(http: httpx.AsyncClient) -> None:
    """A "starting" heartbeat never regresses ready/degraded (status_manager.go:463-468); an
    "offline" one marks the node inactive; an unknown status is ignored."""
    await register(http, "2.0.0")
    url = "/api/v1/nodes/classifier/heartbeat"
    await http.post(url, json={"status": "ready", "version": "2.0.0"})
    await http.post(url, json={"status": "starting", "version": "2.0.0"})
    await http.post(url, json={"status": "bogus", "version": "2.0.0"})
    node = (await http.get("/api/v1/nodes/classifier")).json()
    assert (node["lifecycle_status"], node["health_status"]) == ("ready", "active")
    await http.post(url, json={"status": "offline", "version": "2.0.0"})
    node = (await http.get("/api/v1/nodes/classifier")).json()
    assert (node["lifecycle_status"], node["health_status"]) == ("offline", "inactive")


async def test_heartbeat_for_an_unknown_version_is_404_only_when_it_wins_the_slot(
    standin: RunningStandin, http: httpx.AsyncClient
) -> None:
    """An unknown (node, version) → 404 ``{"error":"node not found"}``, but only on a beat that
    reaches the database (nodes_heartbeat.go:143-156, v0.1.128-rc.3); inside the node's 2 s
    window nothing is looked up and the beat is acknowledged. A body-less "simple" heartbeat
    is accepted (:126-133)."""
    await register(http, "2.0.0")
    missing = await http.post(
        "/api/v1/nodes/classifier/heartbeat", json={"status": "ready", "version": "9.9.9"}
    )
    assert missing.status_code == 404
    assert missing.json() == {"error": "node not found"}
    again = await http.post("/api/v1/nodes/classifier/heartbeat", json={"version": "9.9.9"})
    assert again.status_code == 200
    standin.state.heartbeat_writes.clear()
    assert (await http.post("/api/v1/nodes/classifier/heartbeat")).status_code == 200


async def test_shutdown_takes_the_whole_node_offline(http: httpx.AsyncClient) -> None:
    """The SDK's graceful shutdown (client.py:1379) → 202, lifecycle offline and state stopping
    for the whole node, not just the version (handlers/nodes_rest.go:243-297)."""
    await register(http, "2.0.0")
    await register(http, "2.1.0")
    response = await http.post("/api/v1/nodes/classifier/shutdown", json={"version": "2.1.0"})
    assert response.status_code == 202
    assert response.json()["message"] == "shutdown acknowledged"
    for entry in (await versions(http)).json()["versions"]:
        assert entry["lifecycle_status"] == "offline"
        assert entry["health_status"] == "inactive"


async def test_node_detail_has_a_clean_404(http: httpx.AsyncClient) -> None:
    """``GET /api/v1/nodes/:id?version=`` answers the full AgentNode or a clean 404
    ``{"error":"node not found"}`` (handlers/nodes_detail.go), unlike the connector's 500;
    ``/status`` wraps the node-wide unified status (handlers/nodes_status.go:132-136)."""
    await register(http, "2.0.0")
    node = await http.get("/api/v1/nodes/classifier", params={"version": "2.0.0"})
    assert node.status_code == 200
    assert node.json()["instance_id"] == "inst-1"
    assert node.json()["reasoners"][0]["id"] == "classify"
    missing = await http.get("/api/v1/nodes/classifier", params={"version": "9.9.9"})
    assert (missing.status_code, missing.json()) == (404, {"error": "node not found"})
    status = (await http.get("/api/v1/nodes/classifier/status")).json()
    assert status["success"] is True
    assert status["status"]["lifecycle_status"] == "starting"
    assert (await http.get("/api/v1/nodes/nobody/status")).status_code == 404


# ---------------------------------------------------------------------------------------------
# memory


async def test_memory_set_get_global(http: httpx.AsyncClient) -> None:
    """set answers 200 with the Memory object (handlers/memory.go:54-240, types.go:84-96);
    an explicit "global" scope has scope_id "global" (memory.go:421-434)."""
    data = {"total": 12, "failed": 3}
    stored = await http.post(
        "/api/v1/memory/set", json={"key": "k", "data": data, "scope": "global"}
    )
    assert stored.status_code == 200
    memory = stored.json()
    assert (memory["scope"], memory["scope_id"], memory["key"]) == ("global", "global", "k")
    assert memory["data"] == data
    assert {"access_level", "created_at", "updated_at", "metadata"} <= set(memory)
    got = await http.post("/api/v1/memory/get", json={"key": "k", "scope": "global"})
    assert got.json()["data"] == data


async def test_unscoped_set_in_a_workflow_lands_in_workflow_scope(http: httpx.AsyncClient) -> None:
    """Without a scope the first header present wins: workflow, session, actor, else global
    (resolveScope, memory.go:402-418). The SDK always sends X-Workflow-ID, so a plain
    ``app.memory.set`` is per-run; a global reader then does not see it (agentfield-api.md §3)."""
    stored = await http.post(
        "/api/v1/memory/set",
        json={"key": "counter", "data": {"total": 1, "failed": 0}},
        headers={"X-Workflow-ID": "run-1"},
    )
    assert (stored.json()["scope"], stored.json()["scope_id"]) == ("workflow", "run-1")
    missed = await http.post("/api/v1/memory/get", json={"key": "counter", "scope": "global"})
    assert missed.status_code == 404
    assert missed.json() == {
        "error": "not_found",
        "code": 404,
        "details": "memory with key 'counter' not found in scope 'global' for ID 'global'",
    }
    # get without a scope searches workflow → session → actor → global (memory.go:272-292).
    found = await http.post(
        "/api/v1/memory/get", json={"key": "counter"}, headers={"X-Workflow-ID": "run-1"}
    )
    assert found.status_code == 200
    nowhere = await http.post("/api/v1/memory/get", json={"key": "counter"})
    assert nowhere.json()["details"] == "Memory key not found in any scope"


async def test_explicit_scope_without_its_header_gets_empty_scope_id(
    http: httpx.AsyncClient,
) -> None:
    """An explicit scope takes its id from the header; a missing header silently gives
    ``scope_id=""`` (getScopeID, memory.go:421-434)."""
    stored = await http.post("/api/v1/memory/set", json={"key": "k", "data": 1, "scope": "session"})
    assert (stored.json()["scope"], stored.json()["scope_id"]) == ("session", "")


async def test_memory_errors_and_delete_204(http: httpx.AsyncClient) -> None:
    """delete answers 204 even for a key that never existed (BoltDB Delete is silent,
    local.go:4049-4076); an unknown scope has no bucket: set/list 500 storage_error, get/delete
    404 (local.go:3976-3980, 943); list needs a scope (400 missing_scope, memory.go:372-380);
    ``data: null`` fails ``binding:"required"`` (400 invalid_request, memory.go:31-35)."""
    deleted = await http.post("/api/v1/memory/delete", json={"key": "never", "scope": "global"})
    assert deleted.status_code == 204
    assert deleted.content == b""
    bad_set = await http.post("/api/v1/memory/set", json={"key": "k", "data": 1, "scope": "team"})
    assert bad_set.status_code == 500
    assert bad_set.json() == {
        "error": "storage_error",
        "code": 500,
        "details": "BoltDB bucket 'team' not found",
    }
    bad_get = await http.post("/api/v1/memory/get", json={"key": "k", "scope": "team"})
    assert bad_get.status_code == 404
    bad_delete = await http.post("/api/v1/memory/delete", json={"key": "k", "scope": "team"})
    assert bad_delete.status_code == 404
    no_scope = await http.get("/api/v1/memory/list")
    assert no_scope.status_code == 400
    assert no_scope.json()["error"] == "missing_scope"
    null_data = await http.post("/api/v1/memory/set", json={"key": "k", "data": None})
    assert null_data.status_code == 400
    assert null_data.json()["error"] == "invalid_request"
    zero = await http.post("/api/v1/memory/set", json={"key": "k", "data": 0, "scope": "global"})
    assert zero.status_code == 200  # only a missing/null value fails "required"


async def test_memory_list_is_a_prefix_scan(http: httpx.AsyncClient) -> None:
    """list returns full Memory objects in key order from a BoltDB prefix scan on
    ``"<scope_id>:"`` (local.go:4079-4105)."""
    for key in ("b", "a"):
        await http.post(
            "/api/v1/memory/set", json={"key": key, "data": {"v": key}, "scope": "global"}
        )
    listed = await http.get("/api/v1/memory/list", params={"scope": "global"})
    assert [m["key"] for m in listed.json()] == ["a", "b"]
    assert listed.json()[0]["data"] == {"v": "a"}
    empty = await http.get("/api/v1/memory/list", params={"scope": "actor"})
    assert empty.json() == []


async def test_memory_events_websocket_forwards_matching_changes(
    standin: RunningStandin, http: httpx.AsyncClient
) -> None:
    """``GET /api/v1/memory/events/ws`` (handlers/memory_events.go WebSocketHandler,
    ``wunitb/agentfield`` @ ``59af08e4``): filters on ``scope``/``scope_id`` and the comma-separated
    ``patterns`` (filepath.Match), and forwards each ``types.MemoryChangeEvent`` as JSON with the
    fields SetMemoryHandler and DeleteMemoryHandler fill in (handlers/memory.go): type
    ``memory_change``, action ``set``/``delete``, data, previous_data, and the caller's headers in
    metadata. The Python SDK opens this socket whenever an agent starts."""
    url = standin.url.replace("http://", "ws://") + "/api/v1/memory/events/ws"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            url, params={"scope": "global", "patterns": "promptloop.*, fail*"}
        ) as ws,
    ):
        # The subscription exists once the upgrade is answered.
        assert len(standin.state.subscribers) == 1
        headers = {"X-Agent-Node-ID": "classifier", "X-Workflow-ID": "run-9"}
        for key, data in (
            ("promptloop.outcomes.classifier.2.0.0", {"total": 1, "failed": 0}),
            ("unrelated", 1),
            ("promptloop.outcomes.classifier.2.0.0", {"total": 2, "failed": 1}),
        ):
            await http.post(
                "/api/v1/memory/set",
                json={"key": key, "data": data, "scope": "global"},
                headers=headers,
            )
        # Another scope is filtered out by scope, whatever its key.
        await http.post(
            "/api/v1/memory/set",
            json={"key": "failures", "data": []},
            headers={"X-Workflow-ID": "run-9"},
        )
        await http.post("/api/v1/memory/delete", json={"key": "unrelated", "scope": "global"})
        await http.post(
            "/api/v1/memory/delete",
            json={"key": "promptloop.outcomes.classifier.2.0.0", "scope": "global"},
        )
        events = [await ws.receive_json(timeout=5) for _ in range(3)]
    first, second, deleted = events
    assert first["type"] == "memory_change"
    assert (first["scope"], first["scope_id"], first["action"]) == ("global", "global", "set")
    assert first["data"] == {"total": 1, "failed": 0}
    assert "previous_data" not in first
    assert first["metadata"] == {"agent_id": "classifier", "workflow_id": "run-9"}
    assert {"id", "timestamp", "key"} <= set(first)
    assert second["previous_data"] == {"total": 1, "failed": 0}
    assert second["data"] == {"total": 2, "failed": 1}
    assert deleted["action"] == "delete"
    assert "data" not in deleted
    assert deleted["previous_data"] == {"total": 2, "failed": 1}
    assert standin.state.subscribers == []


async def test_open_memory_events_socket_does_not_hold_shutdown() -> None:
    """A client still connected when the stand-in stops is closed at once (1001), not after
    aiohttp's shutdown grace period."""
    running = await start_standin(connector_token=TOKEN)
    url = running.url.replace("http://", "ws://") + "/api/v1/memory/events/ws"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        started = asyncio.get_running_loop().time()
        await running.close()
        message = await ws.receive(timeout=5)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert asyncio.get_running_loop().time() - started < 5


# ---------------------------------------------------------------------------------------------
# execute


async def test_memory_needs_the_api_key_when_one_is_configured() -> None:
    """With ``api.auth.api_key`` set, ``APIKeyAuth`` (Agent-Field/agentfield v0.1.128-rc.3
    control-plane/internal/server/middleware/auth.go:20-135) refuses a missing or wrong key with
    401 ``unauthorized`` (:121-134) and takes it from X-API-Key or ``Authorization: Bearer``
    (:101-112); health (:55-58) and the connector (:83-86) need none."""
    running = await start_standin(connector_token=TOKEN, api_key="k3y")
    try:
        async with httpx.AsyncClient(base_url=running.url, verify=TLS) as client:
            body = {"key": "k", "data": {"total": 1}, "scope": "global"}
            refused = await client.post("/api/v1/memory/set", json=body)
            assert refused.status_code == 401
            assert refused.json()["error"] == "unauthorized"
            wrong = await client.post(
                "/api/v1/memory/get", json=body, headers={"X-API-Key": "nope"}
            )
            assert wrong.status_code == 401
            stored = await client.post(
                "/api/v1/memory/set", json=body, headers={"X-API-Key": "k3y"}
            )
            assert stored.status_code == 200
            read = await client.post(
                "/api/v1/memory/get", json=body, headers={"Authorization": "Bearer k3y"}
            )
            assert read.json()["data"] == {"total": 1}
            assert (await client.get("/health")).status_code == 200
            assert (await client.get(f"{C}/manifest", headers=AUTH)).status_code == 200
    finally:
        await running.close()


def agent_app(
    version: str, *, status: int = 200, hang: asyncio.Event | None = None
) -> web.Application:
    """A fake agent that says which version served the call."""

    async def reasoner(request: web.Request) -> web.StreamResponse:
        if hang is not None:
            await hang.wait()
        payload = await request.json()
        if status != 200:
            return web.json_response({"detail": f"failure from {version}"}, status=status)
        return web.json_response(
            {
                "version": version,
                "input": payload,
                "run": request.headers.get("X-Run-ID"),
                "workflow": request.headers.get("X-Workflow-ID"),
            }
        )

    app = web.Application()
    app.router.add_post("/reasoners/classify", reasoner)
    return app


async def test_execute_ignores_weights_and_calls_the_smallest_version(
    http: httpx.AsyncClient,
) -> None:
    """prepareExecution calls GetAgent first and only falls back to the weighted
    selectVersionedAgent when that fails (execute.go:1041-1058); GetAgent returns the
    lexicographically smallest version (local.go:4551), so "10.0.0" beats "2.0.0" whatever the
    weights, and X-Routed-Version is never set (execute.go:310,353)."""
    runners = []
    try:
        urls = {}
        for version in ("2.0.0", "10.0.0"):
            url, runner = await serve_app(agent_app(version))
            runners.append(runner)
            urls[version] = url
            await register(http, version, base_url=url)
        await put_weight(http, "10.0.0", '{"weight": 1}')
        await put_weight(http, "2.0.0", '{"weight": 10000}')
        for _ in range(5):
            response = await http.post(
                "/api/v1/execute/classifier.classify", json={"input": {"text": "hi"}}
            )
            assert response.status_code == 200
            assert "X-Routed-Version" not in response.headers
            body = response.json()
            assert body["status"] == "succeeded"
            assert body["result"]["version"] == "10.0.0"
            assert body["result"]["input"] == {"text": "hi"}  # the bare input dict
            assert body["result"]["workflow"] == body["run_id"]  # X-Workflow-ID = run id
            assert {"execution_id", "run_id", "duration_ms", "finished_at"} <= set(body)
            assert response.headers["X-Execution-ID"] == body["execution_id"]
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_execute_refuses_the_node_when_the_smallest_row_is_down(
    http: httpx.AsyncClient,
) -> None:
    """``ensureAgentDispatchable`` (Agent-Field/agentfield @ 04c90993
    control-plane/internal/handlers/execute_agent_restart.go), called in execute_prepare.go on
    ``GetAgent``'s row before any execution exists: inactive health or an offline lifecycle →
    503 ``node_unavailable`` with Retry-After 1, body as execute_test.go
    TestWriteExecutionError_NodeUnavailableIncludesRetryAfter pins it. Health is node-wide, so a
    shut-down version takes every version's traffic down with it."""
    runners = []
    try:
        for version in ("2.0.0", "2.1.0"):
            url, runner = await serve_app(agent_app(version))
            runners.append(runner)
            await register(http, version, base_url=url)
        served = await http.post("/api/v1/execute/classifier.classify", json={"input": {}})
        assert served.status_code == 200
        await http.post("/api/v1/nodes/classifier/shutdown", json={"version": "2.1.0"})
        refused = await http.post("/api/v1/execute/classifier.classify", json={"input": {}})
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        body = refused.json()
        assert body["error"] == "node_unavailable"
        assert body["error_category"] == "node_unavailable"
        assert body["retry_after"] == 1
        assert "classifier" in body["message"]
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_execute_error_mapping(http: httpx.AsyncClient) -> None:
    """Agent 5xx → 502 with error_details, 4xx passed through (writeExecutionError,
    execute.go:1966-1989); unknown node → 400 ``agent '<id>' not found`` with error_category
    internal_error (execute.go:1052, 2006-2016; execution_guards.go:132); a target that is not
    ``a.b`` → 400 (parseTarget, execute.go:1512-1524); unknown reasoner → 400 (:1526-1538)."""
    runners = []
    try:
        url, runner = await serve_app(agent_app("1.0.0", status=500))
        runners.append(runner)
        await register(http, "1.0.0", base_url=url)
        failed = await http.post("/api/v1/execute/classifier.classify", json={"input": {}})
        assert failed.status_code == 502
        assert failed.json()["error_category"] == "agent_error"
        assert failed.json()["status"] == "failed"
        assert failed.json()["error_details"] == {"detail": "failure from 1.0.0"}

        url4, runner4 = await serve_app(agent_app("0.1.0", status=422))
        runners.append(runner4)
        await register(http, "0.1.0", base_url=url4)  # now the smallest version
        passed_through = await http.post("/api/v1/execute/classifier.classify", json={"input": {}})
        assert passed_through.status_code == 422

        missing = await http.post("/api/v1/execute/nobody.classify", json={"input": {}})
        assert missing.status_code == 400
        assert missing.json() == {
            "error": "agent 'nobody' not found",
            "error_category": "internal_error",
        }
        bad_target = await http.post("/api/v1/execute/a.b.c", json={"input": {}})
        assert bad_target.status_code == 400
        unknown = await http.post("/api/v1/execute/classifier.nope", json={"input": {}})
        assert unknown.status_code == 400
        assert unknown.json()["error"] == "target 'nope' not found on agent 'classifier'"
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_execute_unreachable_and_timeout_are_504(http: httpx.AsyncClient) -> None:
    """A refused connection → 504 agent_unreachable; no answer within the agent-call timeout →
    504 agent_timeout (classifyRawError + writeExecutionError, execute.go:2006-2016,
    2056-2082)."""
    await register(http, "1.0.0", base_url="http://127.0.0.1:1")
    unreachable = await http.post("/api/v1/execute/classifier.classify", json={"input": {}})
    assert unreachable.status_code == 504
    assert unreachable.json()["error_category"] == "agent_unreachable"

    hang = asyncio.Event()
    url, runner = await serve_app(agent_app("0.9.0", hang=hang))
    quick = await start_standin(connector_token=TOKEN, agent_call_timeout=0.2)
    try:
        async with httpx.AsyncClient(base_url=quick.url, verify=TLS) as client:
            await register(client, "0.9.0", base_url=url)
            timed_out = await client.post("/api/v1/execute/classifier.classify", json={"input": {}})
        assert timed_out.status_code == 504
        assert timed_out.json()["error_category"] == "agent_timeout"
    finally:
        hang.set()
        await quick.close()
        await runner.cleanup()


def async_agent_app(standin_url: str, outcome: dict[str, Any] | None) -> web.Application:
    """A fake agent that behaves like the Python SDK: 202 now, the outcome to the callback."""
    tasks: set[asyncio.Task[None]] = set()

    async def report(execution_id: str) -> None:
        async with httpx.AsyncClient(verify=TLS) as client:
            await client.post(
                f"{standin_url}/api/v1/executions/{execution_id}/status", json=outcome
            )

    async def reasoner(request: web.Request) -> web.StreamResponse:
        execution_id = request.headers["X-Execution-ID"]
        if outcome is not None:
            task = asyncio.create_task(report(execution_id))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return web.json_response({"status": "processing", "execution_id": execution_id}, status=202)

    app = web.Application()
    app.router.add_post("/reasoners/classify", reasoner)
    return app


async def test_execute_waits_for_the_sdk_status_callback(
    standin: RunningStandin, http: httpx.AsyncClient
) -> None:
    """The SDK answers 202 when X-Execution-ID is set and later POSTs the outcome to
    ``/api/v1/executions/{id}/status`` (SDK agent.py:2296-2319, 3071-3077); the control plane
    waits for it and answers the caller then (handleSync :238-315, handleStatusUpdate
    :474-637); GET /api/v1/executions/:id renders the record (renderStatus :1754-1782)."""
    outcome = {"status": "succeeded", "result": {"label": "billing"}, "duration_ms": 12}
    url, runner = await serve_app(async_agent_app(standin.url, outcome))
    try:
        await register(http, "1.0.0", base_url=url)
        response = await http.post("/api/v1/execute/classifier.classify", json={"input": {}})
        assert response.status_code == 200
        body = response.json()
        assert (body["status"], body["result"], body["duration_ms"]) == (
            "succeeded",
            {"label": "billing"},
            12,
        )
        record = await http.get(f"/api/v1/executions/{body['execution_id']}")
        assert record.json()["status"] == "succeeded"
        assert record.json()["result"] == {"label": "billing"}
        assert (await http.get("/api/v1/executions/nope")).status_code == 404
    finally:
        await runner.cleanup()


async def test_failed_callback_is_502(standin: RunningStandin, http: httpx.AsyncClient) -> None:
    """A "failed" outcome answers 502 with error_message and the result as error_details
    (handleSync :276-294); the status is normalized ("error" → "failed", status.go:36-74)."""
    outcome = {"status": "error", "error": "model refused", "result": {"why": "x"}}
    url, runner = await serve_app(async_agent_app(standin.url, outcome))
    try:
        await register(http, "1.0.0", base_url=url)
        response = await http.post("/api/v1/execute/classifier.classify", json={"input": {}})
        assert response.status_code == 502
        assert response.json()["status"] == "failed"
        assert response.json()["error_message"] == "model refused"
        assert response.json()["error_details"] == {"why": "x"}
    finally:
        await runner.cleanup()


async def test_status_callback_validation(http: httpx.AsyncClient) -> None:
    """``result`` binds into a JSON object only, ``status`` must normalize to a known one
    (handleStatusUpdate :482-492), an unknown execution is a storage error (500, :602-605)."""
    unknown = await http.post("/api/v1/executions/nope/status", json={"status": "succeeded"})
    assert unknown.status_code == 500
    bogus = await http.post("/api/v1/executions/nope/status", json={"status": "bogus"})
    assert bogus.json() == {"error": "unsupported status 'bogus'"}
    not_object = await http.post(
        "/api/v1/executions/nope/status", json={"status": "succeeded", "result": "billing"}
    )
    assert not_object.status_code == 400


async def test_missing_callback_times_out_as_400(http: httpx.AsyncClient) -> None:
    """Without a callback the wait ends at the agent-call timeout with "execution timeout
    after ...", which writeExecutionError classifies as internal → 400 (:895-902, 2006-2016)."""
    quick = await start_standin(connector_token=TOKEN, agent_call_timeout=0.2)
    url, runner = await serve_app(async_agent_app(quick.url, None))
    try:
        async with httpx.AsyncClient(base_url=quick.url, verify=TLS) as client:
            await register(client, "1.0.0", base_url=url)
            response = await client.post("/api/v1/execute/classifier.classify", json={"input": {}})
        assert response.status_code == 400
        assert response.json() == {
            "error": "execution timeout after 200ms",
            "error_category": "internal_error",
        }
    finally:
        await runner.cleanup()
        await quick.close()


# ---------------------------------------------------------------------------------------------
# process management (promptloop dev agentfield)


def test_start_and_stop_as_a_background_process(tmp_path: Path) -> None:
    """start_agentfield runs the stand-in as a process on a free loopback port with a random
    token, writes agentfield.env (0600) and agentfield.pid, is idempotent, and stop_agentfield
    stops it by PID and leaves the port unbound."""
    handle = start_agentfield(tmp_path)
    try:
        assert handle.url.startswith("http://127.0.0.1:")
        assert handle.token not in repr(handle)
        env_path = tmp_path / ENV_FILE
        assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
        lines = env_path.read_text().splitlines()
        assert lines == [
            f"AGENTFIELD_URL={handle.url}",
            f"AGENTFIELD_CONNECTOR_TOKEN={handle.token}",
            "AGENTFIELD_STANDIN=1",
        ]
        assert int((tmp_path / PID_FILE).read_text()) == handle.pid
        health = httpx.get(f"{handle.url}/health").json()
        assert health["standin"] is True
        manifest = httpx.get(
            f"{handle.url}{C}/manifest", headers={"X-Connector-Token": handle.token}
        )
        assert manifest.status_code == 200
        # The token travels in the environment, not on the command line.
        cmdline = Path(f"/proc/{handle.pid}/cmdline")
        if cmdline.exists():
            assert handle.token.encode() not in cmdline.read_bytes()
        again = start_agentfield(tmp_path)
        assert again.reused and again.pid == handle.pid and again.token == handle.token
    finally:
        stop_agentfield(handle)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{handle.url}/health", timeout=1)
    assert read_handle(tmp_path) is None
    assert not (tmp_path / ENV_FILE).exists()


def test_cli_up_and_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``promptloop dev agentfield up|down`` say they run the stand-in and why, and use the
    state directory (``.cluster`` by default, PROMPTLOOP_CLUSTER_DIR here)."""
    parser = argparse.ArgumentParser(prog="promptloop dev")
    agentfield.register(parser.add_subparsers(dest="part"))

    def run(*argv: str) -> int:
        args = parser.parse_args(["agentfield", *argv])
        code: int = args.func(args)
        return code

    monkeypatch.setenv("PROMPTLOOP_CLUSTER_DIR", str(tmp_path))
    try:
        assert run("up") == 0
        handle = read_handle(tmp_path)
        assert handle is not None
        out = capsys.readouterr().out
        assert "STAND-IN" in out and "refused" in out
        assert handle.token not in out
        assert run("up") == 0
        assert "already running" in capsys.readouterr().out
    finally:
        assert run("down") == 0
    assert read_handle(tmp_path) is None
    assert "stopped" in capsys.readouterr().out
    assert run("down") == 0
    assert "none running" in capsys.readouterr().out
