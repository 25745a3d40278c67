"""The AgentField connector client against the real stand-in over loopback: de-duplication,
the share arithmetic, read-back, re-assertion after a re-registration reset, the error taxonomy
with its retry rules, and that the connector token never leaks into an exception or a log line."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import traceback
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from devenv.agentfield_standin import RunningStandin, start_standin
from promptloop.routers.agentfield import AgentFieldConnector, RetryPolicy, parse_go_time
from promptloop.routers.base import (
    MIN_SHARE,
    ConnectorDisabled,
    RouterError,
    RouterForbidden,
    RouterUnavailable,
    UnknownVersion,
    effective_percentages,
    plan_shares,
    readback,
)

__all__: list[str] = []

TOKEN = "tok-9f8e7d6c5b4a-never-print-me"
FAST = RetryPolicy(attempts=3, backoff=(0.0,))
NODE = "classifier"
# One TLS context for every client in this module: building one per client reads the CA bundle
# each time (~60 ms), which is most of a test's cost.
TLS = ssl.create_default_context()


@pytest.fixture
async def shared() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=TLS) as client:
        yield client


@pytest.fixture
async def standin() -> AsyncIterator[RunningStandin]:
    running = await start_standin(connector_token=TOKEN)
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def connector(
    standin: RunningStandin, shared: httpx.AsyncClient
) -> AsyncIterator[AgentFieldConnector]:
    async with AgentFieldConnector(
        standin.url, TOKEN, client=shared, timeout=2.0, retry=FAST
    ) as connector:
        yield connector


async def register(standin: RunningStandin, *versions: str) -> None:
    async with httpx.AsyncClient(base_url=standin.url, verify=TLS) as client:
        for version in versions:
            response = await client.post(
                "/api/v1/nodes/register",
                json={"id": NODE, "version": version, "base_url": "http://127.0.0.1:9"},
            )
            assert response.status_code == 201


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------------------------------------
# the pure arithmetic


def test_plan_shares_gives_the_canary_its_percent_of_10000() -> None:
    assert plan_shares(stable="2.0.0", canary="2.1.0", canary_percent=5) == {
        "2.0.0": 9500,
        "2.1.0": 500,
    }
    assert plan_shares(stable="2.0.0", canary="2.1.0", canary_percent=50, others=["1.0.0"]) == {
        "2.0.0": 5000,
        "2.1.0": 5000,
        "1.0.0": MIN_SHARE,
    }


def test_plan_shares_never_writes_zero() -> None:
    # 100 % canary: stable is clamped to the minimum share, never 0 (0 would count as 100).
    assert plan_shares(stable="a", canary="b", canary_percent=100) == {"a": 1, "b": 10000}
    # No canary: stable gets everything, others the minimum.
    assert plan_shares(stable="a", canary=None, canary_percent=0, others=["c", "a"]) == {
        "a": 10000,
        "c": 1,
    }
    with pytest.raises(ValueError, match="scaling it to zero"):
        plan_shares(stable="a", canary="b", canary_percent=0)


@pytest.mark.parametrize(("canary", "percent"), [("b", -1), ("b", 101), (None, 5), ("a", 10)])
def test_plan_shares_rejects_impossible_splits(canary: str | None, percent: int) -> None:
    with pytest.raises(ValueError):
        plan_shares(stable="a", canary=canary, canary_percent=percent)


@given(st.integers(min_value=1, max_value=99))
def test_shares_round_trip_to_the_percent(percent: int) -> None:
    shares = plan_shares(stable="s", canary="c", canary_percent=percent)
    assert all(share >= 1 for share in shares.values())
    assert effective_percentages(shares)["c"] == pytest.approx(percent)


def test_effective_percentages_count_zero_as_100() -> None:
    """AgentField routes a weight <= 0 as 100 (execute.go:1591-1596)."""
    assert effective_percentages({"a": 0, "b": 100}) == {"a": 50.0, "b": 50.0}
    assert effective_percentages({}) == {}


def test_readback_orders_by_role_and_rounds() -> None:
    weights = readback({"1.0.0": 1, "2.1.0": 500, "2.0.0": 9500}, stable="2.0.0", canary="2.1.0")
    assert [(w.version, w.role, w.raw) for w in weights] == [
        ("2.0.0", "stable", 9500),
        ("2.1.0", "canary", 500),
        ("1.0.0", "other", 1),
    ]
    assert [w.percent for w in weights] == [94.99, 5.0, 0.01]


def test_parse_go_time() -> None:
    parsed = parse_go_time("2026-01-02T15:04:05.123456789Z")
    assert parsed is not None and parsed.microsecond == 123456
    assert parse_go_time("0001-01-01T00:00:00Z") is None  # Go's zero time
    assert parse_go_time("garbage") is None
    assert parse_go_time(None) is None


# ---------------------------------------------------------------------------------------------
# against the stand-in


async def test_list_versions_deduplicates(
    standin: RunningStandin, connector: AgentFieldConnector
) -> None:
    await register(standin, "2.1.0", "2.0.0")
    listed = await connector.list_versions(NODE)
    # The stand-in lists 2.0.0 twice (the GetAgent row, then by registered_at DESC).
    assert [v.version for v in listed] == ["2.0.0", "2.1.0"]
    assert listed[0].weight == 100
    assert listed[0].base_url == "http://127.0.0.1:9"
    assert listed[0].last_heartbeat is not None
    assert await connector.list_versions("nobody") == []


async def test_apply_weights_writes_shares_and_reads_back(
    standin: RunningStandin, connector: AgentFieldConnector
) -> None:
    await register(standin, "1.9.0", "2.0.0", "2.1.0")
    applied = await connector.apply_weights(
        NODE, stable="2.0.0", canary="2.1.0", canary_percent=5, others=[]
    )
    assert [(w.version, w.role, w.raw) for w in applied] == [
        ("2.0.0", "stable", 9500),
        ("2.1.0", "canary", 500),
        ("1.9.0", "other", 1),  # registered but not named: held at the minimum share
    ]
    assert applied[1].percent == pytest.approx(500 / 10001 * 100, abs=0.01)
    assert {v.version: v.weight for v in await connector.list_versions(NODE)} == {
        "1.9.0": 1,
        "2.0.0": 9500,
        "2.1.0": 500,
    }


async def test_a_pass_listing_in_hand_costs_one_read_when_nothing_changed(
    standin: RunningStandin, connector: AgentFieldConnector
) -> None:
    """With the versions the pass already listed, an unchanged split is neither written nor
    read again; a changed one (a reset by re-registration) is written and read back afresh."""
    await register(standin, "2.0.0", "2.1.0")
    await connector.apply_weights(NODE, stable="2.0.0", canary="2.1.0", canary_percent=20)
    listed = await connector.list_versions(NODE)
    before = standin.state.connector_served_total
    applied = await connector.apply_weights(
        NODE, stable="2.0.0", canary="2.1.0", canary_percent=20, current=listed
    )
    assert standin.state.connector_served_total == before
    assert {w.version: w.raw for w in applied} == {"2.0.0": 8000, "2.1.0": 2000}
    await register(standin, "2.0.0")  # the stable restarted: AgentField resets it to 100
    listed = await connector.list_versions(NODE)
    before = standin.state.connector_served_total
    applied = await connector.apply_weights(
        NODE, stable="2.0.0", canary="2.1.0", canary_percent=20, current=listed
    )
    assert {w.version: w.raw for w in applied} == {"2.0.0": 8000, "2.1.0": 2000}
    # Something changed: every share is written (two PUTs), then read back once.
    assert standin.state.connector_served_total - before == 3


async def test_reregistration_reset_is_reasserted(
    standin: RunningStandin, connector: AgentFieldConnector
) -> None:
    """Re-registration resets a version to 100; the next apply writes every share again."""
    await register(standin, "2.0.0", "2.1.0")
    await connector.apply_weights(NODE, stable="2.0.0", canary="2.1.0", canary_percent=20)
    await register(standin, "2.1.0")  # the challenger restarted
    reset = {v.version: v.weight for v in await connector.list_versions(NODE)}
    assert reset["2.1.0"] == 100
    applied = await connector.apply_weights(NODE, stable="2.0.0", canary="2.1.0", canary_percent=20)
    assert {w.version: w.raw for w in applied} == {"2.0.0": 8000, "2.1.0": 2000}
    # Same request twice: still written twice (nothing is cached as "already applied").
    puts_before = standin.state.count("PUT", "/weight$")
    await connector.apply_weights(NODE, stable="2.0.0", canary="2.1.0", canary_percent=20)
    assert standin.state.count("PUT", "/weight$") == puts_before + 2


async def test_stepping_down_lowers_the_canary_first(
    standin: RunningStandin, connector: AgentFieldConnector
) -> None:
    await register(standin, "2.0.0", "2.1.0")
    await connector.apply_weights(NODE, stable="2.0.0", canary="2.1.0", canary_percent=40)
    standin.state.requests.clear()
    await connector.apply_weights(NODE, stable="2.0.0", canary="2.1.0", canary_percent=10)
    puts = [path for method, path, _ in standin.state.requests if method == "PUT"]
    assert puts[0].endswith("/2.1.0/weight")
    assert puts[1].endswith("/2.0.0/weight")


async def test_no_canary_gives_stable_everything(
    standin: RunningStandin, connector: AgentFieldConnector
) -> None:
    await register(standin, "2.0.0", "2.1.0")
    applied = await connector.apply_weights(NODE, stable="2.0.0", canary=None, canary_percent=0)
    assert {w.version: (w.raw, w.role) for w in applied} == {
        "2.0.0": (10000, "stable"),
        "2.1.0": (1, "other"),
    }


async def test_zero_percent_is_refused_before_any_request(
    standin: RunningStandin, connector: AgentFieldConnector
) -> None:
    await register(standin, "2.0.0", "2.1.0")
    standin.state.requests.clear()
    with pytest.raises(ValueError):
        await connector.apply_weights(NODE, stable="2.0.0", canary="2.1.0", canary_percent=0)
    assert not standin.state.requests


async def test_unknown_version_is_not_retried(
    standin: RunningStandin, connector: AgentFieldConnector
) -> None:
    """The stand-in answers 500 for an unknown version, like the control plane: that is
    UnknownVersion at once, not a retried 5xx."""
    await register(standin, "2.0.0")
    with pytest.raises(UnknownVersion, match=r"9\.9\.9"):
        await connector.set_weight(NODE, "9.9.9", 100)
    assert standin.state.count("PUT", "/9.9.9/weight$") == 1
    with pytest.raises(UnknownVersion, match="canary"):
        await connector.apply_weights(NODE, stable="2.0.0", canary="9.9.9", canary_percent=5)
    with pytest.raises(UnknownVersion, match="stable"):
        await connector.apply_weights(NODE, stable="3.0.0", canary="2.0.0", canary_percent=5)


async def test_403_is_forbidden_without_retries(
    standin: RunningStandin, shared: httpx.AsyncClient
) -> None:
    async with AgentFieldConnector(standin.url, "wrong-token", client=shared, retry=FAST) as wrong:
        with pytest.raises(RouterForbidden, match="403"):
            await wrong.list_versions(NODE)
    assert standin.state.count("GET", "/versions$") == 1


async def test_disabled_capability_is_forbidden(shared: httpx.AsyncClient) -> None:
    running = await start_standin(connector_token=TOKEN, capabilities={})
    try:
        async with AgentFieldConnector(running.url, TOKEN, client=shared, retry=FAST) as connector:
            with pytest.raises(RouterForbidden, match="capability_disabled"):
                await connector.list_versions(NODE)
            assert (await connector.manifest())["capabilities"] == {}
    finally:
        await running.close()


async def test_5xx_is_retried_then_succeeds(
    standin: RunningStandin, connector: AgentFieldConnector
) -> None:
    await register(standin, "2.0.0")
    standin.state.fail_next("GET", "/versions$", status=503, times=2)
    assert [v.version for v in await connector.list_versions(NODE)] == ["2.0.0"]
    assert standin.state.count("GET", "/versions$") == 3


async def test_persistent_5xx_is_unavailable_after_bounded_retries(
    standin: RunningStandin, connector: AgentFieldConnector
) -> None:
    standin.state.fail_next("GET", "/versions$", status=502, times=10)
    with pytest.raises(RouterUnavailable, match="after 3 attempts"):
        await connector.list_versions(NODE)
    assert standin.state.count("GET", "/versions$") == 3


async def test_unreachable_is_unavailable() -> None:
    # This connector builds (and closes) its own client.
    unreachable = f"http://127.0.0.1:{free_port()}"
    async with AgentFieldConnector(unreachable, TOKEN, retry=FAST) as connector:
        with pytest.raises(RouterUnavailable, match="ConnectError"):
            await connector.list_versions(NODE)


async def test_every_call_is_bounded_by_the_timeout(shared: httpx.AsyncClient) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/v1/connector/reasoners/{id}/versions", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        policy = RetryPolicy(attempts=2, backoff=(0.0,))
        async with AgentFieldConnector(
            f"http://{host}:{port}", TOKEN, timeout=0.2, client=shared, retry=policy
        ) as r:
            with pytest.raises(RouterUnavailable, match="ReadTimeout"):
                await r.list_versions(NODE)
    finally:
        release.set()
        await runner.cleanup()


async def test_connector_disabled_is_a_clear_error(shared: httpx.AsyncClient) -> None:
    running = await start_standin(connector_token=None)
    try:
        async with AgentFieldConnector(running.url, TOKEN, client=shared, retry=FAST) as connector:
            with pytest.raises(ConnectorDisabled, match="connector is not enabled"):
                await connector.manifest()
            # Not "nothing registered": the 404 body says endpoint_not_found, not agent not found.
            with pytest.raises(ConnectorDisabled):
                await connector.list_versions("classifier")
    finally:
        await running.close()


async def test_an_unregistered_node_is_no_versions_not_a_disabled_connector(
    standin: RunningStandin, shared: httpx.AsyncClient
) -> None:
    async with AgentFieldConnector(standin.url, TOKEN, client=shared, retry=FAST) as connector:
        assert await connector.list_versions("nobody-registered-this") == []


async def test_the_token_never_leaks(
    standin: RunningStandin, caplog: pytest.LogCaptureFixture, shared: httpx.AsyncClient
) -> None:
    """Trigger every error class (and a body that echoes the token) and look for the token in
    str, repr, formatted tracebacks and every captured log record, httpx's included."""
    caplog.set_level(logging.DEBUG)
    await register(standin, "2.0.0")
    errors: list[BaseException] = []

    async with AgentFieldConnector(standin.url, TOKEN, client=shared, retry=FAST) as connector:
        assert TOKEN not in repr(connector)
        await connector.apply_weights(NODE, stable="2.0.0", canary=None, canary_percent=0)
        standin.state.fail_next("*", "/versions$", status=500, times=3, body={"error": TOKEN})
        with pytest.raises(RouterUnavailable) as unavailable:
            await connector.list_versions(NODE)
        errors.append(unavailable.value)
        with pytest.raises(UnknownVersion) as unknown:
            await connector.set_weight(NODE, "9.9.9", 5)
        errors.append(unknown.value)
        standin.state.fail_next("*", "/manifest$", status=404, body={"error": f"no {TOKEN}"})
        with pytest.raises(RouterError) as not_found:
            await connector.manifest()
        errors.append(not_found.value)
        standin.state.fail_next("*", "/manifest$", status=403, body={"message": TOKEN})
        with pytest.raises(RouterForbidden) as forbidden:
            await connector.manifest()
        errors.append(forbidden.value)
    async with AgentFieldConnector(
        f"http://127.0.0.1:{free_port()}", TOKEN, client=shared, retry=FAST
    ) as down:
        with pytest.raises(RouterUnavailable) as unreachable:
            await down.list_versions(NODE)
        errors.append(unreachable.value)

    for error in errors:
        for text in (str(error), repr(error), "".join(traceback.format_exception(error))):
            assert TOKEN not in text
    assert "***" in str(unavailable.value)  # the echoed token was redacted
    assert caplog.records, "expected log records (retries, httpx) to inspect"
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert TOKEN not in str(record.args)
