"""The operator's Prometheus metrics: weight and phase per rollout, failure rate per version,
decisions by verdict, and how late each rollout's tick ran.

A registry per instance (not the global default) keeps tests and embedded operators independent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from promptloop.api import RolloutPhase

if TYPE_CHECKING:
    from promptloop.api import AgentRollout, AgentRolloutStatus

__all__ = ["OperatorMetrics"]


class OperatorMetrics:
    """Gauges, counters and histograms the operator updates as it reconciles."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["namespace", "rollout"]
        self.weight = Gauge(
            "promptloop_rollout_weight_percent",
            "Traffic share of each version as read back from the router, in percent.",
            [*labels, "version", "role"],
            registry=self.registry,
        )
        self.phase = Gauge(
            "promptloop_rollout_phase",
            "1 for the rollout's current phase, 0 for the others.",
            [*labels, "phase"],
            registry=self.registry,
        )
        self.failure_rate = Gauge(
            "promptloop_version_failure_rate",
            "Failure rate of each version in the current window.",
            [*labels, "version", "role"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "promptloop_decisions",
            "Verdicts of the decision function.",
            ["verdict"],
            registry=self.registry,
        )
        self.tick_lateness = Histogram(
            "promptloop_tick_lateness_seconds",
            "How late a rollout's periodic pass started compared with its schedule.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=self.registry,
        )
        self.pass_seconds = Histogram(
            "promptloop_reconcile_seconds",
            "Duration of one reconciliation pass.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        """Expose /metrics on a port (a daemon thread; the event loop is not involved)."""
        start_http_server(port, addr=address, registry=self.registry)

    def observe_phase(self, rollout: AgentRollout, status: AgentRolloutStatus) -> None:
        """Record the rollout's phase."""
        for phase in RolloutPhase:
            self.phase.labels(
                rollout.metadata.namespace or "", rollout.metadata.name, phase.value
            ).set(1 if status.phase == phase else 0)

    def observe_weights(self, rollout: AgentRollout, status: AgentRolloutStatus) -> None:
        """Record the weights read back from the router."""
        for weight in status.weights:
            self.weight.labels(
                rollout.metadata.namespace or "",
                rollout.metadata.name,
                weight.version,
                weight.role or "other",
            ).set(weight.percent)

    def observe_counts(self, rollout: AgentRollout, status: AgentRolloutStatus) -> None:
        """Record both versions' failure rates in the window."""
        if status.counts is None:
            return
        for role, counts in (("stable", status.counts.stable), ("canary", status.counts.canary)):
            if counts is not None and counts.rate is not None:
                self.failure_rate.labels(
                    rollout.metadata.namespace or "", rollout.metadata.name, counts.version, role
                ).set(counts.rate)

    def count_decision(self, verdict: str) -> None:
        """Count one verdict."""
        self.decisions.labels(verdict).inc()
