"""The chaos suite's fault-injecting proxy does what each fault says, as an HTTP client sees it
(tests/integration/chaos/faultproxy.py), and counts every request."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.integration.chaos.faultproxy import FAULTS, Fault, FaultProxy


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    class Upstream(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = json.dumps(
                {"total": 10, "failed": 1, "token": self.headers.get("X-Token", "")}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    fault_proxy = FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}")
    yield fault_proxy
    fault_proxy.close()
    upstream.shutdown()
    upstream.server_close()


def test_forwards_and_counts(proxy: FaultProxy) -> None:
    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(f"{proxy.url}/x", headers={"X-Token": "t"}).json()["token"] == "t"
    assert proxy.count() == 3
    assert proxy.by_path == {"GET /x": 3}


def test_status_and_non_json_bodies(proxy: FaultProxy) -> None:
    proxy.inject(FAULTS["5xx burst"])
    assert httpx.get(proxy.url).status_code == 503
    proxy.inject(FAULTS["non-JSON body"])
    response = httpx.get(proxy.url)
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    proxy.clear()
    assert httpx.get(proxy.url).json()["total"] == 10


def test_reset_truncate_and_hang_are_transport_errors(proxy: FaultProxy) -> None:
    proxy.inject(FAULTS["connection reset"])
    with pytest.raises(httpx.TransportError):
        httpx.get(proxy.url)
    proxy.inject(FAULTS["truncated body"])
    with pytest.raises(httpx.TransportError):
        httpx.get(proxy.url)
    proxy.inject(FAULTS["timeout (hang)"])
    with pytest.raises(httpx.TimeoutException):
        httpx.get(proxy.url, timeout=0.3)
    proxy.clear()
    assert httpx.get(proxy.url).status_code == 200


def test_rewrite_and_header(proxy: FaultProxy) -> None:
    proxy.inject(Fault("rewrite", transform=lambda _path, body: {**body, "failed": 99}))
    assert httpx.get(proxy.url).json()["failed"] == 99
    proxy.inject(Fault("header", name="X-Token", value="rotated"))
    assert httpx.get(proxy.url, headers={"X-Token": "old"}).json()["token"] == "rotated"
