"""``promptloop dev demo`` and ``promptloop dev demo-down``: the whole loop on one machine.

``demo`` sets up everything it needs and then runs the self-improvement loop end to end, saying
what it does at every step:

1. the example agent's own Python environment (``examples/classifier/.venv``, the ``agentfield``
   SDK; created once, reused while ``requirements.txt`` is unchanged);
2. the local Kubernetes control plane (built once and cached; a healthy one is reused and then
   left running), the AgentField **stand-in** (the real control plane cannot be built here), and
   the deterministic model **simulator**, or a real model when ``OPENAI_API_KEY`` is set
   (``OPENAI_BASE_URL`` and ``OPENAI_MODEL`` are honoured);
3. the CRDs, the operator's ServiceAccount and ClusterRole, and the operator itself, running
   under that ServiceAccount's token and watching only the demo namespace;
4. in the namespace ``promptloop-demo`` (re-created on every run): the connector-token Secret,
   the model-key Secret, the classifier Deployment at ``2.0.0`` and its AgentRollout;
5. the **process kubelet** (:mod:`devenv.kubelet`): there is no container runtime,
   so the demo runs, as local processes, the agents the Deployments describe, and prints the
   environment and the prompt it gives each one;
6. **traffic** (:mod:`devenv.traffic`): labelled tickets from
   ``examples/tickets/tickets.jsonl``, split by the weights read back from AgentField's
   connector (its execute route ignores weights; the driver says so); with ``--router gateway``
   the rollout uses ``spec.router.gatewayAPI`` instead, every version registers the route's
   address (``AGENT_CALLBACK_URL``), the tickets go through AgentField's execute route, and the
   split is done by :mod:`devenv.gateway_standin` (a stand-in for a gateway data plane) by the
   HTTPRoute's weights read back from the API server;
7. **the loop**: the agents record their misses in AgentField memory; once enough distinct misses
   of the stable version exist, ``promptloop improve --apply`` files a PromptProposal; the
   operator renders and canaries the challenger; at ``AwaitingApproval`` the demo prints the exact
   ``kubectl patch`` and waits for a person (``--auto-approve`` approves by itself); it ends when
   the proposal is ``Promoted`` and prints a summary (failure rates before and after, samples,
   decisions, tokens and cost, wall time), also written to ``<state dir>/summary.json``.

Exit codes: 0 only after ``Promoted``; 1 when the loop failed (the challenger was rolled back or
rejected, the improver failed, setup failed, or ``--timeout`` passed); 130 on Ctrl-C.

Ctrl-C (or SIGTERM) and the end stop every process the demo started, in order: traffic, agents,
operator, stand-in, simulator, and the control plane when the demo started it. The objects in the
namespace stay for inspection; ``demo-down`` removes them and anything a killed demo left behind
(it reads ``<state dir>/demo.json``, where the demo records every PID it starts, and stops
processes by PID only). State lives in ``.cluster/demo`` (``--state-dir``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import difflib
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from devenv import cluster
from devenv.gateway_standin import GatewayStandin
from devenv.kubelet import ProcessKubelet
from devenv.procs import free_port, runs, stop_pid
from devenv.traffic import TrafficDriver, VersionTally, load_tickets
from promptloop.constants import (
    GROUP,
    LABEL_ROLLOUT,
    PROPOSAL_PLURAL,
    ROLLOUT_PLURAL,
    VERSION,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "DemoError",
    "DemoOptions",
    "canary_policy",
    "classifier_venv",
    "default_state_dir",
    "demo_down",
    "register",
    "run_demo",
    "wilson",
]

DEFAULT_NAMESPACE = "promptloop-demo"
ROLLOUT = "classifier"
NODE_ID = "classifier"
REASONER = "classify"
STABLE_VERSION = "2.0.0"
STABLE_DEPLOYMENT = "classifier"
HTTP_ROUTE = "classifier"
AGENT_PORT = 8000  # the port the HTTPRoute's backendRefs and the two Services name
# The gateway stand-in's loopback address: what every version's AGENT_CALLBACK_URL names.
GATEWAY_HOST = "127.0.0.2"
ROUTERS = ("agentfield", "gateway")
# The seed's prompt (self-improvement-loop.txt, classify_v2_0_0.py).
BASE_PROMPT = "Classify the ticket as billing, bug, or other. One word."
STATE_FILE = "demo.json"
SUMMARY_FILE = "summary.json"
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TERMINAL_FAILURES = frozenset({"RolledBack", "Rejected", "Invalid", "Superseded"})


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and why."""


def canary_policy() -> dict[str, Any]:
    """The demo's canary policy: short interval, modest sample sizes, so it ends in minutes.

    Seeded at 10 %, stepping by at most 20 points every 2 s while the evidence says the
    challenger is better, holding for approval below the 50 % ceiling.
    """
    return {
        "initialWeight": 10,
        "maxStep": 20,
        "floor": 0,
        "ceiling": 50,
        "interval": "2s",
        "minSamples": 40,
        "alpha": 0.05,
        "maxFailureRate": 0.5,
        "progressDeadline": "3m",
    }


def default_state_dir() -> Path:
    """``$PROMPTLOOP_DEMO_DIR``, else ``.cluster/demo`` in the checkout."""
    env = os.environ.get("PROMPTLOOP_DEMO_DIR")
    return Path(env) if env else cluster.project_root() / ".cluster" / "demo"


