"""The Grafana dashboard in the chart queries only what the operator exports.

Every PromQL expression of the dashboard (panel targets and template variables) is parsed for
the metric names and label matchers it uses; each name must be a sample the operator's registry
exposes (after one observation of every kind, so labelled series exist), and each label a
matcher or grouping names must be on that sample (or be one Prometheus adds when it scrapes:
job, instance, pod, namespace of the target is not used). A renamed metric or label fails here
instead of leaving an empty panel. The dashboard must also cover what the issue lists: weights,
phases, failure rates with intervals, decisions, pass latency.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from promptloop.api import AgentRollout, AgentRolloutStatus
from promptloop.observability import OperatorMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "promptloop" / "dashboards" / "promptloop.json"
# Labels Prometheus attaches at scrape time (ServiceMonitor: job, instance, pod, service...).
SCRAPE_LABELS = {"job", "instance", "pod", "service", "container", "endpoint"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
KEYWORDS |= {"unless", "offset"}
_NAME = r"[A-Za-z_:][A-Za-z0-9_:]*"


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, from a registry that has seen every kind of observation."""
    metrics = OperatorMetrics()
    rollout = AgentRollout.model_validate(
        {
            "metadata": {"name": "classifier", "namespace": "demo"},
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
    status = AgentRolloutStatus.model_validate(
        {
            "phase": "Progressing",
            "weights": [
                {"version": "2.0.0", "role": "stable", "percent": 90},
                {"version": "2.1.0", "role": "canary", "percent": 10},
            ],
            "counts": {
                "stable": {"version": "2.0.0", "total": 90, "failed": 9, "rate": 0.1},
                "canary": {"version": "2.1.0", "total": 10, "failed": 0, "rate": 0.0},
            },
        }
    )
    metrics.observe(rollout, status)
    metrics.count_decision(rollout, "step")
    metrics.tick_lateness.observe(0.1)
    metrics.pass_seconds.observe(0.02)
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and query variables."""
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            found.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", text))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\$\w+", "", text)
    names = set()
    for match in re.finditer(_NAME, text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def used_labels(expr: str) -> dict[str, set[str]]:
    """Metric name -> the labels its matchers name; plus '*' -> labels of by (...)."""
    used: dict[str, set[str]] = {}
    for match in re.finditer(rf"({_NAME})\s*\{{([^}}]*)\}}", expr):
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", match.group(2)))
        used.setdefault(match.group(1), set()).update(labels)
    for match in re.finditer(r"\bby\s*\(([^)]*)\)", expr):
        used.setdefault("*", set()).update(x.strip() for x in match.group(1).split(","))
    return used


def test_the_parser_finds_names_and_skips_functions() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{job=~"$job"}[$__rate_interval])))'
        " / ignoring(outcome) b_total"
    )
    assert metric_names(expr) == {"a_bucket", "b_total"}
    assert used_labels(expr) == {"a_bucket": {"job"}, "*": {"le"}}


def test_every_query_names_an_exported_metric_and_its_labels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    samples = exported()
    exprs = expressions(dashboard)
    assert exprs
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        for name in names:
            assert name in samples, f"{name} (in {expr!r}) is not exported by the operator"
        for name, labels in used_labels(expr).items():
            allowed = (
                set().union(*(samples[n] for n in names)) if name == "*" else samples[name]
            ) | SCRAPE_LABELS
            assert labels <= allowed, f"{sorted(labels - allowed)} not on {name} ({expr!r})"


@pytest.mark.parametrize(
    ("what", "metric"),
    [
        ("weights", "promptloop_rollout_weight_percent"),
        ("phases", "promptloop_rollout_phase"),
        ("failure rates", "promptloop_version_failure_rate"),
        ("their intervals", "promptloop_version_failure_rate_bound"),
        ("decisions", "promptloop_decisions_total"),
        ("pass latency", "promptloop_reconcile_seconds_bucket"),
    ],
)
def test_the_dashboard_shows_what_the_issue_asks(what: str, metric: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert any(metric in metric_names(e) for e in expressions(dashboard)), what


def test_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            for used in re.findall(r"\$(\w+)", target["expr"]):
                assert used in variables or used.startswith("__"), used
