"""One TrafficRouter protocol: both backends implement it; the pure parts of each are pinned.

The Gateway API half is pure here (the rules arithmetic); writing to a real API server is in
tests/integration/test_gatewayapi_router.py. The AgentField half talks to the stand-in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from devenv.agentfield_standin import RunningStandin, start_standin
from promptloop.api import VersionWeight
from promptloop.k8s.client import ROUTER_FIELD_MANAGER
from promptloop.routers.agentfield import AgentFieldConnector, AgentFieldTraffic, RetryPolicy
from promptloop.routers.base import Split, TrafficRouter, weights_drifted
from promptloop.routers.gatewayapi import GatewayApiRouter, route_weights, set_weights

TOKEN = "protocol-token"
FAST = RetryPolicy(attempts=1, backoff=())


def test_both_backends_are_traffic_routers() -> None:
    # mypy --strict checks these assignments against the Protocol; the asserts pin the flags
    # the decision code relies on instead of the backend's name.
    agentfield: type[TrafficRouter] = AgentFieldTraffic
    gateway: type[TrafficRouter] = GatewayApiRouter
    assert (agentfield.drains_by_weight, agentfield.orders_by_version_string) == (False, True)
    assert (gateway.drains_by_weight, gateway.orders_by_version_string) == (True, False)
    assert (agentfield.kind, gateway.kind) == ("agentfield", "gatewayAPI")


def test_the_router_field_manager_is_the_one_argocd_is_told_to_ignore() -> None:
    # docs/gitops.md and manifests/argocd/application.yaml name this manager; renaming it would
    # put every GitOps user's Application out of sync.
    assert ROUTER_FIELD_MANAGER == "promptloop-router"
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert f"- {ROUTER_FIELD_MANAGER}" in (root / "docs/gitops.md").read_text()
    assert f"- {ROUTER_FIELD_MANAGER}" in (root / "manifests/argocd/application.yaml").read_text()


def _w(version: str, raw: int) -> VersionWeight:
    return VersionWeight(version=version, percent=0.0, raw=raw)


def test_drift_is_a_raw_difference_and_nothing_written_is_never_drift() -> None:
    written = [_w("2.0.0", 9000), _w("2.1.0", 1000)]
    assert not weights_drifted(written, [_w("2.1.0", 1000), _w("2.0.0", 9000)])
    assert weights_drifted(written, [_w("2.0.0", 9000), _w("2.1.0", 100)])  # re-registered
    assert weights_drifted(written, [_w("2.0.0", 9000)])  # a version vanished
    assert weights_drifted(written, [*written, _w("3.0.0", 100)])  # a newcomer
    assert not weights_drifted([], [_w("2.0.0", 100)])


RULES: list[dict[str, Any]] = [
    {
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": []}}],
        "backendRefs": [
            {"name": "classifier-stable", "port": 8000, "weight": 100},
            {"name": "classifier-canary", "port": 8000, "weight": 0},
        ],
    },
    {
        "matches": [{"path": {"type": "PathPrefix", "value": "/other"}}],
        "backendRefs": [{"name": "someone-else", "port": 80}],
    },
]


def test_set_weights_changes_only_the_two_weights() -> None:
    updated, both = set_weights(RULES, rollout="classifier", stable_weight=75, canary_weight=25)
    assert both == 1
    assert updated[0]["backendRefs"][0] == {"name": "classifier-stable", "port": 8000, "weight": 75}
    assert updated[0]["backendRefs"][1] == {"name": "classifier-canary", "port": 8000, "weight": 25}
    assert updated[0]["matches"] == RULES[0]["matches"]
    assert updated[0]["filters"] == RULES[0]["filters"]
    assert updated[1] == RULES[1]
    assert RULES[0]["backendRefs"][0]["weight"] == 100  # the input is not modified
    assert route_weights(updated, rollout="classifier") == (75, 25)


def test_route_weights_reads_the_gateway_api_default_and_needs_both_refs() -> None:
    rules = [{"backendRefs": [{"name": "r-stable"}, {"name": "r-canary"}]}]
    assert route_weights(rules, rollout="r") == (1, 1)  # weight defaults to 1
    assert route_weights([{"backendRefs": [{"name": "r-stable"}]}], rollout="r") is None
    # Another kind of backend with the same name is not our Service.
    other_kind = [{"backendRefs": [{"name": "r-stable"}, {"name": "r-canary", "kind": "Foo"}]}]
    assert route_weights(other_kind, rollout="r") is None
    _, both = set_weights(other_kind, rollout="r", stable_weight=100, canary_weight=0)
    assert both == 0


# -- AgentField readiness: registered, answering at its own address; heartbeat advisory -------


@pytest.fixture
async def standin() -> AsyncIterator[RunningStandin]:
    running = await start_standin(connector_token=TOKEN)
    try:
        yield running
    finally:
        await running.close()


async def _serve_health(status: int) -> tuple[str, web.AppRunner]:
    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, status=status)

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}", runner


async def _register(url: str, version: str, base_url: str) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{url}/api/v1/nodes/register",
            json={"id": "classifier", "version": version, "base_url": base_url},
        )
        assert answer.status_code == 201


async def test_readiness_tells_not_registered_probe_failed_and_ready(
    standin: RunningStandin,
) -> None:
    healthy, healthy_runner = await _serve_health(200)
    sick, sick_runner = await _serve_health(503)
    try:
        await _register(standin.url, "2.0.0", healthy)
        await _register(standin.url, "2.1.0", sick)
        await _register(standin.url, "2.2.0", "http://127.0.0.1:9")  # nothing listens there
        async with httpx.AsyncClient() as client:

            def traffic() -> AgentFieldTraffic:
                connector = AgentFieldConnector(standin.url, TOKEN, client=client, retry=FAST)
                return AgentFieldTraffic(connector, "classifier", client=client, probe_timeout=1.0)

            ready = await traffic().version_ready("2.0.0")
            assert (ready.ready, ready.reason) == (True, "Ready")
            assert "advisory" in ready.message
            sick_answer = await traffic().version_ready("2.1.0")
            assert (sick_answer.ready, sick_answer.reason) == (False, "ProbeFailed")
            assert "answered 503" in sick_answer.message
            dead = await traffic().version_ready("2.2.0")
            assert (dead.ready, dead.reason) == (False, "ProbeFailed")
            missing = await traffic().version_ready("9.9.9")
            assert (missing.ready, missing.reason) == (False, "NotRegistered")
    finally:
        await healthy_runner.cleanup()
        await sick_runner.cleanup()


async def test_readiness_tells_a_disabled_connector_from_an_unregistered_version() -> None:
    running = await start_standin(connector_token=None)
    try:
        async with httpx.AsyncClient() as client:
            connector = AgentFieldConnector(running.url, TOKEN, client=client, retry=FAST)
            traffic = AgentFieldTraffic(connector, "classifier", client=client)
            answer = await traffic.version_ready("2.0.0")
            assert (answer.ready, answer.reason) == (False, "ConnectorDisabled")
            assert "endpoint_not_found" in answer.message
    finally:
        await running.close()


async def test_a_zero_percent_canary_is_held_at_the_minimum_share_not_written_as_zero(
    standin: RunningStandin,
) -> None:
    await _register(standin.url, "2.0.0", "http://127.0.0.1:9")
    await _register(standin.url, "2.1.0", "http://127.0.0.1:9")
    async with httpx.AsyncClient() as client:
        connector = AgentFieldConnector(standin.url, TOKEN, client=client, retry=FAST)
        traffic = AgentFieldTraffic(connector, "classifier", client=client)
        weights = await traffic.apply(Split(stable="2.0.0", canary="2.1.0", canary_percent=0))
        raw = {w.version: w.raw for w in weights}
        assert raw == {"2.0.0": 10000, "2.1.0": 1}
        assert not weights_drifted(weights, await traffic.read())