def wilson(failed: int, total: int, z: float = 1.959963984540054) -> tuple[float, float] | None:
    """The Wilson score 95 % interval of a failure rate (None without samples)."""
    if total <= 0:
        return None
    rate = failed / total
    denominator = 1 + z * z / total
    centre = (rate + z * z / (2 * total)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


# ------------------------------------------------------------------------------------------------
# output


class Reporter:
    """Progress lines (``[ 12.3s] [tag] message``), and in a terminal a redrawn live screen.

    Thread-safe: the kubelet, the traffic driver and the loop all report through it.
    """

    def __init__(self, *, live: bool, stream: TextIO | None = None) -> None:
        self.live = live
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._log: list[str] = []
        self._view = ""
        self._banner = ""
        self._drawn = 0.0

    def elapsed(self) -> float:
        """Seconds since the demo started."""
        return time.monotonic() - self.started

    def say(self, tag: str, message: str) -> None:
        """Report one event (several lines are kept together)."""
        stamp = f"[{self.elapsed():6.1f}s] [{tag}] "
        lines = message.splitlines() or [""]
        text = stamp + lines[0] + "".join("\n" + " " * len(stamp) + line for line in lines[1:])
        with self._lock:
            self._log.append(text)
            del self._log[:-200]
            if not self.live:
                print(text, file=self.stream, flush=True)
        if self.live:
            self.redraw()

    def sayer(self, tag: str) -> Callable[[str], None]:
        """A one-argument ``say`` for a component."""
        return lambda message: self.say(tag, message)

    def banner(self, text: str) -> None:
        """Something the person must see and act on (kept on screen in live mode)."""
        with self._lock:
            self._banner = text
        if self.live:
            self.redraw(force=True)
        elif text:
            with self._lock:
                print(text, file=self.stream, flush=True)

    def view(self, text: str) -> None:
        """Replace the live view (live mode only)."""
        with self._lock:
            self._view = text
        if self.live:
            self.redraw()

    def redraw(self, *, force: bool = False) -> None:
        """Redraw the screen: a title, the live view, the banner, then the latest log lines.

        The view arrives wrapped to the terminal's width; log lines are cut to it; banner lines
        (the approval command) are never cut, so that they can be copied whole.
        """
        with self._lock:
            now = time.monotonic()
            if not force and now - self._drawn < 0.3:
                return
            self._drawn = now
            size = shutil.get_terminal_size((100, 40))
            columns, height = max(40, size.columns), max(20, size.lines)

            def rows(line: str) -> int:
                return max(1, math.ceil(len(_ANSI.sub("", line)) / columns))

            title = (
                f"promptloop demo · {self.elapsed():.0f}s · Ctrl-C stops it and everything it "
                "started"
            )[:columns]
            banner = self._banner.splitlines()
            banner_rows = sum(rows(line) for line in banner)
            log_room = max(5, (height - banner_rows) // 3)
            log: list[str] = []
            for entry in reversed(self._log):
                entry_lines = [line[:columns] for line in entry.splitlines()]
                if len(log) + len(entry_lines) > log_room:
                    break
                log[:0] = entry_lines
            view_room = max(0, height - 2 - banner_rows - len(log))
            view: list[str] = []
            used = 0
            for line in self._view.splitlines():
                if used + rows(line) > view_room - 1:
                    view.append("… (the view is cut to fit the terminal)")
                    break
                view.append(line)
                used += rows(line)
            screen = [title, *view, *banner, "── demo log " + "─" * (columns - 13), *log]
            self.stream.write("\x1b[H\x1b[2J" + "\n".join(screen))
            self.stream.flush()

    def finish(self) -> None:
        """Leave live mode: the last log lines stay on screen below the final view."""
        if not self.live:
            return
        self.redraw(force=True)
        self.live = False
        self.stream.write("\n")
        self.stream.flush()

    def print(self, text: str) -> None:
        """Print plainly (the summary)."""
        with self._lock:
            print(text, file=self.stream, flush=True)


# ------------------------------------------------------------------------------------------------
# small helpers


def _kubectl() -> str:
    candidate = Path(sys.executable).parent / "kubectl"
    return str(candidate) if candidate.exists() else (shutil.which("kubectl") or "kubectl")


def _kubectl_shown() -> str:
    """How to spell kubectl in a command a person copies."""
    if shutil.which("kubectl"):
        return "kubectl"
    return _relative(_kubectl())


def _relative(path: str | Path) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(path).resolve().relative_to(Path.cwd()))
    return str(path)


def _run(
    args: Sequence[str], *, stdin: str | None = None, timeout: float = 120, env: Any = None
) -> str:
    proc = subprocess.run(
        list(args), input=stdin, capture_output=True, text=True, timeout=timeout, env=env
    )
    if proc.returncode != 0:
        shown = " ".join(args[:6])
        raise DemoError(f"`{shown} …` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _http_json(
    method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        with contextlib.suppress(ValueError):
            return error.code, json.loads(raw) if raw else None
        return error.code, None
    except (urllib.error.URLError, OSError, ValueError):
        # Not listening (yet), reset, or not JSON: the callers poll again.
        return 0, None


# ------------------------------------------------------------------------------------------------
# the example agent's environment


def classifier_dir() -> Path:
    """``examples/classifier`` in the checkout."""
    return cluster.project_root() / "examples" / "classifier"


def classifier_venv(say: Callable[[str], None]) -> Path:
    """Create (once) the example agent's own venv and return its Python.

    The ``agentfield`` SDK lives apart from promptloop's environment: its botocore needs
    python-dateutil<3 and the operator's kubernetes 37 client needs >=3. The venv is reused while
    ``requirements.txt`` and the interpreter are unchanged (a stamp records their digest).

    Raises
    ------
    DemoError
        When the venv cannot be created or pip fails (with pip's last lines).
    """
    root = classifier_dir()
    venv = root / ".venv"
    python = venv / "bin" / "python"
    requirements = root / "requirements.txt"
    wanted = hashlib.sha256(
        requirements.read_bytes() + sys.version.encode() + sys.base_prefix.encode()
    ).hexdigest()
    stamp = venv / ".promptloop-stamp"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        say(f"the example agent's environment {_relative(venv)} is up to date")
        return python
    say(
        f"creating the example agent's own environment in {_relative(venv)} and installing "
        f"{_relative(requirements)} (the agentfield SDK and its dependencies, about 400 MB; "
        "a few minutes the first time, reused afterwards)"
    )
    if venv.exists():
        shutil.rmtree(venv)
    _run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    log_path = venv / "pip-install.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        pip = subprocess.Popen(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
                str(requirements),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        while True:
            try:
                code = pip.wait(timeout=20)
                break
            except subprocess.TimeoutExpired:
                say(f"  … still installing ({time.monotonic() - started:.0f}s)")
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise DemoError(f"pip could not install {requirements} (exit {code}):\n{tail}")
    stamp.write_text(wanted + "\n")
    say(f"installed in {time.monotonic() - started:.0f}s")
    return python


# ------------------------------------------------------------------------------------------------
# the manifests the demo applies


def stable_deployment(
    *, agentfield_url: str, model_base_url: str, model: str, callback_url: str | None = None
) -> dict[str, Any]:
    """The incumbent classifier at 2.0.0: a Deployment a user would keep in git.

    ``callback_url`` (the gateway router) is every version's ``AGENT_CALLBACK_URL``: the route's
    address, so that AgentField's execute lands on the weighted split."""
    labels = {"app.kubernetes.io/name": "classifier", "promptloop.dev/version": STABLE_VERSION}
    env: list[dict[str, Any]] = [
        {"name": "AGENT_NODE_ID", "value": NODE_ID},
        {"name": "AGENT_VERSION", "value": STABLE_VERSION},
        {"name": "AGENTFIELD_SERVER", "value": agentfield_url},
        {"name": "OPENAI_BASE_URL", "value": model_base_url},
        {"name": "OPENAI_MODEL", "value": model},
        {
            "name": "OPENAI_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "classifier-model", "key": "api-key"}},
        },
        {"name": "SYSTEM_PROMPT", "value": BASE_PROMPT},
    ]
    if callback_url is not None:
        env.append({"name": "AGENT_CALLBACK_URL", "value": callback_url})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": STABLE_DEPLOYMENT,
            "labels": {"app.kubernetes.io/name": "classifier", "app.kubernetes.io/part-of": "demo"},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "agent",
                            "image": "example.invalid/promptloop/classifier:0.1.0",
                            "env": env,
                        }
                    ]
                },
            },
        },
    }


PROMETHEUS_TOTAL = 'sum(classifier_outcomes_total{version="{{ version }}"})'
PROMETHEUS_FAILED = 'sum(classifier_failures_total{version="{{ version }}"})'


def agent_rollout(
    *, agentfield_url: str, prometheus_url: str | None = None, router: str = "agentfield"
) -> dict[str, Any]:
    """The classifier's AgentRollout: AgentField router (or, ``router="gateway"``, the Gateway
    API router on :func:`http_route`); the agents' own Prometheus counters through a local
    Prometheus server, or (without one installed) agentfieldMemory."""
    metrics: dict[str, Any] = (
        {
            "prometheus": {
                "url": prometheus_url,
                "totalQuery": PROMETHEUS_TOTAL,
                "failedQuery": PROMETHEUS_FAILED,
                "timeout": "5s",
            }
        }
        if prometheus_url
        else {"agentfieldMemory": {"keyPrefix": "promptloop.outcomes"}}
    )
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentRollout",
        "metadata": {"name": ROLLOUT},
        "spec": {
            "agent": {"nodeId": NODE_ID, "reasoner": REASONER},
            "stable": {"version": STABLE_VERSION, "deploymentName": STABLE_DEPLOYMENT},
            "prompt": {"env": "SYSTEM_PROMPT"},
            "router": (
                {"gatewayAPI": {"httpRoute": HTTP_ROUTE, "port": AGENT_PORT}}
                if router == "gateway"
                else {
                    "agentfield": {
                        "url": agentfield_url,
                        "tokenSecretRef": {"name": "agentfield-connector", "key": "token"},
                    }
                }
            ),
            "metrics": metrics,
            "canary": canary_policy(),
        },
    }


