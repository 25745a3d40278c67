"""Test harness for the operator on the real API server.

- :class:`AgentSim` plays the agents: it registers versions in AgentField (the stand-in), keeps
  their heartbeats fresh, sends traffic split by the weights it reads back from AgentField's
  connector (what a weight-honouring router would do), fails each version at a scripted rate,
  and serves the cumulative counters as the ``http`` metrics provider's endpoint.
- :class:`OperatorProcess` runs ``promptloop operator`` as a subprocess under the ServiceAccount
  and ClusterRole in ``manifests/`` (RBAC is exercised for real), and can SIGKILL it.

Nothing here sleeps in place of a condition: :func:`wait_for` polls a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

from devenv.procs import free_port

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
PROMPTLOOP = str(Path(sys.executable).parent / "promptloop")


def wait_for(
    condition: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except Exception as error:  # a condition may race an object being created
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


@dataclass
class VersionSim:
    """One simulated agent version."""

    version: str
    failure_rate: float
    total: int = 0
    failed: int = 0
    carry: float = 0.0
    heartbeat: bool = True


@dataclass
class AgentSim:
    """Simulated agents of one AgentField node, with a metrics endpoint."""

    agentfield_url: str
    token: str
    node_id: str
    requests_per_tick: int = 40
    tick_seconds: float = 0.1
    versions: dict[str, VersionSim] = field(default_factory=dict)
    honour_weights: bool = True
    serving: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                version = unquote(self.path.rsplit("/", 1)[-1])
                with sim.lock:
                    found = sim.versions.get(version)
                    body = {"total": found.total, "failed": found.failed} if found else None
                if not sim.serving:
                    self.send_response(503)
                    self.end_headers()
                    return
                payload = json.dumps(body or {"total": 0, "failed": 0}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.metrics_url = (
            f"http://127.0.0.1:{self.server.server_address[1]}/counts/{{{{ version }}}}"
        )
        self._threads = [
            threading.Thread(target=self.server.serve_forever, daemon=True),
            threading.Thread(target=self._traffic, daemon=True),
            threading.Thread(target=self._heartbeats, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- AgentField --------------------------------------------------------------------------

    def register(self, version: str, failure_rate: float) -> None:
        """Register (or re-register) a version as the SDK does; its weight resets to 100."""
        now = datetime.now(UTC).isoformat()
        _http(
            "POST",
            f"{self.agentfield_url}/api/v1/nodes/register",
            {
                "id": self.node_id,
                "team_id": "default",
                "base_url": f"http://127.0.0.1:1/{version}",
                "version": version,
                "reasoners": [{"id": "classify"}],
                "skills": [],
                "instance_id": f"{version}-instance",
                "health_status": "active",
                "last_heartbeat": now,
                "registered_at": now,
            },
        )
        with self.lock:
            sim = self.versions.setdefault(version, VersionSim(version, failure_rate))
            sim.failure_rate = failure_rate
            sim.heartbeat = True

    def stop_heartbeat(self, version: str) -> None:
        """The version's process stopped (its heartbeat goes stale)."""
        with self.lock:
            if version in self.versions:
                self.versions[version].heartbeat = False

    def weights(self) -> dict[str, int]:
        """Raw weights as AgentField's connector reports them (de-duplicated)."""
        listing = _http(
            "GET",
            f"{self.agentfield_url}/api/v1/connector/reasoners/{self.node_id}/versions",
            headers={"X-Connector-Token": self.token},
        )
        return {entry["version"]: entry["traffic_weight"] for entry in listing["versions"]}

    def _heartbeats(self) -> None:
        while not self._stop.wait(1.0):
            with self.lock:
                beating = [v.version for v in self.versions.values() if v.heartbeat]
            for version in beating:
                with contextlib.suppress(OSError):
                    _http(
                        "POST",
                        f"{self.agentfield_url}/api/v1/nodes/{self.node_id}/heartbeat",
                        {
                            "status": "ready",
                            "version": version,
                            "instance_id": f"{version}-i",
                            "timestamp": datetime.now(UTC).isoformat(),
                        },
                    )

    # -- traffic ----------------------------------------------------------------------------

    def _traffic(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                weights = self.weights()
            except OSError:
                continue
            with self.lock:
                live = {v: w for v, w in weights.items() if v in self.versions}
                if not live:
                    continue
                effective = {v: (w if w > 0 else 100) for v, w in live.items()}
                if not self.honour_weights:
                    # AgentField's execute path: every call goes to the smallest version.
                    first = min(effective)
                    effective = {v: (1 if v == first else 0) for v in effective}
                total_weight = sum(effective.values())
                for version, weight in effective.items():
                    sim = self.versions[version]
                    share = self.requests_per_tick * weight / total_weight + sim.carry
                    n = int(share)
                    sim.carry = share - n
                    failed_exact = n * sim.failure_rate
                    failed = int(failed_exact + 0.5)
                    sim.total += n
                    sim.failed += min(failed, n)

    def close(self) -> None:
        """Stop traffic, heartbeats and the metrics server."""
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


class OperatorProcess:
    """``promptloop operator`` in a subprocess under the operator's ServiceAccount."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        namespace: str,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.extra_env = env or {}
        self.namespace = namespace
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.liveness_port = 0
        self.metrics_port = 0

    def start(self) -> None:
        """Start, and wait until the liveness endpoint answers."""
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), **self.extra_env)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                PROMPTLOOP,
                "operator",
                "--namespace",
                self.namespace,
                "--liveness-address",
                "127.0.0.1",
                "--liveness-port",
                str(self.liveness_port),
                "--metrics-address",
                "127.0.0.1",
                "--metrics-port",
                str(self.metrics_port),
                "--fast-router-retries",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()

        def alive() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1
                ) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(alive, timeout=30, what="the operator's liveness endpoint")

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a node failure."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 60) -> str:
        """The end of the operator's log, for failure messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        """The whole log (tests assert the token never appears in it)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def service_account_kubeconfig(
    kube: Any,
    path: Path,
    *,
    account: str = "promptloop-operator",
    namespace: str = "promptloop-system",
    duration: str = "4h",
) -> Path:
    """Write a kubeconfig that authenticates as a ServiceAccount, by a TokenRequest token.

    ``kube`` is the admin :class:`tests.conftest.KubeCluster`; the server and CA come from its
    kubeconfig, so this works against any cluster the tests run on.
    """
    import base64

    import yaml

    token = kube.kubectl(
        "create", "token", account, "-n", namespace, f"--duration={duration}"
    ).stdout.strip()
    admin = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = admin["clusters"][0]["cluster"]
    ca = cluster.get("certificate-authority-data")
    if ca is None:
        ca = base64.b64encode(Path(cluster["certificate-authority"]).read_bytes()).decode()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": cluster["server"], "certificate-authority-data": ca},
                    }
                ],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": account}}],
                "current-context": "c",
            }
        )
    )
    return path
