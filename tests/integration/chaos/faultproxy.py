"""A fault-injecting HTTP proxy between the operator and one dependency (AgentField, a metrics
endpoint, a model endpoint).

Why our own rather than toxiproxy: the faults the issue names are mostly HTTP-level (5xx bursts,
non-JSON and truncated bodies, a 403 after a token rotation, counters that go backwards or make no
sense), which a TCP proxy cannot produce; the TCP-level ones (latency, resets, hangs) are a few
lines here. The proxy counts every request it receives, so a test can tell a retry storm from a
client that backs off.

The rollout's spec points at the proxy; the proxy forwards to the real upstream unless a fault is
set. Faults are switched at runtime with :meth:`FaultProxy.inject` / :meth:`FaultProxy.clear`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FAULTS", "Fault", "FaultProxy"]


@dataclass(frozen=True)
class Fault:
    """One kind of misbehaviour.

    kind: ``latency`` (forward after ``seconds``), ``status`` (answer ``status`` with ``body``
    without forwarding), ``reset`` (close the connection with a TCP RST), ``hang`` (read the
    request, never answer until the fault ends), ``truncate`` (forward, then cut the body short
    of its Content-Length and close), ``body`` (answer 200 with ``body``), ``rewrite`` (forward
    and pass the request path and the upstream's JSON through ``transform``), ``header``
    (forward with header ``name`` replaced by ``value``: a rotated token).
    """

    kind: str
    seconds: float = 0.0
    status: int = 200
    body: bytes = b""
    transform: Callable[[str, Any], Any] | None = None
    name: str = ""
    value: str = ""


FAULTS: dict[str, Fault] = {
    "latency spike": Fault("latency", seconds=1.5),
    "5xx burst": Fault("status", status=503, body=b'{"error":"service unavailable"}'),
    "connection reset": Fault("reset"),
    "timeout (hang)": Fault("hang"),
    "truncated body": Fault("truncate"),
    "non-JSON body": Fault("body", body=b"<html><body>502 Bad Gateway</body></html>"),
}


class _QuietServer(ThreadingHTTPServer):
    """Clients killed mid-request (the SIGKILL tests) reset their connections: expected here,
    so not printed as tracebacks."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class FaultProxy:
    """A proxy on 127.0.0.1 in front of ``upstream`` (an http:// base URL)."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.fault: Fault | None = None
        self.requests = 0
        self.by_path: dict[str, int] = {}
        # Every write (PUT/POST/PATCH/DELETE) that reached the proxy: (monotonic time, method,
        # path, body, the status the client received) — the router-write log of the kill tests.
        self.writes: list[tuple[float, str, str, bytes, int]] = []
        self._lock = threading.Lock()
        self._cleared = threading.Event()
        self._cleared.set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    proxy.requests += 1
                    key = f"{self.command} {self.path.split('?')[0]}"
                    proxy.by_path[key] = proxy.by_path.get(key, 0) + 1
                    fault = proxy.fault
                proxy._serve(self, body, fault)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _any

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    # -- control ---------------------------------------------------------------------------

    def inject(self, fault: Fault) -> int:
        """Start a fault; returns the request count at that moment."""
        with self._lock:
            self.fault = fault
            self._cleared.clear()
            return self.requests

    def clear(self) -> int:
        """End the fault (hung requests are released); returns the request count."""
        with self._lock:
            self.fault = None
            self._cleared.set()
            return self.requests

    def count(self) -> int:
        """Requests received so far."""
        with self._lock:
            return self.requests

    def close(self) -> None:
        """Stop serving."""
        self.clear()
        self.server.shutdown()
        self.server.server_close()

    # -- serving ---------------------------------------------------------------------------

    def _forward(
        self, handler: BaseHTTPRequestHandler, body: bytes, fault: Fault | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {
            k: v for k, v in handler.headers.items() if k.lower() not in ("host", "connection")
        }
        if fault is not None and fault.kind == "header":
            headers = {k: v for k, v in headers.items() if k.lower() != fault.name.lower()}
            headers[fault.name] = fault.value
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            conn.request(handler.command, handler.path, body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def _serve(self, handler: BaseHTTPRequestHandler, body: bytes, fault: Fault | None) -> None:
        kind = fault.kind if fault else None
        if kind == "reset":
            sock: socket.socket = handler.connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.close_connection = True
            with contextlib.suppress(OSError):
                sock.close()
            return
        if kind == "hang":
            self._cleared.wait(timeout=120)
            handler.close_connection = True
            return
        if kind == "status" or kind == "body":
            assert fault is not None
            self._reply(handler, fault.status, [("Content-Type", "application/json")], fault.body)
            return
        if kind == "latency":
            assert fault is not None
            time.sleep(fault.seconds)
        try:
            status, headers, payload = self._forward(handler, body, fault)
        except OSError:
            self._reply(handler, 502, [], b"upstream unreachable")
            return
        if kind == "rewrite" and fault is not None and fault.transform is not None:
            with contextlib.suppress(ValueError):
                payload = json.dumps(fault.transform(handler.path, json.loads(payload))).encode()
        if kind == "truncate" and len(payload) > 1:
            handler.send_response(status)
            for name, value in headers:
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload[: len(payload) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if handler.command != "GET":
            with self._lock:
                self.writes.append((time.monotonic(), handler.command, handler.path, body, status))
        self._reply(handler, status, headers, payload)

    @staticmethod
    def _reply(
        handler: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], payload: bytes
    ) -> None:
        handler.send_response(status)
        for name, value in headers:
            if name.lower() not in (
                "content-length",
                "transfer-encoding",
                "connection",
                "date",
                "server",
            ):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