def http_route() -> dict[str, Any]:
    """The classifier's HTTPRoute, as a user keeps it in git: stable 100, canary 0."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": HTTP_ROUTE},
        "spec": {
            "parentRefs": [{"name": "agents"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": f"{ROLLOUT}-stable", "port": AGENT_PORT, "weight": 100},
                        {"name": f"{ROLLOUT}-canary", "port": AGENT_PORT, "weight": 0},
                    ]
                }
            ],
        },
    }


def _secret(name: str, key: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": {key: value},
    }


# ------------------------------------------------------------------------------------------------
# the live view


def render_view(api_client: Any, namespace: str, *, width: int, color: bool) -> str | None:
    """The rollout's live view: ``promptloop status`` (``promptloop.view.render_status``).

    The one place the demo calls the view, so that it can be switched. None when the view module
    is not available or cannot render (the demo then shows its own one-line status).
    """
    try:
        from promptloop import userops
        from promptloop.view import render_status
    except ImportError:
        return None
    try:
        snapshot = userops.Cluster(api_client, namespace).snapshot(ROLLOUT, None)
        return render_status(
            snapshot.rollout,
            snapshot.proposal,
            snapshot.stable_prompt,
            width=width,
            color=color,
            now=datetime.now(UTC),
            proposals=snapshot.proposals,
            stable_prompt_note=snapshot.stable_note,
            max_diff_lines=20,
        )
    except Exception:  # the view is a convenience: never let it stop the loop
        return None


def _status_line(rollout: Mapping[str, Any]) -> str:
    status = rollout.get("status") or {}
    canary = status.get("canary") or {}
    counts = status.get("counts") or {}
    decision = status.get("decision") or {}
    parts = [f"phase {status.get('phase') or '(pending)'}"]
    parts.append(f"stable {status.get('stableVersion') or STABLE_VERSION}")
    if canary.get("version"):
        weight = canary.get("weight")
        parts.append(f"canary {canary['version']} at {'—' if weight is None else f'{weight}%'}")
    for role in ("stable", "canary"):
        window = counts.get(role) or {}
        if window.get("total"):
            rate = window.get("failed", 0) / window["total"]
            parts.append(f"{role} window {rate:.1%} of {window['total']}")
    if decision.get("verdict"):
        parts.append(f"verdict {decision['verdict']}")
    return " · ".join(parts)


# ------------------------------------------------------------------------------------------------
# options and state


@dataclass(frozen=True)
class DemoOptions:
    """What ``promptloop dev demo`` was asked to do."""

    auto_approve: bool = False
    namespace: str = DEFAULT_NAMESPACE
    state_dir: Path = field(default_factory=default_state_dir)
    kubeconfig: Path | None = None
    rate: float = 25.0
    concurrency: int = 8
    min_failures: int = 20
    timeout: float = 900.0
    view: str = "auto"
    seed: int = 7
    router: str = "agentfield"


@dataclass
class _Model:
    base_url: str
    api_key: str = field(repr=False)
    model: str
    simulator: bool


@dataclass
class _Marks:
    """When each stage of the loop was reached (seconds since start)."""

    ready: float | None = None
    proposal: float | None = None
    canary: float | None = None
    awaiting: float | None = None
    approved: float | None = None
    promoted: float | None = None


def _obj(raw: object) -> dict[str, Any]:
    """A Kubernetes object (or list) as the client returns it: a JSON dict."""
    if not isinstance(raw, dict):
        raise DemoError(f"the API server answered {type(raw).__name__}, not an object")
    return raw


def _api_client(kubeconfig: Path) -> Any:
    """A ``kubernetes`` API client for a kubeconfig file."""
    from promptloop.k8s.sync import load_api_client

    return load_api_client(str(kubeconfig))


def _write_json(path: Path, body: Mapping[str, Any]) -> None:
    partial = path.with_suffix(path.suffix + ".tmp")
    partial.write_text(json.dumps(body, indent=2) + "\n")
    partial.replace(path)


# ------------------------------------------------------------------------------------------------
# the demo


class Demo:
    """One run of the demo; :meth:`run` returns the exit code."""

    def __init__(self, options: DemoOptions, reporter: Reporter) -> None:
        self.options = options
        self.r = reporter
        self.state_dir = options.state_dir.resolve()
        self.namespace = options.namespace
        self.record: dict[str, Any] = {}
        self.kubeconfig: Path = (
            options.kubeconfig or cluster.default_state_dir() / "kubeconfig"
        ).resolve()
        self.cluster_started = False
        self.agentfield: Any = None
        self.simulator: Any = None
        self.prometheus: Any = None
        self.model: _Model | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.kubelet: ProcessKubelet | None = None
        self.kubelet_stop = threading.Event()
        self.kubelet_thread: threading.Thread | None = None
        self.traffic: TrafficDriver | None = None
        self.gateway: GatewayStandin | None = None
        self.api: Any = None
        self.marks = _Marks()
        self.history: dict[tuple[str, str], dict[str, Any]] = {}
        self.last_counts: dict[str, Any] = {}
        self.proposal_name: str | None = None
        self.proposal: dict[str, Any] = {}
        self.approval_shown = False
        self.improver_runs = 0
        # Token-bearing kubeconfigs of the two ServiceAccounts, removed when the demo ends.
        self.operator_kubeconfig = self.state_dir / "operator-kubeconfig"
        self.improver_kubeconfig = self.state_dir / "improver-kubeconfig"
        self.inherit_cluster = False

    # -- bookkeeping -------------------------------------------------------------------------

    def _save(self) -> None:
        _write_json(self.state_dir / STATE_FILE, self.record)

    def say(self, message: str) -> None:
        """Report as the demo itself."""
        self.r.say("demo", message)

    # -- the whole run ----------------------------------------------------------------------

    def run(self) -> int:
        """Set up, loop until promotion (or failure), summarise, tear down."""
        code = EXIT_FAILED
        outcome = "the demo did not get past setup"
        try:
            self._claim_state_dir()
            self._setup()
            self.marks.ready = self.r.elapsed()
            code, outcome = self._loop()
        except KeyboardInterrupt:
            code, outcome = EXIT_INTERRUPTED, "interrupted (Ctrl-C or SIGTERM)"
            self.say("interrupted: stopping everything the demo started")
        except (DemoError, cluster.ClusterError, RuntimeError, OSError, ValueError) as error:
            code, outcome = EXIT_FAILED, f"{type(error).__name__}: {error}"
            self.say(f"failed: {error}")
        finally:
            summary = self._summary(code, outcome)
            try:
                self._teardown()
            finally:
                self.r.finish()
                self.r.print(summary)
        return code

    # -- setup --------------------------------------------------------------------------------

    def _claim_state_dir(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        previous = _read_record(self.state_dir)
        if previous is not None:
            pid = int(previous.get("pid") or 0)
            if pid and pid != os.getpid() and runs(pid, b"demo"):
                raise DemoError(
                    f"another demo is running from {_relative(self.state_dir)} (pid {pid}); "
                    "`make demo-down` stops it"
                )
            self.say("cleaning up what an earlier demo left behind")
            demo_down(self.state_dir, say=self.r.sayer("demo-down"), stop_cluster=False)
            # A control plane an earlier demo started (and did not get to stop) is this run's to
            # stop at the end: nobody else was using it before the demo.
            self.inherit_cluster = (
                bool(previous.get("cluster_started"))
                and Path(str(previous.get("cluster_state_dir") or "")).resolve()
                == cluster.default_state_dir().resolve()
            )
        self.record = {
            "pid": os.getpid(),
            "namespace": self.namespace,
            "started_at": datetime.now(UTC).isoformat(),
            "kubeconfig": str(self.kubeconfig),
            "cluster_started": False,
            "cluster_state_dir": str(cluster.default_state_dir().resolve()),
            "agents": {},
        }
        self._save()

    def _setup(self) -> None:
        say = self.say
        say(
            f"setting up: example agent environment, control plane, AgentField stand-in, model, "
            f"operator, and namespace {self.namespace} (state in {_relative(self.state_dir)})"
        )
        python = classifier_venv(self.r.sayer("agent-env"))
        self._cluster()
        self._agentfield()
        self._model()
        self._prometheus()
        self._crds_and_operator_identity()
        if self.options.router == "gateway":
            self._gateway_api()
        self._namespace_objects()
        if self.options.router == "gateway":
            self._start_gateway()
        self._start_operator()
        self._start_kubelet(python)
        self._wait_registered()
        self._start_traffic()

    def _cluster(self) -> None:
        if self.options.kubeconfig is not None:
            self.say(f"using the cluster in {self.options.kubeconfig} (--kubeconfig); left as is")
            _run([_kubectl(), "--kubeconfig", str(self.kubeconfig), "get", "--raw", "/readyz"])
            return
        state_dir = cluster.default_state_dir()
        running = cluster.is_healthy(state_dir)
        if running:
            self.say("the local control plane is already running: reusing it (left running)")
        else:
            self.say("starting the local Kubernetes control plane (built once, then cached)")
        cluster.build()
        state = cluster.up(state_dir=state_dir)
        self.kubeconfig = state.kubeconfig.resolve()
        self.cluster_started = not running or (
            self.inherit_cluster and self.options.kubeconfig is None
        )
        if running and self.cluster_started:
            self.say(
                "it was started by an earlier demo that did not stop it: stopping it at the end"
            )
        self.record.update(kubeconfig=str(self.kubeconfig), cluster_started=self.cluster_started)
        self._save()
        self.say(f"control plane at {state.server}; kubeconfig {_relative(self.kubeconfig)}")

    def _agentfield(self) -> None:
        from devenv.agentfield import start_agentfield
        from devenv.agentfield_standin import STANDIN_REASON

        self.say(
            "starting the AgentField STAND-IN, not the real control plane: "
            f"{STANDIN_REASON} (devenv/agentfield_standin.py)"
        )
        self.agentfield = start_agentfield(self.state_dir / "agentfield")
        self.record["agentfield_dir"] = str(self.state_dir / "agentfield")
        self._save()
        self.say(f"AgentField stand-in at {self.agentfield.url} (pid {self.agentfield.pid})")

    def _prometheus(self) -> None:
        from devenv.prometheus import PrometheusError, prometheus_binary, start_prometheus

        if prometheus_binary() is None:
            self.say(
                "prometheus is not installed: the rollout reads the agents' counters from "
                "AgentField memory instead (agentfieldMemory; `apt-get install "
                "--no-install-recommends prometheus` to use the prometheus provider)"
            )
            return
        workdir = self.state_dir / "prometheus"
        try:
            self.prometheus = start_prometheus(workdir, targets_file=workdir / "targets.json")
        except PrometheusError as error:
            self.say(f"could not start prometheus ({error}); using agentfieldMemory instead")
            return
        self.record["prometheus"] = self.prometheus.pid
        self._save()
        self.say(
            f"Prometheus at {self.prometheus.url} (pid {self.prometheus.pid}) scrapes every agent "
            "process's /metrics each second (the process kubelet keeps the target list); the "
            "rollout reads classifier_outcomes_total and classifier_failures_total per version "
            "with the prometheus provider"
        )

    def _model(self) -> None:
        key = os.environ.get("OPENAI_API_KEY", "")
        if key:
            from promptloop.improver.llm import DEFAULT_MODEL

            base_url = os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
            model = os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
            self.model = _Model(base_url, key, model, simulator=False)
            self.say(
                f"OPENAI_API_KEY is set: the agents and the improver use the real model {model} "
                f"at {base_url} (this costs money; the summary estimates how much)"
            )
            return
        from devenv.llm import start_llm_simulator

        self.say(
            "OPENAI_API_KEY is not set: starting the deterministic model SIMULATOR "
            "(keyword rules, not a language model; devenv/llm_simulator.py)"
        )
        self.simulator = start_llm_simulator(self.state_dir / "llm")
        self.record["llm_dir"] = str(self.state_dir / "llm")
        self._save()
        env = self.simulator.env()
        self.model = _Model(
            env["OPENAI_BASE_URL"], env["OPENAI_API_KEY"], env["OPENAI_MODEL"], simulator=True
        )
        self.say(f"model simulator at {self.model.base_url} (pid {self.simulator.pid})")

    def _kubectl(self, *args: str, stdin: str | None = None) -> str:
        return _run([_kubectl(), "--kubeconfig", str(self.kubeconfig), *args], stdin=stdin)

    def _apply(self, body: Mapping[str, Any], namespace: str | None = None) -> None:
        extra = ["-n", namespace] if namespace else []
        self._kubectl("apply", *extra, "-f", "-", stdin=json.dumps(body))

    def _crds_and_operator_identity(self) -> None:
        root = cluster.project_root()
        base = root / "manifests" / "base"
        crds = [
            arg
            for path in sorted((root / "crds").glob("promptloop.dev_*.yaml"))
            for arg in ("-f", str(path))
        ]
        self.say("installing the CRDs (server-side apply) and waiting until they are Established")
        self._kubectl("apply", "--server-side", "--force-conflicts", *crds)
        self._kubectl("wait", "--for=condition=Established", "--timeout=60s", *crds)
        self.say(
            "applying the identities the chart installs (manifests/base): the operator's "
            "ServiceAccount and least-privilege ClusterRole, and the improver's, which may create "
            "PromptProposals and nothing else (an admission policy stops it from approving one). "
            "Both run under their own account's token"
        )
        for name in ("namespace.yaml", "rbac.yaml", "improver-rbac.yaml", "improver-policy.yaml"):
            self._kubectl("apply", "-f", str(base / name))
        self._service_account_kubeconfig("promptloop-operator", self.operator_kubeconfig)
        self._service_account_kubeconfig("promptloop-improver", self.improver_kubeconfig)

    def _service_account_kubeconfig(self, account: str, path: Path) -> None:
        """A kubeconfig that authenticates as ``promptloop-system/<account>`` (a 4 h token)."""
        token = self._kubectl(
            "create", "token", account, "-n", "promptloop-system", "--duration=4h"
        ).strip()
        admin = json.loads(self._kubectl("config", "view", "--raw", "--minify", "-o", "json"))
        server = admin["clusters"][0]["cluster"]
        ca = server.get("certificate-authority-data")
        if ca is None:
            ca = base64.b64encode(Path(server["certificate-authority"]).read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "c",
                    "cluster": {"server": server["server"], "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "c",
                    "context": {"cluster": "c", "user": account, "namespace": self.namespace},
                }
            ],
            "current-context": "c",
        }
        # The file holds a token: created private before anything is written into it.
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle)

    def _gateway_api(self) -> None:
        from devenv import gatewayapi

        self.say(
            "--router gateway: installing the Gateway API CRDs (standard channel, "
            f"{gatewayapi.GATEWAY_API_VERSION}, from the Go module proxy, cached) and granting the "
            "operator what spec.router.gatewayAPI needs (manifests/gateway-api: Services it "
            "owns, get/patch on HTTPRoutes)"
        )
        gatewayapi.install(self.kubeconfig, kubectl=_kubectl())
        import yaml

        rendered = self._kubectl(
            "kustomize", str(cluster.project_root() / "manifests" / "gateway-api")
        )
        for obj in yaml.safe_load_all(rendered):
            if (
                obj
                and obj["kind"] == "ClusterRole"
                and obj["metadata"]["name"] == ("promptloop-operator")
            ):
                self._apply(obj)

    def _start_gateway(self) -> None:
        self.gateway = GatewayStandin(
            # Its own client: it reads from its own thread every 0.25 s.
            api_client=_api_client(self.kubeconfig),
            namespace=self.namespace,
            http_route=HTTP_ROUTE,
            address_of=self._pod_address,
            seed=self.options.seed,
            say=self.r.sayer("gateway"),
            host=GATEWAY_HOST,
        )
        self.gateway.start()
        self.r.say(
            "gateway",
            "the gateway STAND-IN, not a Gateway API implementation (none can forward requests "
            "here; devenv/gateway_standin.py): it reads HTTPRoute "
            f"{HTTP_ROUTE}, its Services and their Ready pods back from the API server every "
            f"0.25 s and sends each request to a backendRef picked by weight. It listens on "
            f"{GATEWAY_HOST}, on each agent's own port (the SDK registers its own port with "
            f"AGENT_CALLBACK_URL's host), and maps a pod to its agent process",
        )

    def _pod_address(self, pod: Mapping[str, Any]) -> str | None:
        """A Ready pod's agent process: the one the process kubelet runs for its Deployment."""
        meta = pod.get("metadata") or {}
        suffix = "-" + str((meta.get("labels") or {}).get("pod-template-hash", ""))
        for owner in meta.get("ownerReferences") or []:
            if owner.get("kind") == "ReplicaSet" and self.kubelet is not None:
                agent = self.kubelet.processes.get(str(owner.get("name")).removesuffix(suffix))
                if agent is not None:
                    return agent.url
        return None

    def _namespace_objects(self) -> None:
        ns = self.namespace
        self.api = _api_client(self.kubeconfig)
        _delete_namespace(self.api, ns, say=self.say)
        self._kubectl("create", "namespace", ns)
        assert self.agentfield is not None and self.model is not None
        self.say(
            f"namespace {ns}: Secret agentfield-connector (the connector token), Secret "
            "classifier-model (the model key), Deployment classifier (2.0.0, the seed's prompt) "
            "and AgentRollout classifier (canary policy: "
            + ", ".join(f"{k} {v}" for k, v in canary_policy().items())
            + ")"
        )
        self._apply(_secret("agentfield-connector", "token", self.agentfield.token), ns)
        self._apply(_secret("classifier-model", "api-key", self.model.api_key), ns)
        gateway = self.options.router == "gateway"
        if gateway:
            self.say(
                f"HTTPRoute {HTTP_ROUTE} (backendRefs {ROLLOUT}-stable 100, {ROLLOUT}-canary 0); "
                f"the Deployment's pod template sets AGENT_CALLBACK_URL=http://{GATEWAY_HOST}, the "
                "route's address, so every version (challengers are cloned from it) registers "
                "the route with AgentField"
            )
            self._apply(http_route(), ns)
        self._apply(
            stable_deployment(
                agentfield_url=self.agentfield.url,
                model_base_url=self.model.base_url,
                model=self.model.model,
                callback_url=f"http://{GATEWAY_HOST}" if gateway else None,
            ),
            ns,
        )
        self._apply(
            agent_rollout(
                agentfield_url=self.agentfield.url,
                prometheus_url=self.prometheus.url if self.prometheus is not None else None,
                router=self.options.router,
            ),
            ns,
        )

    def _start_operator(self) -> None:
        port = free_port()
        log_path = self.state_dir / "operator.log"
        env = dict(os.environ, KUBECONFIG=str(self.operator_kubeconfig))
        env.pop("OPENAI_API_KEY", None)  # the operator never talks to a model
        with log_path.open("ab") as log:
            self.operator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "promptloop.cli",
                    "operator",
                    "--namespace",
                    self.namespace,
                    "--liveness-address",
                    "127.0.0.1",
                    "--liveness-port",
                    str(port),
                    "--metrics-address",
                    "127.0.0.1",
                    "--metrics-port",
                    str(free_port()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.record["operator"] = self.operator.pid
        self._save()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.operator.poll() is not None:
                raise DemoError(
                    f"the operator exited with {self.operator.returncode}; see "
                    f"{_relative(log_path)}"
                )
            status, _ = _http_json("GET", f"http://127.0.0.1:{port}/healthz")
            if status == 200:
                self.say(
                    f"operator running (pid {self.operator.pid}) as ServiceAccount "
                    f"promptloop-system/promptloop-operator, watching namespace {self.namespace}; "
                    f"log {_relative(log_path)}"
                )
                return
            time.sleep(0.2)
        raise DemoError(f"the operator did not become live within 60s; see {_relative(log_path)}")

    def _start_kubelet(self, python: Path) -> None:
        api = _api_client(self.kubeconfig)

        def select(deployment: Mapping[str, Any]) -> bool:
            meta = deployment.get("metadata") or {}
            labels = meta.get("labels") or {}
            return meta.get("name") == STABLE_DEPLOYMENT or labels.get(LABEL_ROLLOUT) == ROLLOUT

        self.kubelet = ProcessKubelet(
            api_client=api,
            namespace=self.namespace,
            select=select,
            command=[str(python), "classifier.py"],
            cwd=classifier_dir(),
            state_dir=self.state_dir / "pods",
            say=self._kubelet_say,
            targets_file=(
                self.state_dir / "prometheus" / "targets.json"
                if self.prometheus is not None
                else None
            ),
        )
        self.kubelet_thread = threading.Thread(
            target=self.kubelet.run, args=(self.kubelet_stop,), daemon=True
        )
        self.kubelet_thread.start()
        self.say(
            "process kubelet started: it runs one agent process per Available Deployment of the "
            "rollout, with the env the pod template gives it (no container runtime here)"
        )

    def _kubelet_say(self, message: str) -> None:
        self.r.say("kubelet", message)
        if self.kubelet is not None and self.gateway is not None:
            # Called right after a process starts, before its SDK registers the callback URL.
            for agent in list(self.kubelet.processes.values()):
                try:
                    self.gateway.listen(agent.port)
                except OSError as error:
                    self.r.say("gateway", f"cannot listen on port {agent.port}: {error}")
        if self.kubelet is not None:
            self.record["agents"] = self.kubelet.pids()
            with contextlib.suppress(OSError):
                self._save()

    def _versions(self) -> list[dict[str, Any]]:
        assert self.agentfield is not None
        status, body = _http_json(
            "GET",
            f"{self.agentfield.url}/api/v1/connector/reasoners/{NODE_ID}/versions",
            headers={"X-Connector-Token": self.agentfield.token},
        )
        if status != 200 or not isinstance(body, dict):
            return []
        versions: list[dict[str, Any]] = body.get("versions") or []
        return versions

    def _wait_registered(self) -> None:
        self.say(f"waiting for the {STABLE_VERSION} agent to register in AgentField")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(v.get("version") == STABLE_VERSION for v in self._versions()):
                self.say(f"classifier {STABLE_VERSION} is registered")
                return
            time.sleep(0.5)
        raise DemoError(
            f"classifier {STABLE_VERSION} did not register within 120s; see "
            f"{_relative(self.state_dir / 'pods')}"
        )

    def _start_traffic(self) -> None:
        assert self.agentfield is not None
        tickets = load_tickets(cluster.project_root() / "examples" / "tickets" / "tickets.jsonl")
        self.traffic = TrafficDriver(
            agentfield_url=self.agentfield.url,
            token=self.agentfield.token,
            node_id=NODE_ID,
            reasoner=REASONER,
            tickets=tickets,
            rate=self.options.rate,
            concurrency=self.options.concurrency,
            seed=self.options.seed,
            say=self.r.sayer("traffic"),
            via_execute=self.options.router == "gateway",
        )
        self.r.say(
            "traffic",
            f"{len(tickets)} labelled tickets from examples/tickets/tickets.jsonl, "
            f"{self.options.rate:g} requests/s, each carrying its label so the agents grade "
            "themselves and record their misses",
        )
        self.traffic.start()

    # -- the loop -----------------------------------------------------------------------------

    def _loop(self) -> tuple[int, str]:
        self.say(
            "the loop: the agents record misses in AgentField memory; at "
            f"{self.options.min_failures} distinct misses of {STABLE_VERSION} the improver "
            "proposes a prompt"
        )
        deadline = time.monotonic() + self.options.timeout
        last_misses = -1
        next_improve = 0.0
        last_status = ""
        last_status_at = 0.0
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api)
        while True:
            if time.monotonic() > deadline:
                return EXIT_FAILED, f"timed out after {self.options.timeout:.0f}s (--timeout)"
            self._check_children()
            rollout = _obj(
                custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, ROLLOUT_PLURAL, ROLLOUT, _request_timeout=10
                )
            )
            self._note_rollout(rollout)
            if self.proposal_name is None:
                misses = self._distinct_misses()
                if misses != last_misses and (
                    misses - last_misses >= 5 or misses >= self.options.min_failures
                ):
                    self.r.say(
                        "loop",
                        f"{misses} distinct misses of {STABLE_VERSION} recorded in AgentField "
                        "global memory (key failures); the improver needs "
                        f"{self.options.min_failures}",
                    )
                    last_misses = misses
                due = misses >= self.options.min_failures and time.monotonic() >= next_improve
                if due and not self._improve():
                    next_improve = time.monotonic() + 5
            else:
                proposal = _obj(
                    custom.get_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        self.namespace,
                        PROPOSAL_PLURAL,
                        self.proposal_name,
                        _request_timeout=10,
                    )
                )
                self.proposal = proposal
                phase = (proposal.get("status") or {}).get("phase")
                if phase == "Promoted":
                    self.marks.promoted = self.r.elapsed()
                    self._note_rollout(
                        _obj(
                            custom.get_namespaced_custom_object(
                                GROUP,
                                VERSION,
                                self.namespace,
                                ROLLOUT_PLURAL,
                                ROLLOUT,
                                _request_timeout=10,
                            )
                        )
                    )
                    self.r.say(
                        "loop",
                        f"{self.proposal_name} is Promoted: {proposal['spec']['version']} is "
                        "the stable version now",
                    )
                    self._show_view(final=True)
                    return EXIT_OK, "Promoted"
                if phase in _TERMINAL_FAILURES:
                    message = (proposal.get("status") or {}).get("message") or ""
                    self._show_view(final=True)
                    return EXIT_FAILED, f"{self.proposal_name} ended {phase}: {message}"
                rollout_phase = (rollout.get("status") or {}).get("phase")
                if rollout_phase == "AwaitingApproval" and not self.approval_shown:
                    self._await_approval(custom, proposal)
                if (proposal.get("spec") or {}).get("approved") and self.marks.approved is None:
                    self.marks.approved = self.r.elapsed()
                    self.r.banner("")
                    self.say(f"{self.proposal_name} is approved: the operator acts on it at once")
            line = _status_line(rollout)
            since = time.monotonic() - last_status_at
            if (line != last_status and since > 3) or since > 15:
                if not self.r.live:
                    self.r.say("status", line + self._traffic_line())
                last_status, last_status_at = line, time.monotonic()
            if self.r.live:
                self._show_view()
            time.sleep(1.0)

    def _check_children(self) -> None:
        if self.operator is not None and self.operator.poll() is not None:
            raise DemoError(
                f"the operator exited with {self.operator.returncode}; see "
                f"{_relative(self.state_dir / 'operator.log')}"
            )
        if self.kubelet_thread is not None and not self.kubelet_thread.is_alive():
            raise DemoError("the process kubelet stopped")

    def _traffic_line(self) -> str:
        if self.traffic is None:
            return ""
        parts = []
        if self.gateway is not None:
            weights = " ".join(f"{svc} {w}" for svc, w in self.gateway.weights().items())
            parts.append(f"route {weights or '(not read yet)'}")
        shares = {route.version: route.share for route in self.traffic.routes()}
        for version, tally in sorted(self.traffic.tallies().items()):
            rate = tally.failure_rate
            share = shares.get(version)
            parts.append(
                f"{version}: {tally.sent} sent"
                + ("" if share is None else f" at {share:.0%}")
                + ("" if rate is None else f", {rate:.1%} wrong")
            )
        return " | traffic " + "; ".join(parts) if parts else ""

    def _distinct_misses(self) -> int:
        assert self.agentfield is not None
        status, body = _http_json(
            "POST",
            f"{self.agentfield.url}/api/v1/memory/get",
            {"key": "failures", "scope": "global"},
        )
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
            return 0
        distinct = {
            (str(entry.get("text") or entry.get("input")), str(entry.get("expected")))
            for entry in body["data"]
            if isinstance(entry, dict) and entry.get("version") == STABLE_VERSION
        }
        return len(distinct)

    def _improve(self) -> bool:
        assert self.agentfield is not None and self.model is not None
        self.improver_runs += 1
        command = [
            sys.executable,
            "-m",
            "promptloop.cli",
            "improve",
            "--rollout",
            ROLLOUT,
            "-n",
            self.namespace,
            "--source",
            "agentfield",
            "--agentfield-url",
            self.agentfield.url,
            "--min-failures",
            str(self.options.min_failures),
            "--apply",
        ]
        shown = " ".join(["promptloop", *command[3:]])
        self.r.say(
            "improve",
            f"running: {shown}  (as ServiceAccount promptloop-system/promptloop-improver)",
        )
        env = dict(
            os.environ,
            KUBECONFIG=str(self.improver_kubeconfig),
            OPENAI_BASE_URL=self.model.base_url,
            OPENAI_API_KEY=self.model.api_key,
            OPENAI_MODEL=self.model.model,
        )
        yaml_path = self.state_dir / f"proposal-{self.improver_runs}.yaml"
        with yaml_path.open("w") as out:
            # stdout (the proposal's YAML) goes to a file; stderr (its progress) is shown live.
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
            assert proc.stderr is not None
            for line in proc.stderr:
                self.r.say("improve", line.rstrip("\n").removeprefix("promptloop improve: "))
            code = proc.wait(timeout=60)
        if code == 3:
            self.r.say("improve", "exit 3 (hold): trying again in 5s")
            return False
        if code != 0:
            raise DemoError(f"the improver failed with exit code {code} (see above)")
        from kubernetes import client

        listing = _obj(
            client.CustomObjectsApi(self.api).list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PROPOSAL_PLURAL, _request_timeout=10
            )
        )
        items = sorted(
            listing.get("items") or [],
            key=lambda item: item["metadata"].get("creationTimestamp") or "",
        )
        if not items:
            raise DemoError("the improver exited 0 but no PromptProposal exists")
        self.proposal = items[-1]
        self.proposal_name = self.proposal["metadata"]["name"]
        self.marks.proposal = self.r.elapsed()
        spec = self.proposal["spec"]
        source = spec.get("source") or {}
        diff = "\n".join(
            difflib.unified_diff(
                BASE_PROMPT.splitlines(),
                str(spec.get("systemPrompt", "")).splitlines(),
                fromfile=f"stable {STABLE_VERSION}",
                tofile=f"proposal {spec.get('version')}",
                lineterm="",
            )
        )
        self.r.say(
            "improve",
            f"PromptProposal {self.proposal_name} (version {spec.get('version')}) created; "
            f"YAML in {_relative(yaml_path)}\n"
            f"rationale: {spec.get('rationale')}\n"
            f"model {source.get('model')}, {source.get('promptTokens')} prompt + "
            f"{source.get('completionTokens')} completion tokens, ${source.get('costUsd')}\n"
            f"{diff}\n"
            "The improver only proposes: the operator renders the challenger and canaries it.",
        )
        return True

    def _note_rollout(self, rollout: Mapping[str, Any]) -> None:
        status = rollout.get("status") or {}
        counts = status.get("counts") or {}
        if (counts.get("canary") or {}).get("total"):
            self.last_counts = dict(counts)
        canary = status.get("canary") or {}
        if canary.get("weight") and self.marks.canary is None:
            self.marks.canary = self.r.elapsed()
        for entry in status.get("history") or []:
            key = (str(entry.get("at")), str(entry.get("event")))
            if key in self.history:
                continue
            self.history[key] = dict(entry, seen=self.r.elapsed())
            weight = entry.get("weight")
            self.r.say(
                "operator",
                f"{entry.get('event')}"
                + (f" {entry['version']}" if entry.get("version") else "")
                + ("" if weight is None else f" → {weight}%")
                + (f": {entry['message']}" if entry.get("message") else ""),
            )

    def _await_approval(self, custom: Any, proposal: Mapping[str, Any]) -> None:
        self.approval_shown = True
        self.marks.awaiting = self.r.elapsed()
        name = proposal["metadata"]["name"]
        kubeconfig = _relative(self.kubeconfig)
        patch = (
            f"{_kubectl_shown()} --kubeconfig {kubeconfig} patch promptproposal {name} "
            f'-n {self.namespace} --type merge -p \'{{"spec":{{"approved":true}}}}\''
        )
        reject = (
            f"{_kubectl_shown()} --kubeconfig {kubeconfig} annotate promptproposal {name} "
            f"-n {self.namespace} promptloop.dev/rejected=true"
        )
        self._show_view(final=True)
        rule = "═" * 78
        self.r.banner(
            f"{rule}\n"
            f"  AwaitingApproval: {proposal['spec']['version']} has earned its traffic, and the "
            "next step would give it the majority.\n"
            "  The agent wrote this prompt and it measured better; promoting it is a person's "
            "call. To approve, run:\n\n"
            f"    {patch}\n\n"
            f"  To reject it instead:\n\n    {reject}\n\n"
            f"  (from {Path.cwd()}). The demo waits; Ctrl-C stops it and everything it started.\n"
            f"{rule}"
        )
        if self.options.auto_approve:
            self.say("--auto-approve: approving as if a person ran the command above")
            custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PROPOSAL_PLURAL,
                name,
                {"spec": {"approved": True}},
                # The operator records the field manager as the approver.
                field_manager="promptloop-demo-auto-approve",
                _content_type="application/merge-patch+json",
                _request_timeout=10,
            )

    def _show_view(self, *, final: bool = False) -> None:
        width = shutil.get_terminal_size((110, 40)).columns if self.r.live else 110
        text = render_view(self.api, self.namespace, width=width, color=self.r.live)
        if text is None:
            return
        if self.r.live:
            self.r.view(text + self._traffic_block())
        elif final:
            self.r.print(text.rstrip("\n"))

    def _traffic_block(self) -> str:
        if self.traffic is None:
            return ""
        lines = ["", "Traffic from the demo (weights read back from AgentField's connector):"]
        if self.gateway is not None:
            lines[1] = (
                "Traffic from the demo (through AgentField's execute route; split by the gateway "
                "stand-in at the HTTPRoute's weights read back from the API server: "
                + (
                    ", ".join(f"{svc} {w}" for svc, w in self.gateway.weights().items())
                    or "not read"
                )
                + f"; {self.traffic.unanswered} unanswered):"
            )
        shares = {route.version: route for route in self.traffic.routes()}
        for version, tally in sorted(self.traffic.tallies().items()):
            route = shares.get(version)
            rate = tally.failure_rate
            lines.append(
                f"  {version:>8}  "
                + (f"weight {route.weight:>5} ({route.share:5.1%})" if route else "not live       ")
                + f"  sent {tally.sent:>5}  wrong {tally.wrong:>4}  errors {tally.errors:>3}"
                + ("" if rate is None else f"  failure rate {rate:.1%}")
            )
        return "\n".join(lines) + "\n"

    # -- summary ------------------------------------------------------------------------------

    def _summary(self, code: int, outcome: str) -> str:
        tallies = self.traffic.tallies() if self.traffic is not None else {}
        challenger = str((self.proposal.get("spec") or {}).get("version") or "")
        source = (self.proposal.get("spec") or {}).get("source") or {}
        versions: dict[str, Any] = {}
        for version, tally in sorted(tallies.items()):
            failed = tally.wrong + tally.errors
            total = tally.graded + tally.errors
            interval = wilson(failed, total)
            versions[version] = {
                "role": "incumbent"
                if version == STABLE_VERSION
                else ("challenger" if version == challenger else "other"),
                "sent": tally.sent,
                "graded": total,
                "failed": failed,
                "wrong": tally.wrong,
                "errors": tally.errors,
                "failure_rate": tally.failure_rate,
                "interval95": list(interval) if interval else None,
                "prompt_tokens": tally.prompt_tokens,
                "completion_tokens": tally.completion_tokens,
            }
        model = self.model.model if self.model else None
        classifier_cost = self._cost(tallies)
        summary = {
            "exit_code": code,
            "outcome": outcome,
            "promoted": code == EXIT_OK,
            "namespace": self.namespace,
            "incumbent": STABLE_VERSION,
            "challenger": challenger or None,
            "proposal": self.proposal_name,
            "rationale": (self.proposal.get("spec") or {}).get("rationale"),
            "model": model,
            "simulator": bool(self.model and self.model.simulator),
            "versions": versions,
            "operator_window": self.last_counts,
            "decisions": [
                {k: v for k, v in entry.items() if k != "seen"}
                for entry in sorted(self.history.values(), key=lambda e: e["seen"])
            ],
            "improver": {
                "runs": self.improver_runs,
                "prompt_tokens": source.get("promptTokens"),
                "completion_tokens": source.get("completionTokens"),
                "cost_usd": source.get("costUsd"),
            },
            "classifier_cost_usd": None if classifier_cost is None else str(classifier_cost),
            "marks_s": {k: v for k, v in vars(self.marks).items()},
            "wall_time_s": round(self.r.elapsed(), 1),
        }
        with contextlib.suppress(OSError):
            self.state_dir.mkdir(parents=True, exist_ok=True)
            _write_json(self.state_dir / SUMMARY_FILE, summary)
        return _format_summary(summary, self.state_dir / SUMMARY_FILE)

    def _cost(self, tallies: Mapping[str, VersionTally]) -> Decimal | None:
        if self.model is None:
            return None
        from promptloop.improver.llm import PriceTable

        try:
            table = PriceTable.load()
        except (OSError, ValueError):
            return None
        return sum(
            (
                table.cost(self.model.model, tally.prompt_tokens, tally.completion_tokens)
                for tally in tallies.values()
            ),
            Decimal(0),
        )

    # -- teardown -----------------------------------------------------------------------------

    def _teardown(self) -> None:
        say = self.r.sayer("cleanup")
        if self.traffic is not None:
            say("stopping the traffic")
            self.traffic.stop()
        if self.gateway is not None:
            say("stopping the gateway stand-in")
            self.gateway.stop()
        self.kubelet_stop.set()
        if self.kubelet_thread is not None:
            self.kubelet_thread.join(timeout=30)
        if self.kubelet is not None:
            self.kubelet.stop_all()
        if self.operator is not None and self.operator.poll() is None:
            say(f"stopping the operator (pid {self.operator.pid})")
            self.operator.terminate()
            try:
                self.operator.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.operator.kill()
                self.operator.wait(timeout=5)
        if self.agentfield is not None:
            from devenv.agentfield import stop_agentfield

            say(f"stopping the AgentField stand-in (pid {self.agentfield.pid})")
            with contextlib.suppress(Exception):
                stop_agentfield(self.agentfield)
        if self.prometheus is not None:
            say(f"stopping Prometheus (pid {self.prometheus.pid})")
            self.prometheus.stop()
        if self.simulator is not None:
            from devenv.llm import stop_llm_simulator

            say(f"stopping the model simulator (pid {self.simulator.pid})")
            stop_llm_simulator(self.simulator)
        if self.cluster_started:
            say("stopping the control plane the demo started")
            cluster.down(state_dir=cluster.default_state_dir(), quiet=True)
        else:
            say(
                f"left running: the control plane, and namespace {self.namespace} with the "
                "demo's objects (make demo-down removes them)"
            )
        for token_file in (self.operator_kubeconfig, self.improver_kubeconfig):
            token_file.unlink(missing_ok=True)
        if self.record:
            self.record.update(pid=0, agents={}, operator=None, prometheus=None, finished=True)
            with contextlib.suppress(OSError):
                self._save()


