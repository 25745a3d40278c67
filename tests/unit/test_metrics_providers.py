"""The metrics providers against small servers started here (a JSON endpoint, a Prometheus query
API) and the AgentField stand-in's memory: counters come back validated, and every failure is
MetricsUnavailable rather than a silent zero."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web

from devenv.agentfield_standin import RunningStandin, start_standin
from promptloop.api import (
    AgentFieldMemoryMetrics,
    HttpMetrics,
    MetricsSpec,
    PrometheusMetrics,
)
from promptloop.metrics.agentfield_memory import AgentFieldMemoryProvider, memory_key
from promptloop.metrics.base import Counters, MetricsUnavailable, render_version
from promptloop.metrics.http import HttpProvider
from promptloop.metrics.prometheus import PrometheusProvider, promql_string_escape
from promptloop.metrics.providers import provider_for

__all__: list[str] = []


@dataclass
class FakeServer:
    """An aiohttp server whose answers the test sets, and which records what it was asked."""

    url: str
    runner: web.AppRunner
    seen: list[web.Request] = field(default_factory=list)


# One TLS context for every client here: building one per client reads the CA bundle each time.
TLS = ssl.create_default_context()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=TLS) as shared:
        yield shared


async def serve(routes: list[web.RouteDef]) -> FakeServer:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return FakeServer(url=f"http://{host}:{port}", runner=runner)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------------------------------------
# base


def test_counters_are_validated() -> None:
    assert Counters(total=3, failed=1) == Counters(3, 1)
    for total, failed in [(-1, 0), (1, 2), (1.0, 0), (True, 0), (3, -1)]:
        with pytest.raises(ValueError):
            Counters(total=total, failed=failed)  # type: ignore[arg-type]


def test_render_version_tolerates_spacing_and_escapes() -> None:
    escape: Callable[[str], str] = lambda v: v.upper()  # noqa: E731
    assert render_version("a{{version}}b{{ version }}c{{  version  }}", "x", escape=escape) == (
        "aXbXcX"
    )
    # A backslash in the replacement is not a regex group reference.
    assert render_version("{{ version }}", r"1\g<0>", escape=lambda v: v) == r"1\g<0>"


# ---------------------------------------------------------------------------------------------
# http


@pytest.fixture
async def counters_endpoint() -> AsyncIterator[tuple[FakeServer, dict[str, Any]]]:
    """GET /counters/{version} answers answers[version] as (status, body)."""
    answers: dict[str, Any] = {}
    server_ref: list[FakeServer] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        server_ref[0].seen.append(request)
        status, body = answers.get(request.match_info["version"], (404, {"error": "no"}))
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    server = await serve([web.get("/counters/{version}", handler)])
    server_ref.append(server)
    try:
        yield server, answers
    finally:
        await server.runner.cleanup()


async def test_http_reads_counters_and_url_encodes_the_version(
    counters_endpoint: tuple[FakeServer, dict[str, Any]], client: httpx.AsyncClient
) -> None:
    server, answers = counters_endpoint
    answers["2.0.0+build.1"] = (200, {"total": 40, "failed": 3, "extra": "ignored"})
    provider = HttpProvider(f"{server.url}/counters/{{{{ version }}}}?x=1", client=client)
    assert await provider.read("2.0.0+build.1") == Counters(40, 3)
    assert "/counters/2.0.0%2Bbuild.1" in server.seen[-1].raw_path


@pytest.mark.parametrize(
    "answer",
    [
        (404, {"error": "no such version"}),
        (500, {"total": 1, "failed": 0}),
        (200, "not json"),
        (200, {"total": 1}),
        (200, {"total": 1.5, "failed": 0}),
        (200, {"total": 5, "failed": 6}),
        (200, {"total": -1, "failed": 0}),
        (200, {"total": True, "failed": False}),
        (200, [1, 0]),
    ],
)
async def test_http_anything_wrong_is_unavailable(
    counters_endpoint: tuple[FakeServer, dict[str, Any]],
    client: httpx.AsyncClient,
    answer: tuple[int, Any],
) -> None:
    server, answers = counters_endpoint
    answers["1.0.0"] = answer
    provider = HttpProvider(f"{server.url}/counters/{{{{ version }}}}", client=client)
    with pytest.raises(MetricsUnavailable):
        await provider.read("1.0.0")


async def test_http_unreachable_and_slow_are_unavailable(client: httpx.AsyncClient) -> None:
    provider = HttpProvider(f"http://127.0.0.1:{free_port()}/{{{{ version }}}}", client=client)
    with pytest.raises(MetricsUnavailable, match="unreachable"):
        await provider.read("1.0.0")

    release = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({"total": 0, "failed": 0})

    server = await serve([web.get("/{version}", hang)])
    try:
        slow = HttpProvider(f"{server.url}/{{{{ version }}}}", client=client, timeout=0.2)
        with pytest.raises(MetricsUnavailable, match="Timeout"):
            await slow.read("1.0.0")
    finally:
        release.set()
        await server.runner.cleanup()


# ---------------------------------------------------------------------------------------------
# agentfieldMemory (against the stand-in's memory API)


@pytest.fixture
async def standin() -> AsyncIterator[RunningStandin]:
    running = await start_standin(connector_token=None)
    try:
        yield running
    finally:
        await running.close()


async def memory_set(
    client: httpx.AsyncClient, url: str, key: str, data: Any, **extra: Any
) -> None:
    response = await client.post(
        f"{url}/api/v1/memory/set", json={"key": key, "data": data, **extra}
    )
    assert response.status_code == 200


async def test_memory_reads_global_counters(
    standin: RunningStandin, client: httpx.AsyncClient
) -> None:
    key = memory_key("promptloop.outcomes", "classifier", "2.1.0")
    assert key == "promptloop.outcomes.classifier.2.1.0"
    await memory_set(client, standin.url, key, {"total": 25, "failed": 4}, scope="global")
    provider = AgentFieldMemoryProvider(
        standin.url, node_id="classifier", key_prefix="promptloop.outcomes", client=client
    )
    assert await provider.read("2.1.0") == Counters(25, 4)
    # A version that has never written its key has served nothing yet: (0, 0), not an error.
    assert await provider.read("2.2.0") == Counters(0, 0)


async def test_memory_decodes_string_data_like_the_sdk(
    standin: RunningStandin, client: httpx.AsyncClient
) -> None:
    await memory_set(client, standin.url, "p.n.1", '{"total": 7, "failed": 7}', scope="global")
    provider = AgentFieldMemoryProvider(standin.url, node_id="n", key_prefix="p", client=client)
    assert await provider.read("1") == Counters(7, 7)


async def test_memory_counters_in_workflow_scope_are_not_seen(
    standin: RunningStandin, client: httpx.AsyncClient
) -> None:
    """An agent that writes without a scope inside a reasoner lands in its run's workflow scope
    (the SDK always sends X-Workflow-ID); the global read then finds nothing."""
    response = await client.post(
        f"{standin.url}/api/v1/memory/set",
        json={"key": "p.n.1", "data": {"total": 9, "failed": 1}},
        headers={"X-Workflow-ID": "run-1"},
    )
    assert response.json()["scope"] == "workflow"
    provider = AgentFieldMemoryProvider(standin.url, node_id="n", key_prefix="p", client=client)
    assert await provider.read("1") == Counters(0, 0)


@pytest.mark.parametrize("data", [{"total": 1}, {"total": 2, "failed": 3}, "oops", [1, 2], 5])
async def test_memory_malformed_values_are_unavailable(
    standin: RunningStandin, client: httpx.AsyncClient, data: Any
) -> None:
    await memory_set(client, standin.url, "p.n.1", data, scope="global")
    provider = AgentFieldMemoryProvider(standin.url, node_id="n", key_prefix="p", client=client)
    with pytest.raises(MetricsUnavailable):
        await provider.read("1")


async def test_memory_failures_are_unavailable(
    standin: RunningStandin, client: httpx.AsyncClient
) -> None:
    standin.state.fail_next("POST", "/memory/get$", status=500, body={"error": "storage_error"})
    provider = AgentFieldMemoryProvider(standin.url, node_id="n", key_prefix="p", client=client)
    with pytest.raises(MetricsUnavailable, match="HTTP 500"):
        await provider.read("1")
    # A 404 that is not the memory API's own not_found (a wrong URL) is not "zero".
    standin.state.fail_next("POST", "/memory/get$", status=404, body={"error": "page not found"})
    with pytest.raises(MetricsUnavailable, match="404"):
        await provider.read("1")
    down = AgentFieldMemoryProvider(
        f"http://127.0.0.1:{free_port()}", node_id="n", key_prefix="p", client=client
    )
    with pytest.raises(MetricsUnavailable, match="ConnectError"):
        await down.read("1")


async def test_memory_sends_the_api_key_and_never_shows_it(client: httpx.AsyncClient) -> None:
    seen: list[tuple[str | None, Any]] = []

    async def get(request: web.Request) -> web.StreamResponse:
        seen.append((request.headers.get("X-API-Key"), await request.json()))
        return web.json_response({"error": "unauthorized"}, status=401)

    server = await serve([web.post("/api/v1/memory/get", get)])
    try:
        provider = AgentFieldMemoryProvider(
            server.url, node_id="n", key_prefix="p", client=client, api_key="af-key-123"
        )
        with pytest.raises(MetricsUnavailable) as error:
            await provider.read("1")
        assert seen == [("af-key-123", {"key": "p.n.1", "scope": "global"})]
        assert "af-key-123" not in str(error.value) and "af-key-123" not in repr(provider)
    finally:
        await server.runner.cleanup()


# ---------------------------------------------------------------------------------------------
# prometheus


@pytest.fixture
async def prometheus() -> AsyncIterator[tuple[FakeServer, dict[str, Any]]]:
    """GET /api/v1/query answers answers[query] as (status, body); unknown queries are empty."""
    answers: dict[str, Any] = {}
    server_ref: list[FakeServer] = []

    async def query(request: web.Request) -> web.StreamResponse:
        server_ref[0].seen.append(request)
        default = (200, vector())
        status, body = answers.get(request.query["query"], default)
        return web.json_response(body, status=status)

    server = await serve([web.get("/api/v1/query", query)])
    server_ref.append(server)
    try:
        yield server, answers
    finally:
        await server.runner.cleanup()


def vector(*values: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"pod": f"p{i}"}, "value": [1700000000.0, v]}
                for i, v in enumerate(values)
            ],
        },
    }


TOTAL = 'sum(agent_requests_total{version="{{ version }}"})'
FAILED = 'sum(agent_requests_total{version="{{ version }}",outcome="failure"})'


def prom(server: FakeServer, client: httpx.AsyncClient, **kwargs: Any) -> PrometheusProvider:
    return PrometheusProvider(
        server.url, total_query=TOTAL, failed_query=FAILED, client=client, **kwargs
    )


async def test_prometheus_sums_series_at_one_instant(
    prometheus: tuple[FakeServer, dict[str, Any]], client: httpx.AsyncClient
) -> None:
    server, answers = prometheus
    answers['sum(agent_requests_total{version="2.1.0"})'] = (200, vector("30", "12.4"))
    answers['sum(agent_requests_total{version="2.1.0",outcome="failure"})'] = (200, vector("5"))
    assert await prom(server, client).read("2.1.0") == Counters(42, 5)
    times = {request.query["time"] for request in server.seen}
    assert len(times) == 1  # both queries evaluated at the same instant


async def test_prometheus_empty_result_is_zero(
    prometheus: tuple[FakeServer, dict[str, Any]], client: httpx.AsyncClient
) -> None:
    """An empty vector from a successful query: the series do not exist yet → 0."""
    server, _ = prometheus
    assert await prom(server, client).read("9.9.9") == Counters(0, 0)


async def test_prometheus_scalar_result(
    prometheus: tuple[FakeServer, dict[str, Any]], client: httpx.AsyncClient
) -> None:
    server, answers = prometheus
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "8"]}}
    answers['sum(agent_requests_total{version="1"})'] = (200, scalar)
    assert await prom(server, client).read("1") == Counters(8, 0)


@pytest.mark.parametrize(
    "answer",
    [
        (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
        (200, {"status": "error", "error": "query timed out"}),
        (503, {"status": "error"}),
        (200, vector("NaN")),
        (200, vector("+Inf")),
        (200, vector("-3")),
        (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}),
        (200, {"status": "success"}),
    ],
)
async def test_prometheus_failures_are_unavailable(
    prometheus: tuple[FakeServer, dict[str, Any]],
    client: httpx.AsyncClient,
    answer: tuple[int, Any],
) -> None:
    server, answers = prometheus
    answers['sum(agent_requests_total{version="1"})'] = answer
    with pytest.raises(MetricsUnavailable):
        await prom(server, client).read("1")


async def test_prometheus_inconsistent_counts_are_unavailable(
    prometheus: tuple[FakeServer, dict[str, Any]], client: httpx.AsyncClient
) -> None:
    server, answers = prometheus
    answers['sum(agent_requests_total{version="1"})'] = (200, vector("3"))
    answers['sum(agent_requests_total{version="1",outcome="failure"})'] = (200, vector("4"))
    with pytest.raises(MetricsUnavailable, match="exceeds"):
        await prom(server, client).read("1")


async def test_prometheus_unreachable_is_unavailable(client: httpx.AsyncClient) -> None:
    provider = PrometheusProvider(
        f"http://127.0.0.1:{free_port()}", total_query=TOTAL, failed_query=FAILED, client=client
    )
    with pytest.raises(MetricsUnavailable, match="ConnectError"):
        await provider.read("1")


async def test_promql_escaping(client: httpx.AsyncClient) -> None:
    assert promql_string_escape('a"b\\c') == 'a\\"b\\\\c'
    provider = PrometheusProvider("http://x", total_query=TOTAL, failed_query=FAILED, client=client)
    assert provider.query_for(TOTAL, '1"2') == 'sum(agent_requests_total{version="1\\"2"})'


# ---------------------------------------------------------------------------------------------
# the factory


async def test_provider_for_picks_the_configured_provider(client: httpx.AsyncClient) -> None:
    def make(spec: MetricsSpec) -> Any:
        return provider_for(spec, node_id="classifier", router_url="http://af:8080", client=client)

    prometheus = make(
        MetricsSpec(
            prometheus=PrometheusMetrics(url="http://p:9090", total_query="a", failed_query="b")
        )
    )
    assert isinstance(prometheus, PrometheusProvider)
    memory = make(MetricsSpec(agentfield_memory=AgentFieldMemoryMetrics()))
    assert isinstance(memory, AgentFieldMemoryProvider)
    assert memory.url == "http://af:8080"  # defaults to the router's URL
    assert memory.key_prefix == "promptloop.outcomes"
    own = make(MetricsSpec(agentfield_memory=AgentFieldMemoryMetrics(url="http://mem:1")))
    assert own.url == "http://mem:1"
    http = make(MetricsSpec(http=HttpMetrics(url="http://h/{{ version }}")))
    assert isinstance(http, HttpProvider)
    with pytest.raises(ValueError, match="exactly one"):
        make(MetricsSpec())
    with pytest.raises(ValueError, match="exactly one"):
        make(
            MetricsSpec(
                http=HttpMetrics(url="http://h/{{ version }}"),
                agentfield_memory=AgentFieldMemoryMetrics(),
            )
        )
    with pytest.raises(ValueError, match="router URL"):
        provider_for(
            MetricsSpec(agentfield_memory=AgentFieldMemoryMetrics()),
            node_id="n",
            router_url=None,
            client=client,
        )
