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