# ------------------------------------------------------------------------------------------------
# summary text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _format_summary(summary: Mapping[str, Any], path: Path) -> str:
    out = io.StringIO()
    rule = "─" * 78
    print(rule, file=out)
    print(f"promptloop demo: {summary['outcome']} (exit code {summary['exit_code']})", file=out)
    print(rule, file=out)
    versions: Mapping[str, Any] = summary["versions"]
    if versions:
        print(
            "Failure rate per version (the demo's own tally of every labelled ticket sent):",
            file=out,
        )
        for version, row in versions.items():
            interval = row["interval95"]
            shown = "" if not interval else f"  95% CI [{interval[0]:.1%}, {interval[1]:.1%}]"
            print(
                f"  {row['role']:>10} {version:>8}: {_percent(row['failure_rate']):>6} "
                f"({row['failed']} of {row['graded']}){shown}",
                file=out,
            )
        incumbent = versions.get(summary["incumbent"])
        challenger = versions.get(summary["challenger"] or "")
        if (
            incumbent
            and challenger
            and incumbent["failure_rate"] is not None
            and challenger["failure_rate"] is not None
        ):
            print(
                f"  before → after: {_percent(incumbent['failure_rate'])} → "
                f"{_percent(challenger['failure_rate'])}",
                file=out,
            )
    window = summary.get("operator_window") or {}
    if window:
        parts = []
        for role in ("stable", "canary"):
            counts = window.get(role) or {}
            if counts.get("total"):
                parts.append(
                    f"{role} {counts.get('version')} {counts['failed']}/{counts['total']} "
                    f"({counts['failed'] / counts['total']:.1%})"
                )
        print("The operator's last canary window: " + ", ".join(parts), file=out)
    decisions = summary["decisions"]
    if decisions:
        print("Decisions (the rollout's history):", file=out)
        for entry in decisions:
            weight = entry.get("weight")
            print(
                f"  {entry.get('at', '')}  {entry.get('event')}"
                + (f" {entry['version']}" if entry.get("version") else "")
                + ("" if weight is None else f" → {weight}%")
                + (f": {_clip(entry['message'], 150)}" if entry.get("message") else ""),
                file=out,
            )
    improver = summary["improver"]
    tokens_in = sum(int(row["prompt_tokens"]) for row in versions.values())
    tokens_out = sum(int(row["completion_tokens"]) for row in versions.values())
    model = summary.get("model") or "?"
    simulated = " (the deterministic simulator: nothing is billed)" if summary["simulator"] else ""
    print(f"Model {model}{simulated}:", file=out)
    print(
        f"  classifier: {tokens_in} prompt + {tokens_out} completion tokens, "
        f"${summary.get('classifier_cost_usd') or '?'} at list prices",
        file=out,
    )
    if improver.get("prompt_tokens") is not None:
        print(
            f"  improver:   {improver['prompt_tokens']} prompt + {improver['completion_tokens']} "
            f"completion tokens, ${improver['cost_usd']} ({improver['runs']} run(s))",
            file=out,
        )
    marks = summary["marks_s"]
    stages = [
        ("setup", marks.get("ready")),
        ("proposal filed", marks.get("proposal")),
        ("canary seeded", marks.get("canary")),
        ("awaiting approval", marks.get("awaiting")),
        ("approved", marks.get("approved")),
        ("promoted", marks.get("promoted")),
    ]
    shown = ", ".join(f"{name} at {value:.0f}s" for name, value in stages if value is not None)
    print(f"Wall time {summary['wall_time_s']:.0f}s" + (f" ({shown})" if shown else ""), file=out)
    print(f"Summary as JSON: {_relative(path)}", file=out)
    return out.getvalue().rstrip("\n")


