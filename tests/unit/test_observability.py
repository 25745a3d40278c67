"""The operator's metrics and logs without a cluster: labels, series removal, collectors, JSON.

Statuses are built with the real models; the registry is read through prometheus_client's own
text exposition, the way Prometheus scrapes it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from promptloop.api import AgentRollout, AgentRolloutStatus
from promptloop.observability import OperatorMetrics, configure_logging


def _rollout(namespace: str, name: str) -> AgentRollout:
    return AgentRollout.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "agent": {"nodeId": "classifier"},
                "stable": {"version": "2.0.0", "deploymentName": "classifier"},
                "router": {
                    "agentfield": {
                        "url": "http://127.0.0.1:1",
                        "tokenSecretRef": {"name": "t", "key": "token"},
                    }
                },
                "metrics": {"http": {"url": "http://127.0.0.1:1/{{ version }}"}},
            },
        }
    )


def _canary(stable: str, canary: str | None, weight: int) -> AgentRolloutStatus:
    weights = [{"version": stable, "role": "stable", "percent": 100 - weight}]
    counts: dict[str, object] = {
        "stable": {"version": stable, "total": 40, "failed": 4, "rate": 0.1}
    }
    if canary:
        weights.append({"version": canary, "role": "canary", "percent": weight})
        counts["canary"] = {"version": canary, "total": 10, "failed": 0, "rate": 0.0}
    return AgentRolloutStatus.model_validate(
        {
            "phase": "Progressing" if canary else "Stable",
            "weights": weights,
            "counts": counts if canary else None,
        }
    )


def _series(metrics: OperatorMetrics) -> dict[str, list[dict[str, str]]]:
    """Sample name -> the label sets exposed for it."""
    out: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(dict(sample.labels))
    return out


def test_process_gc_and_platform_collectors_are_exposed() -> None:
    names = set(_series(OperatorMetrics()))
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total"} <= names
    assert "python_gc_objects_collected_total" in names
    assert "python_info" in names


def test_decisions_carry_namespace_and_rollout() -> None:
    metrics = OperatorMetrics()
    metrics.count_decision(_rollout("team-a", "classifier"), "step")
    metrics.count_decision(_rollout("team-a", "classifier"), "step")
    metrics.count_decision(_rollout("team-b", "router"), "hold")
    value = metrics.registry.get_sample_value
    labels = {"namespace": "team-a", "rollout": "classifier", "verdict": "step"}
    assert value("promptloop_decisions_total", labels) == 2
    labels = {"namespace": "team-b", "rollout": "router", "verdict": "hold"}
    assert value("promptloop_decisions_total", labels) == 1


def test_a_promotion_removes_the_series_of_versions_that_left() -> None:
    metrics = OperatorMetrics()
    rollout = _rollout("team-a", "classifier")
    metrics.observe(rollout, _canary("2.0.0", "2.1.0", 30))
    weights = _series(metrics)["promptloop_rollout_weight_percent"]
    assert {(s["version"], s["role"]) for s in weights} == {
        ("2.0.0", "stable"),
        ("2.1.0", "canary"),
    }
    assert len(_series(metrics)["promptloop_version_failure_rate"]) == 2
    assert len(_series(metrics)["promptloop_version_samples"]) == 4
    stable = {"namespace": "team-a", "rollout": "classifier", "version": "2.0.0", "role": "stable"}
    low = metrics.registry.get_sample_value(
        "promptloop_version_failure_rate_bound", {**stable, "bound": "lower"}
    )
    high = metrics.registry.get_sample_value(
        "promptloop_version_failure_rate_bound", {**stable, "bound": "upper"}
    )
    # Wilson 95% for 4 failures in 40, from the closed form: [0.0396, 0.2305].
    assert low == pytest.approx(0.0396, abs=1e-4) and high == pytest.approx(0.2305, abs=1e-4)
    # Promoted: 2.1.0 is stable, alone; no window.
    metrics.observe(rollout, _canary("2.1.0", None, 0))
    series = _series(metrics)
    assert [(s["version"], s["role"]) for s in series["promptloop_rollout_weight_percent"]] == [
        ("2.1.0", "stable")
    ]
    assert "promptloop_version_failure_rate" not in series
    assert "promptloop_version_samples" not in series
    assert "promptloop_version_failure_rate_bound" not in series
    phases = {s["phase"] for s in series["promptloop_rollout_phase"]}
    assert (
        metrics.registry.get_sample_value(
            "promptloop_rollout_phase",
            {"namespace": "team-a", "rollout": "classifier", "phase": "Stable"},
        )
        == 1
    )
    assert "Progressing" in phases  # every phase has a series, 0 for the others


def test_a_deleted_rollout_loses_every_series_and_others_keep_theirs() -> None:
    metrics = OperatorMetrics()
    gone, kept = _rollout("team-a", "classifier"), _rollout("team-a", "router")
    for rollout in (gone, kept):
        metrics.observe(rollout, _canary("2.0.0", "2.1.0", 10))
        metrics.count_decision(rollout, "hold")
    metrics.forget("team-a", "classifier")
    for name, samples in _series(metrics).items():
        if name.startswith("promptloop_") and "rollout" in str(samples):
            assert all(s.get("rollout") != "classifier" for s in samples), name
    assert (
        metrics.registry.get_sample_value(
            "promptloop_decisions_total",
            {"namespace": "team-a", "rollout": "router", "verdict": "hold"},
        )
        == 1
    )
    # Forgetting twice, or a rollout never seen, is harmless.
    metrics.forget("team-a", "classifier")
    metrics.forget("nowhere", "nothing")


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_logs_are_one_object_per_line_with_the_object(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    root_logger.addHandler(logging.StreamHandler())  # what an earlier basicConfig leaves
    configure_logging("json", verbose=False)
    ref = {"apiVersion": "promptloop.dev/v1alpha1", "kind": "AgentRollout", "name": "classifier"}
    logging.getLogger("promptloop.reconciler").info("stepped to 30%", extra={"k8s_ref": ref})
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, "one handler: every line once"
    record = json.loads(lines[0])
    assert record["message"] == "stepped to 30%"
    assert record["severity"] == "info"
    assert record["object"] == ref
    assert "timestamp" in record


def test_text_logs_and_bad_formats(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("text", verbose=True)
    logging.getLogger("promptloop").debug("weights read back")
    err = capsys.readouterr().err
    assert "weights read back" in err and "DEBUG" in err
    with pytest.raises(ValueError, match="log format"):
        configure_logging("xml", verbose=False)
