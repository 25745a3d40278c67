"""The AgentField connector's client over aiohttp keeps what the connector relies on from httpx.

The connector (routers/agentfield.py) retries on ``httpx.TransportError`` and reads JSON bodies;
operators behind a proxy set ``HTTPS_PROXY``/``NO_PROXY``, which httpx's own client honoured.
Each test talks to a real local HTTP server; none could pass if the transport dropped one of these.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from promptloop.routers.agentfield import AgentFieldConnector, RetryPolicy
from promptloop.routers.base import RouterUnavailable
from promptloop.routers.transport import connector_client


class Recorder(ThreadingHTTPServer):
    """Answers every GET with ``answer`` (default ``{"path": ...}``) after ``delay`` seconds;
    keeps the path and headers of what it saw."""

    def __init__(self, delay: float = 0.0, answer: dict[str, Any] | None = None) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.release = threading.Event()
        self.delay = delay
        self.answer = answer
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if server.delay:
                    server.release.wait(server.delay)
                body = json.dumps(server.answer or {"path": self.path}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up first (the timeout test)
                    pass

            def log_message(self, *_: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@contextlib.contextmanager
def serving(server: Recorder) -> Iterator[Recorder]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with serving(Recorder()) as server:
        yield server


def proxy_environment(
    monkeypatch: pytest.MonkeyPatch, proxy: str | None, no_proxy: str | None
) -> None:
    # Lower-case names win over upper-case ones (urllib.request.getproxies_environment): set
    # ours in both spellings so a proxy configured on the machine cannot leak into the test.
    for name, value in (("http_proxy", proxy), ("no_proxy", no_proxy)):
        for spelling in (name, name.upper()):
            if value is None:
                monkeypatch.delenv(spelling, raising=False)
            else:
                monkeypatch.setenv(spelling, value)


@pytest.fixture(autouse=True)
def no_machine_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every client here is built after this: only the proxies a test sets apply to it.
    proxy_environment(monkeypatch, None, None)
    monkeypatch.delenv("all_proxy", raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_reads_json_and_sends_the_token_header(recorder: Recorder) -> None:
    async with connector_client() as client:
        response = await client.get(
            f"{recorder.url}/api/v1/nodes", headers={"X-Connector-Token": "t0k"}
        )
        assert response.status_code == 200
        assert response.json() == {"path": "/api/v1/nodes"}
    assert recorder.seen[0][1]["x-connector-token"] == "t0k"


async def test_a_refused_connection_is_an_httpx_transport_error() -> None:
    # The connector's retry loop catches httpx.TransportError (agentfield.py); an aiohttp
    # exception leaking through would end the pass with a traceback instead of a retry.
    async with connector_client() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{free_port()}/x")


async def test_a_slow_answer_is_an_httpx_timeout() -> None:
    with serving(Recorder(delay=5.0)) as server:
        async with connector_client() as client:
            with pytest.raises(httpx.TimeoutException):
                await client.get(f"{server.url}/slow", timeout=0.2)


async def test_a_dropped_connection_is_an_httpx_transport_error() -> None:
    # A server that accepts and closes without answering (a crashing AgentField pod).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def hang_up() -> None:
            # Every connection: aiohttp retries an idempotent request once on a fresh one.
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:  # the listener closed: the test is over
                    return
                connection.recv(65536)
                connection.close()

        threading.Thread(target=hang_up, daemon=True).start()
        async with connector_client() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(f"http://127.0.0.1:{port}/x")


async def test_the_proxy_from_the_environment_is_used(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx's own client honours HTTP(S)_PROXY; the aiohttp client must too, or an operator
    # behind a proxy loses AgentField on upgrade. The recorder plays the proxy: it receives the
    # absolute URL of a host that does not resolve.
    proxy_environment(monkeypatch, recorder.url, None)
    async with connector_client() as client:
        response = await client.get("http://agentfield.invalid/api/v1/nodes")
    assert response.status_code == 200
    assert recorder.seen[0][0] == "http://agentfield.invalid/api/v1/nodes"


async def test_no_proxy_hosts_are_reached_directly(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(Recorder()) as proxy:
        proxy_environment(monkeypatch, proxy.url, "localhost,127.0.0.1")
        async with connector_client() as client:
            direct = await client.get(f"{recorder.url}/direct")
            proxied = await client.get("http://agentfield.invalid/proxied")
        assert direct.json() == {"path": "/direct"}
        assert [path for path, _ in recorder.seen] == ["/direct"]
        assert proxied.status_code == 200
        assert [path for path, _ in proxy.seen] == ["http://agentfield.invalid/proxied"]


async def test_the_connector_lists_versions_through_it(recorder: Recorder) -> None:
    # Through the connector's own request path: token header out, JSON body parsed back.
    # Shape as AgentField's versions route answers it (see test_router_agentfield.py).
    recorder.answer = {
        "versions": [
            {"version": "1.0.0", "traffic_weight": 100, "health_status": "active"},
            {"version": "1.1.0", "traffic_weight": 5, "health_status": "active"},
        ]
    }
    async with connector_client() as client:
        connector = AgentFieldConnector(recorder.url, "t0k", client=client)
        listed = await connector.list_versions("agent-a")
    assert [(v.version, v.weight) for v in listed] == [("1.0.0", 100), ("1.1.0", 5)]
    assert recorder.seen[0][0] == "/api/v1/connector/reasoners/agent-a/versions"
    assert recorder.seen[0][1]["x-connector-token"] == "t0k"


async def test_the_connector_retries_a_refused_connection_then_says_unavailable() -> None:
    async with connector_client() as client:
        connector = AgentFieldConnector(
            f"http://127.0.0.1:{free_port()}",
            "t0k",
            client=client,
            retry=RetryPolicy(attempts=2, backoff=(0.01,)),
        )
        with pytest.raises(RouterUnavailable) as raised:
            await connector.list_versions("agent-a")
    assert "ConnectError" in str(raised.value)
    assert "t0k" not in str(raised.value)
