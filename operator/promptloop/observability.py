"""The operator's Prometheus metrics and its logging set-up.

Metrics: weight and phase per rollout, failure rate per version, decisions by rollout and
verdict, how late each periodic pass ran and how long a pass took, plus the process (CPU,
memory, open files), Python GC and platform collectors. A registry per instance (not the global
default) keeps tests and embedded operators independent.

Per-rollout series carry ``namespace`` and ``rollout`` labels, the way a user filters a
dashboard. They are removed when they stop being true: a version that left the router (after a
promotion or rollback) loses its weight and failure-rate series at the next observation, and a
deleted rollout loses all of its series (:meth:`OperatorMetrics.forget`), so a dashboard never
shows a rollout or version that no longer exists. The two histograms are per operator, not per
rollout: with hundreds of rollouts, per-rollout buckets would multiply the series count by the
bucket count for a figure (operator latency) that is a property of the process.

``charts/promptloop/dashboards/promptloop.json`` queries exactly the metric names below
(as exposed on /metrics); tests/unit/test_dashboard.py keeps the two in step.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from promptloop.api import RolloutPhase
from promptloop.view import wilson_interval

if TYPE_CHECKING:
    from prometheus_client.metrics import MetricWrapperBase

    from promptloop.api import AgentRollout, AgentRolloutStatus

__all__ = ["LOG_FORMATS", "OperatorMetrics", "configure_logging"]

LOG_FORMATS = ("text", "json")

_RolloutKey = tuple[str, str]
_SeriesByMetric = dict["MetricWrapperBase", set[tuple[str, ...]]]


class OperatorMetrics:
    """Gauges, counters and histograms the operator updates as it reconciles."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # process_* (CPU seconds, resident memory, open fds, start time), python_gc_*, and
        # python_info: what tells a leak or a stuck event loop from a slow API server.
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
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
        self.rate_bounds = Gauge(
            "promptloop_version_failure_rate_bound",
            "Wilson 95% interval of each version's failure rate in the window (bound=lower or "
            "upper), the interval `promptloop status` shows.",
            [*labels, "version", "role", "bound"],
            registry=self.registry,
        )
        self.samples = Gauge(
            "promptloop_version_samples",
            "Requests (total) and failures (failed) of each version in the current window; "
            "with the rate they give the interval a dashboard draws.",
            [*labels, "version", "role", "outcome"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "promptloop_decisions",
            "Verdicts of the decision function, per rollout.",
            [*labels, "verdict"],
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
        # Which label values each rollout has set, per labelled metric: what to remove later.
        self._series: dict[_RolloutKey, _SeriesByMetric] = defaultdict(lambda: defaultdict(set))

    @property
    def per_rollout(self) -> tuple[MetricWrapperBase, ...]:
        """The metrics labelled by namespace and rollout."""
        return (
            self.weight,
            self.phase,
            self.failure_rate,
            self.rate_bounds,
            self.samples,
            self.decisions,
        )

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        """Expose /metrics on a port (a daemon thread; the event loop is not involved)."""
        start_http_server(port, addr=address, registry=self.registry)

    # -- bookkeeping of label sets ------------------------------------------------------------

    @staticmethod
    def _key(rollout: AgentRollout) -> _RolloutKey:
        return (rollout.metadata.namespace or "", rollout.metadata.name)

    def _replace(
        self,
        metric: MetricWrapperBase,
        key: _RolloutKey,
        values: dict[tuple[str, ...], float],
    ) -> None:
        """Set exactly these series of one rollout for ``metric``; remove the others it had."""
        known = self._series[key][metric]
        for stale in known - set(values):
            metric.remove(*key, *stale)
        for labels, value in values.items():
            metric.labels(*key, *labels).set(value)  # type: ignore[attr-defined]
        self._series[key][metric] = set(values)

    def forget(self, namespace: str, name: str) -> None:
        """Remove every series of a rollout that is gone (deleted, or no longer watched)."""
        key = (namespace, name)
        known = self._series.pop(key, {})
        for metric in self.per_rollout:
            for labels in known.get(metric, set()):
                metric.remove(*key, *labels)

    # -- observations ------------------------------------------------------------------------

    def observe(self, rollout: AgentRollout, status: AgentRolloutStatus) -> None:
        """Record the status a pass committed: phase, weights and window counts. Series of
        versions the status no longer names (after a promotion or rollback) are removed."""
        self.observe_phase(rollout, status)
        self.observe_weights(rollout, status)
        self.observe_counts(rollout, status)

    def observe_phase(self, rollout: AgentRollout, status: AgentRolloutStatus) -> None:
        """Record the rollout's phase."""
        self._replace(
            self.phase,
            self._key(rollout),
            {(phase.value,): 1 if status.phase == phase else 0 for phase in RolloutPhase},
        )

    def observe_weights(self, rollout: AgentRollout, status: AgentRolloutStatus) -> None:
        """Record the weights read back from the router; versions it no longer lists go."""
        self._replace(
            self.weight,
            self._key(rollout),
            {(w.version, w.role or "other"): w.percent for w in status.weights},
        )

    def observe_counts(self, rollout: AgentRollout, status: AgentRolloutStatus) -> None:
        """Record both versions' window: failure rate, requests and failures."""
        rates: dict[tuple[str, ...], float] = {}
        bounds: dict[tuple[str, ...], float] = {}
        samples: dict[tuple[str, ...], float] = {}
        if status.counts is not None:
            for role, counts in (
                ("stable", status.counts.stable),
                ("canary", status.counts.canary),
            ):
                if counts is None:
                    continue
                if counts.rate is not None:
                    rates[(counts.version, role)] = counts.rate
                interval = wilson_interval(counts.failed, counts.total)
                if interval is not None:
                    bounds[(counts.version, role, "lower")] = interval[0]
                    bounds[(counts.version, role, "upper")] = interval[1]
                samples[(counts.version, role, "total")] = counts.total
                samples[(counts.version, role, "failed")] = counts.failed
        key = self._key(rollout)
        self._replace(self.failure_rate, key, rates)
        self._replace(self.rate_bounds, key, bounds)
        self._replace(self.samples, key, samples)

    def count_decision(self, rollout: AgentRollout, verdict: str) -> None:
        """Count one verdict for one rollout."""
        key = self._key(rollout)
        self.decisions.labels(*key, verdict).inc()
        self._series[key][self.decisions].add((verdict,))


def configure_logging(log_format: str, *, verbose: bool) -> None:
    """One log handler on the root logger, in ``text`` or ``json`` (one object per line).

    JSON is kopf's own formatter: ``message``, ``severity``, ``timestamp``, and for records
    about a Kubernetes object its reference (``object``: apiVersion, kind, name, uid,
    namespace), which is what a log pipeline indexes on.
    """
    import kopf

    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, not {log_format!r}")
    root = logging.getLogger()
    # kopf.configure installs its own stream handler; a second one (basicConfig's) would print
    # every line twice.
    root.handlers[:] = [h for h in root.handlers if type(h) is not logging.StreamHandler]
    settings: dict[str, Any] = {"verbose": verbose}
    if log_format == "json":
        settings.update(log_format=kopf.LogFormat.JSON, log_refkey="object")
    else:
        settings.update(log_format=kopf.LogFormat.FULL)
    kopf.configure(**settings)
