"""A local notification receiver for tests: checks signatures, counts deliveries, can fail.

It plays both a generic webhook endpoint (``/webhook``: the signature header must verify under
its key, or it answers 401 and counts the delivery as rejected) and a Slack incoming webhook
(``/slack``: a JSON object with ``text``). Its checks are written from the contract in README
("Notifications"), independently of the sender's code: HMAC-SHA256 of the raw body bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Delivery", "NotificationReceiver"]


@dataclass
class Delivery:
    """One request the receiver accepted."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes


@dataclass
class NotificationReceiver:
    """An HTTP server on 127.0.0.1 that records signed deliveries.

    Parameters
    ----------
    key
        The HMAC key webhook deliveries must be signed with.
    fail_first
        Answer ``fail_status`` to this many requests before accepting any.
    """

    key: str
    fail_first: int = 0
    fail_status: int = 503
    accepted: list[Delivery] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                code, why = receiver._handle(self.path, dict(self.headers.items()), raw)
                payload = json.dumps({"ok": code == 200, "why": why}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, str]:
        with self.lock:
            self.requests += 1
            if self.requests <= self.fail_first:
                return self.fail_status, "scripted failure"
            try:
                body = json.loads(raw)
            except ValueError:
                self.rejected.append((path, "not JSON"))
                return 400, "not JSON"
            if path == "/webhook":
                expected = "sha256=" + hmac.new(self.key.encode(), raw, hashlib.sha256).hexdigest()
                # Looked up with the case the notifier sends, as a strict receiver would: the
                # notifier's client must keep header names as written (aiohttp lower-cases them,
                # which is why routers/transport.py serves AgentField only).
                given = headers.get("X-Promptloop-Signature-256", "")
                if not hmac.compare_digest(expected, given):
                    self.rejected.append((path, "bad signature"))
                    return 401, "bad signature"
            elif path == "/slack":
                if not isinstance(body, dict) or not isinstance(body.get("text"), str):
                    self.rejected.append((path, "no text"))
                    return 400, "no text"
            else:
                self.rejected.append((path, "unknown path"))
                return 404, "unknown path"
            self.accepted.append(Delivery(path, headers, body, raw))
            return 200, "accepted"

    def deliveries(self, path: str = "/webhook", event: str | None = None) -> list[Delivery]:
        """Accepted deliveries to ``path``, of ``event`` if given (webhook bodies only)."""
        with self.lock:
            found = [d for d in self.accepted if d.path == path]
        if event is not None:
            found = [d for d in found if d.body.get("event") == event]
        return found

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
