"""Helpers the chaos tests share: a Kubernetes API client for the admin user, a watcher that
proves a rollout keeps ticking, and the phases an object may be brought to."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config

from promptloop.api import ProposalPhase, RolloutPhase

__all__ = [
    "PROPOSAL_PHASES",
    "ROLLOUT_PHASES",
    "TickWatcher",
    "api_client",
    "parse_time",
    "wait_until",
]

GROUP, VERSION = "promptloop.dev", "v1alpha1"
PROPOSAL_PHASES = {p.value for p in ProposalPhase}
ROLLOUT_PHASES = {p.value for p in RolloutPhase}


def api_client(kubeconfig: Path) -> client.CustomObjectsApi:
    """The custom-objects API as the admin user (the suite's own identity)."""
    return client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp as Kubernetes writes it."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class TickWatcher:
    """Polls one rollout's ``status.decision.decidedAt``; the longest gap between two new values
    says whether the operator kept ticking it while something else went on."""

    api: client.CustomObjectsApi
    namespace: str
    name: str
    poll: float = 0.5
    seen: list[datetime] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TickWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                obj = self.api.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, "agentrollouts", self.name
                )
            except Exception:  # the API server may be the thing under fault
                continue
            decided = ((obj.get("status") or {}).get("decision") or {}).get("decidedAt")
            if decided:
                at = parse_time(decided)
                if not self.seen or at != self.seen[-1]:
                    self.seen.append(at)

    def longest_gap(self) -> float:
        """Seconds between the two furthest-apart consecutive passes seen (inf if < 2 seen)."""
        if len(self.seen) < 2:
            return float("inf")
        return max((b - a).total_seconds() for a, b in zip(self.seen, self.seen[1:], strict=False))


def wait_until(condition: Any, *, timeout: float, interval: float = 0.2) -> Any:
    """The condition's first truthy value, or None at the deadline (the caller records it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def captured_outputs(scenario: Any, *, rollout: str = "classifier") -> dict[str, str]:
    """Everything a person or a tool can read about the namespace: the operator's logs, Events,
    both kinds' objects (status included), each live operator's /metrics, and the CLI's views."""
    import subprocess
    import sys
    import urllib.request

    namespace = scenario.namespace
    kubectl = scenario.kube.kubectl
    outputs = {
        "operator log": "\n".join(op.log_text() for op in scenario.operators),
        "events": kubectl("get", "events", "-n", namespace, "-o", "json").stdout,
        "objects": kubectl(
            "get", "agentrollouts,promptproposals", "-n", namespace, "-o", "json"
        ).stdout,
    }
    for i, operator in enumerate(scenario.operators):
        if operator.proc is not None and operator.proc.poll() is None and operator.metrics_port:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5
                ) as response:
                    outputs[f"metrics {i}"] = response.read().decode(errors="replace")
            except OSError as error:
                outputs[f"metrics {i}"] = f"unreachable: {error}"
    cli = str(Path(sys.executable).parent / "promptloop")
    for command in (["status", rollout, "--color", "never"], ["diff", rollout, "--color", "never"]):
        proc = subprocess.run(
            [cli, *command, "-n", namespace, "--kubeconfig", str(scenario.kube.kubeconfig)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        outputs[f"promptloop {command[0]}"] = proc.stdout + proc.stderr
    return outputs


def sweep_for_secrets(scenario: Any, secrets: list[str], *, during: str) -> None:
    """Grep every captured output for every secret; a hit is an invariant violation."""
    from tests.integration.chaos.ledger import LEDGER

    row = LEDGER.row("secrets in any output")
    for where, text in captured_outputs(scenario).items():
        row.injected += 1
        leaked = [s for s in secrets if s and s in text]
        if leaked:
            row.violations.append(f"{during}: a secret appears in {where}")
        else:
            row.recovered += 1


@dataclass
class StatusLog:
    """Every status transition of the namespace's rollouts and proposals, from watches.

    Each entry is (monotonic time, kind, name, spec.approved, status). A watch that breaks (an
    API server killed under it) is re-opened; what it missed meanwhile is read by the re-list,
    so the log holds every state the objects were observed in, which is what the invariants
    are checked against.
    """

    kubeconfig: Path
    namespace: str
    entries: list[tuple[float, str, str, Any, dict[str, Any]]] = field(default_factory=list)
    reconnects: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(plural,), daemon=True)
            for plural in ("agentrollouts", "promptproposals")
        ]
        self._lock = threading.Lock()

    def __enter__(self) -> StatusLog:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _run(self, plural: str) -> None:
        from kubernetes import watch

        api = api_client(self.kubeconfig)
        last: dict[str, tuple[Any, Any]] = {}
        while not self._stop.is_set():
            try:
                listing = api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural)
                for item in listing["items"]:
                    self._record(plural, item, last)
                stream = watch.Watch().stream(
                    api.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    plural,
                    resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=5,
                )
                for event in stream:
                    if self._stop.is_set():
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(plural, event["object"], last)
            except Exception:
                with self._lock:
                    self.reconnects += 1
                self._stop.wait(0.5)

    def _record(self, plural: str, obj: dict[str, Any], last: dict[str, tuple[Any, Any]]) -> None:
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        approved = (obj.get("spec") or {}).get("approved")
        if last.get(name) == (approved, status):
            return
        last[name] = (approved, status)
        with self._lock:
            self.entries.append((time.monotonic(), plural, name, approved, status))

    def of(self, plural: str, name: str | None = None) -> list[tuple[float, Any, dict[str, Any]]]:
        """(time, spec.approved, status) of one kind (and name), in order."""
        with self._lock:
            return [
                (t, a, s)
                for t, p, n, a, s in self.entries
                if p == plural and (name is None or n == name)
            ]