# ------------------------------------------------------------------------------------------------
# demo-down


def _read_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _reachable(kubeconfig: Path) -> bool:
    try:
        _run([_kubectl(), "--kubeconfig", str(kubeconfig), "get", "--raw", "/readyz"], timeout=15)
    except (DemoError, subprocess.TimeoutExpired, OSError):
        return False
    return True


def _delete_namespace(api: Any, namespace: str, *, say: Callable[[str], None]) -> None:
    """Delete the namespace and wait until it is gone.

    Finalizers on promptloop's objects are removed first: with no operator running (a killed
    demo) they would hold the namespace in Terminating for ever.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    try:
        core.read_namespace(namespace, _request_timeout=10)
    except ApiException as error:
        if error.status == 404:
            return
        raise
    say(f"deleting namespace {namespace} and the demo's objects in it")
    for plural in (PROPOSAL_PLURAL, ROLLOUT_PLURAL):
        with contextlib.suppress(ApiException):
            listing = _obj(
                custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, _request_timeout=10
                )
            )
            for item in listing.get("items") or []:
                if item["metadata"].get("finalizers"):
                    custom.patch_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        namespace,
                        plural,
                        item["metadata"]["name"],
                        {"metadata": {"finalizers": None}},
                        _content_type="application/merge-patch+json",
                        _request_timeout=10,
                    )
    with contextlib.suppress(ApiException):
        core.delete_namespace(namespace, _request_timeout=10)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            core.read_namespace(namespace, _request_timeout=10)
        except ApiException as error:
            if error.status == 404:
                return
            raise
        time.sleep(0.5)
    raise DemoError(f"namespace {namespace} is still terminating after 120s")


def demo_down(
    state_dir: Path | None = None,
    *,
    say: Callable[[str], None] | None = None,
    stop_cluster: bool = True,
) -> None:
    """Stop whatever a demo left running and delete its namespace.

    Parameters
    ----------
    state_dir
        The demo's state directory (default :func:`default_state_dir`).
    say
        Where to report (default: print).
    stop_cluster
        Also stop the control plane when the recorded demo had started it.
    """
    state_dir = (state_dir or default_state_dir()).resolve()
    report = say or (lambda message: print(f"[demo-down] {message}", flush=True))
    record = _read_record(state_dir)
    if record is None:
        report(f"no demo recorded in {_relative(state_dir)}")
        return
    pid = int(record.get("pid") or 0)
    if pid and pid != os.getpid() and stop_pid(pid, marker=b"demo", grace=60):
        report(f"stopped the running demo (pid {pid}); it cleaned up after itself")
        record = _read_record(state_dir) or record
    for name, agent_pid in (record.get("agents") or {}).items():
        if stop_pid(int(agent_pid), marker=b"classifier.py"):
            report(f"stopped the agent process of {name} (pid {agent_pid})")
    operator_pid = int(record.get("operator") or 0)
    if operator_pid and stop_pid(operator_pid, marker=b"operator"):
        report(f"stopped the operator (pid {operator_pid})")
    prometheus_pid = int(record.get("prometheus") or 0)
    if prometheus_pid and stop_pid(prometheus_pid, marker=b"prometheus"):
        report(f"stopped Prometheus (pid {prometheus_pid})")
    from devenv import agentfield, llm

    if record.get("agentfield_dir"):
        handle = agentfield.read_handle(Path(record["agentfield_dir"]))
        if handle is not None:
            with contextlib.suppress(agentfield.AgentFieldError):
                agentfield.stop_agentfield(handle)
                report(f"stopped the AgentField stand-in (pid {handle.pid})")
    if record.get("llm_dir") and llm.stop_llm_simulator(state_dir=Path(record["llm_dir"])):
        report("stopped the model simulator")
    kubeconfig = Path(record.get("kubeconfig") or "")
    cluster_dir = Path(record.get("cluster_state_dir") or cluster.default_state_dir())
    namespace = str(record.get("namespace") or DEFAULT_NAMESPACE)
    if kubeconfig.is_file() and _reachable(kubeconfig):
        try:
            api = _api_client(kubeconfig)
            _delete_namespace(api, namespace, say=report)
        except Exception as error:  # report, and go on stopping what else is left
            report(f"could not delete namespace {namespace}: {type(error).__name__}: {error}")
    if stop_cluster and record.get("cluster_started") and cluster.is_healthy(cluster_dir):
        report("stopping the control plane the demo had started")
        cluster.down(state_dir=cluster_dir, quiet=True)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    for token_file in ("operator-kubeconfig", "improver-kubeconfig"):
        (state_dir / token_file).unlink(missing_ok=True)
    report("done")


# ------------------------------------------------------------------------------------------------
# command line


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``demo-down``, a CI timeout) unwinds like Ctrl-C, so cleanup runs."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(options: DemoOptions) -> int:
    """Run the demo; returns its exit code."""
    live = options.view == "live" or (options.view == "auto" and sys.stdout.isatty())
    reporter = Reporter(live=live)
    with _sigterm_as_interrupt():
        return Demo(options, reporter).run()


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _cmd_demo(args: argparse.Namespace) -> int:
    options = DemoOptions(
        auto_approve=args.auto_approve,
        namespace=args.namespace,
        state_dir=args.state_dir or default_state_dir(),
        kubeconfig=args.kubeconfig,
        rate=args.rate,
        concurrency=args.concurrency,
        min_failures=args.min_failures,
        timeout=args.timeout,
        view=args.view,
        seed=args.seed,
        router=args.router,
    )
    return run_demo(options)


def _cmd_down(args: argparse.Namespace) -> int:
    try:
        demo_down(args.state_dir)
    except (DemoError, OSError) as error:
        print(f"[demo-down] {error}", file=sys.stderr)
        return 1
    return 0


def register(dev_subparsers: Any) -> None:
    """Add ``promptloop dev demo`` and ``promptloop dev demo-down``."""
    demo = dev_subparsers.add_parser(
        "demo",
        help="run the whole self-improvement loop locally (make demo)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--auto-approve",
        action="store_true",
        help="approve at AwaitingApproval by itself and run unattended (make demo AUTO_APPROVE=1)",
    )
    demo.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE, help="re-created each run")
    demo.add_argument("--state-dir", type=Path, default=None, help="default .cluster/demo")
    demo.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="use this cluster as it is (default: start or reuse the local control plane)",
    )
    demo.add_argument("--rate", type=_positive, default=25.0, help="requests per second (25)")
    demo.add_argument("--concurrency", type=int, default=8, help="requests in flight (8)")
    demo.add_argument(
        "--min-failures", type=int, default=20, help="distinct misses before improving (20)"
    )
    demo.add_argument("--timeout", type=_positive, default=900.0, help="give up after (900 s)")
    demo.add_argument(
        "--view",
        choices=("auto", "live", "lines"),
        default="auto",
        help="live: redraw the screen; lines: progress lines (default: live in a terminal)",
    )
    demo.add_argument("--seed", type=int, default=7, help="ticket order and routing seed")
    demo.add_argument(
        "--router",
        choices=ROUTERS,
        default="agentfield",
        help="agentfield (default): the driver splits by the connector's weights; gateway: "
        "spec.router.gatewayAPI, traffic through AgentField's execute route, split by the "
        "gateway stand-in at the HTTPRoute's weights (make demo ROUTER=gateway)",
    )
    demo.set_defaults(func=_cmd_demo)
    down = dev_subparsers.add_parser(
        "demo-down", help="stop what a demo left running and delete its namespace"
    )
    down.add_argument("--state-dir", type=Path, default=None, help="default .cluster/demo")
    down.set_defaults(func=_cmd_down)
