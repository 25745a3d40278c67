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
    # Send the traffic through the stand-in's execute route (POST /api/v1/execute/<node>.classify)
    # instead of splitting it here: AgentField then picks the version, as it does for real.
    via_execute: bool = False
    # A client that calls this version directly, bypassing the split (over-exposure, whatever
    # its cause: the operator judges the counters, not the router's promise).
    route_all_to: str | None = None
    # Where the split comes from (default: AgentField's connector). The Gateway API scenario
    # reads the HTTPRoute's weights back from the API server: there is no gateway data plane
    # here, so this driver splits by the route's read-back weights, named as such.
    weights_source: Callable[[], dict[str, int]] | None = None
    serving: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: Any) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _agent(self) -> tuple[VersionSim | None, str]:
                # Each version's own address: /agent/<version>/... (its AgentField base_url).
                _, _, version, *rest = self.path.split("/", 3)
                with sim.lock:
                    found = sim.versions.get(unquote(version))
                return (found if found is not None and found.heartbeat else None), (
                    "/" + rest[0] if rest else "/"
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                found, rest = self._agent() if self.path.startswith("/agent/") else (None, "")
                if found is None or rest != "/reasoners/classify":
                    self._answer(404, {"detail": "not found"})
                    return
                with sim.lock:
                    # The version counts its own requests and failures, as a real agent would.
                    found.total += 1
                    found.carry += found.failure_rate
                    failed = found.carry >= 1
                    if failed:
                        found.carry -= 1
                        found.failed += 1
                self._answer(200, {"version": found.version, "correct": not failed})

            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._exposition()
                    return
                if self.path.startswith("/agent/"):
                    found, rest = self._agent()
                    if found is None or rest != "/health":
                        self._answer(503 if rest == "/health" else 404, {"status": "down"})
                        return
                    self._answer(200, {"status": "healthy", "version": found.version})
                    return
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

            def _exposition(self) -> None:
                """The example classifier's counters, in Prometheus' text format, for a real
                Prometheus server to scrape (examples/classifier/classifier.py)."""
                with sim.lock:
                    rows = [(v.version, v.total, v.failed) for v in sim.versions.values()]
                lines = ["# TYPE classifier_requests_total counter"]
                lines += [f'classifier_requests_total{{version="{v}"}} {t}' for v, t, _ in rows]
                lines.append("# TYPE classifier_failures_total counter")
                lines += [
                    f'classifier_failures_total{{version="{v}",reason="miss"}} {f}'
                    for v, _, f in rows
                ]
                payload = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.metrics_url = f"{self.address}/counts/{{{{ version }}}}"
        # host:port of /metrics, the scrape target of a Prometheus server.
        self.scrape_target = f"127.0.0.1:{self.server.server_address[1]}"
        self._threads = [
            threading.Thread(target=self.server.serve_forever, daemon=True),
            threading.Thread(target=self._traffic, daemon=True),
            threading.Thread(target=self._heartbeats, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- AgentField --------------------------------------------------------------------------

    def register(self, version: str, failure_rate: float, *, base_url: str | None = None) -> None:
        """Register (or re-register) a version as the SDK does; its weight resets to 100.

        ``base_url`` is the callback URL the version advertises: by default its own address
        (``/agent/<version>``); "AgentField in front of a gateway" passes the route's address."""
        now = datetime.now(UTC).isoformat()
        _http(
            "POST",
            f"{self.agentfield_url}/api/v1/nodes/register",
            {
                "id": self.node_id,
                "team_id": "default",
                "base_url": base_url or self.version_url(version),
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

    def version_url(self, version: str) -> str:
        """Where this version's process answers (what a pod IP would be)."""
        return f"{self.address}/agent/{version}"

    def add_version(self, version: str, failure_rate: float) -> None:
        """A version that serves traffic without registering anywhere (a Gateway API backend)."""
        with self.lock:
            sim = self.versions.setdefault(version, VersionSim(version, failure_rate))
            sim.failure_rate = failure_rate

    def stop_heartbeat(self, version: str) -> None:
        """The version's process stopped: its heartbeat goes stale, its address stops answering."""
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
            if self.via_execute:
                self._execute_tick()
                continue
            try:
                weights = self.weights_source() if self.weights_source else self.weights()
            except Exception:
                continue
            with self.lock:
                live = {v: w for v, w in weights.items() if v in self.versions}
                if not live:
                    continue
                effective = {v: (w if w > 0 else 100) for v, w in live.items()}
                if self.route_all_to in effective:
                    effective = {v: (1 if v == self.route_all_to else 0) for v in effective}
                elif not self.honour_weights:
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

    def _execute_tick(self) -> None:
        """Calls through AgentField's execute route; whichever version it picks counts them."""
        url = f"{self.agentfield_url}/api/v1/execute/{self.node_id}.classify"
        for _ in range(self.requests_per_tick):
            if self._stop.is_set():
                return
            with contextlib.suppress(OSError, ValueError):
                _http("POST", url, {"input": {"text": "ticket"}})

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
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.extra_env = env or {}
        self.namespace = namespace
        self.log_path = log_path
        self.extra_args = extra_args
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
                *self.extra_args,
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


GATEWAY_ACCOUNT = "promptloop-operator-gateway"
_MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def kube_kubectl() -> str:
    """The kubectl the tests use (installed beside the interpreter)."""
    return str(Path(sys.executable).parent / "kubectl")


def gateway_operator_kubeconfig(kube: Any, path: Path) -> Path:
    """A ServiceAccount holding the operator's ClusterRole as manifests/gateway-api ships it."""
    import yaml

    rendered = subprocess.run(
        [
            kube_kubectl(),
            "kustomize",
            str(_MANIFESTS / "gateway-api"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    [role] = [
        o
        for o in yaml.safe_load_all(rendered)
        if o and o["kind"] == "ClusterRole" and o["metadata"]["name"] == "promptloop-operator"
    ]
    role["metadata"] = {"name": GATEWAY_ACCOUNT}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": GATEWAY_ACCOUNT},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": GATEWAY_ACCOUNT,
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": GATEWAY_ACCOUNT, "namespace": "promptloop-system"}
        ],
    }
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": GATEWAY_ACCOUNT, "namespace": "promptloop-system"},
    }
    kube.kubectl(
        "apply",
        "-f",
        str(_MANIFESTS / "base" / "namespace.yaml"),
    )
    for obj in (account, role, binding):
        kube.kubectl("apply", "-f", "-", stdin=json.dumps(obj))
    return service_account_kubeconfig(kube, path, account=GATEWAY_ACCOUNT)
