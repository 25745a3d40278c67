"""Dependencies misbehaving (issue 15, Deliver 3): a fault-injecting proxy between the operator
and AgentField, and another between the operator and the metrics endpoint.

One canary runs throughout (a better challenger that would climb to the approval ceiling); each
fault is injected for a while and then cleared. Expected, per fault: the rollout holds with a
condition (or, for data that is wrong rather than missing, a decision) naming the cause; no
promotion and no rollback happen on missing or inconsistent data; the weight never moves while
the data is missing; when the fault ends the rollout recovers by itself (condition True again,
the router's weights equal to what status says); and the operator does not hammer the broken
dependency (requests per second during the fault are compared with those before it).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pytest

from tests.integration.chaos.common import sweep_for_secrets, wait_until
from tests.integration.chaos.faultproxy import FAULTS, Fault, FaultProxy
from tests.integration.chaos.ledger import BUDGET, LEDGER
from tests.integration.conftest import Scenario

pytestmark = pytest.mark.cluster

BETTER = "Classify the ticket as billing, bug, or other. Refunds are billing. One word."


class Reset:
    """Counters that went back to zero at the moment of injection and count on from there
    (an agent restarted with its counters in memory)."""

    def __init__(self) -> None:
        self.at: dict[str, tuple[int, int]] = {}

    def __call__(self, path: str, body: Any) -> Any:
        version = unquote(path.rsplit("/", 1)[-1])
        total, failed = self.at.setdefault(version, (body["total"], body["failed"]))
        return {"total": max(0, body["total"] - total), "failed": max(0, body["failed"] - failed)}


@dataclass(frozen=True)
class Case:
    """One fault: where, what, and how the rollout must say so."""

    name: str
    target: str  # "agentfield" or "metrics"
    fault: Callable[[], Fault]
    condition: str | None  # the condition that must go False (None: the decision says it)
    cause: str  # regex the condition's message (or the decision's reason) must match
    ci: bool = False


CASES = [
    Case("AgentField: latency spike", "agentfield", lambda: FAULTS["latency spike"], None, ""),
    Case(
        "AgentField: 5xx burst",
        "agentfield",
        lambda: FAULTS["5xx burst"],
        "RouterReachable",
        "HTTP 503",
    ),
    Case(
        "AgentField: connection reset",
        "agentfield",
        lambda: FAULTS["connection reset"],
        "RouterReachable",
        "Error|reset",
    ),
    Case(
        "AgentField: timeout",
        "agentfield",
        lambda: FAULTS["timeout (hang)"],
        "RouterReachable",
        "Timeout",
    ),
    Case(
        "AgentField: truncated body",
        "agentfield",
        lambda: FAULTS["truncated body"],
        "RouterReachable",
        "Error|incomplete|closed",
    ),
    Case(
        "AgentField: non-JSON body",
        "agentfield",
        lambda: FAULTS["non-JSON body"],
        "RouterReachable",
        "JSON",
    ),
    Case(
        "AgentField: 403 after token rotation",
        "agentfield",
        lambda: Fault("header", name="X-Connector-Token", value="rotated-token"),
        "RouterReachable",
        "HTTP 403",
        ci=True,
    ),
    Case(
        "metrics: 5xx burst", "metrics", lambda: FAULTS["5xx burst"], "MetricsAvailable", "HTTP 503"
    ),
    Case(
        "metrics: connection reset",
        "metrics",
        lambda: FAULTS["connection reset"],
        "MetricsAvailable",
        "Error|reset",
    ),
    Case(
        "metrics: timeout",
        "metrics",
        lambda: FAULTS["timeout (hang)"],
        "MetricsAvailable",
        "Timeout",
    ),
    Case(
        "metrics: truncated body",
        "metrics",
        lambda: FAULTS["truncated body"],
        "MetricsAvailable",
        "Error|incomplete|closed",
    ),
    Case(
        "metrics: non-JSON body",
        "metrics",
        lambda: FAULTS["non-JSON body"],
        "MetricsAvailable",
        "JSON",
    ),
    Case(
        "metrics: decreasing counters",
        "metrics",
        lambda: Fault("rewrite", transform=Reset()),
        None,
        "backwards",
    ),
    Case(
        "metrics: absurd counters (failed > total)",
        "metrics",
        lambda: Fault(
            "rewrite", transform=lambda _p, b: {"total": b["total"], "failed": b["total"] + 7}
        ),
        "MetricsAvailable",
        "exceeds total",
        ci=True,
    ),
    Case(
        "metrics: absurd counters (negative, fractional)",
        "metrics",
        lambda: Fault("rewrite", transform=lambda _p, b: {"total": -1, "failed": 0.5}),
        "MetricsAvailable",
        "non-negative integer",
    ),
]


def _status(rollout: dict[str, Any]) -> dict[str, Any]:
    return rollout.get("status") or {}


def _condition(rollout: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in _status(rollout).get("conditions", []) if c["type"] == type_), {})


def _weight(rollout: dict[str, Any]) -> int:
    return int((_status(rollout).get("canary") or {}).get("weight") or 0)


def test_dependency_faults_hold_name_the_cause_and_recover(scenario: Scenario) -> None:
    scenario.setup(
        stable_failure_rate=0.30,
        canary={
            "initialWeight": 5,
            "maxStep": 5,
            "ceiling": 50,
            "interval": "1s",
            "minSamples": 30,
            "progressDeadline": "10m",
        },
    )
    assert scenario.agents is not None
    agents = scenario.agents
    router_proxy = FaultProxy(scenario.agentfield.url)
    metrics_proxy = FaultProxy(agents.metrics_url.split("/counts/")[0])
    proxies = {"agentfield": router_proxy, "metrics": metrics_proxy}
    try:
        scenario.kube.kubectl(
            "patch",
            "ar",
            "classifier",
            "-n",
            scenario.namespace,
            "--type",
            "merge",
            "-p",
            json.dumps(
                {
                    "spec": {
                        "router": {"agentfield": {"url": router_proxy.url}},
                        "metrics": {
                            "http": {"url": f"{metrics_proxy.url}/counts/{{{{ version }}}}"}
                        },
                    }
                }
            ),
        )
        scenario.start_operator()
        scenario.propose("classifier-2-1-0", "2.1.0", BETTER)
        scenario.wait_proposal_phase("classifier-2-1-0", "Rendered", timeout=60)
        agents.register("2.1.0", 0.02)
        scenario.wait_rollout(lambda r: _weight(r) > 0, "the canary seeded", timeout=60)

        # The request rate of a healthy operator, the yardstick for "no retry storm".
        base = {k: p.count() for k, p in proxies.items()}
        quiet_started = time.monotonic()
        wait_until(lambda: time.monotonic() - quiet_started >= 4, timeout=10)
        quiet = time.monotonic() - quiet_started
        baseline_rate = {k: (p.count() - base[k]) / quiet for k, p in proxies.items()}

        cases = CASES if BUDGET.name == "full" else [c for c in CASES if c.ci]
        for case in cases:
            _inject(scenario, case, proxies[case.target], baseline_rate[case.target])
        sweep_for_secrets(
            scenario, [scenario.agentfield.token, "rotated-token"], during="dependency faults"
        )
    finally:
        router_proxy.close()
        metrics_proxy.close()
    violations = (
        [v for c in CASES for v in LEDGER.row(c.name).violations]
        if False
        else [
            v
            for name, row in LEDGER.rows.items()
            if name.startswith(("AgentField:", "metrics:"))
            for v in row.violations
        ]
    )
    assert not violations, "\n".join(violations)


def _inject(scenario: Scenario, case: Case, proxy: FaultProxy, baseline_rate: float) -> None:
    row = LEDGER.row(case.name)
    row.injected += 1
    proposal_phase_before = scenario.proposal("classifier-2-1-0")["status"]["phase"]
    started_count = proxy.inject(case.fault())
    started = time.monotonic()
    named: dict[str, Any] | None = None

    def cause_named(rollout: dict[str, Any]) -> dict[str, Any] | None:
        if case.condition is not None:
            condition = _condition(rollout, case.condition)
            if condition.get("status") == "False" and re.search(
                case.cause, condition.get("message", "")
            ):
                return rollout
            return None
        reason = (_status(rollout).get("decision") or {}).get("reason", "")
        return rollout if re.search(case.cause, reason) else None

    # Hold the fault for the budgeted time (longer if the rollout has not yet named it).
    held: list[dict[str, Any]] = []
    while time.monotonic() - started < BUDGET.proxy_fault_seconds or (case.cause and named is None):
        if time.monotonic() - started > BUDGET.proxy_fault_seconds + 30:
            break
        rollout = scenario.rollout()
        held.append(rollout)
        if named is None and (case.cause == "" or cause_named(rollout)):
            named = rollout
        time.sleep(0.3)
    ended_count = proxy.clear()
    duration = time.monotonic() - started
    requests = ended_count - started_count
    row.requests_during_fault = (row.requests_during_fault or 0) + requests
    row.notes["fault_seconds"] = round(duration, 1)
    row.notes["requests_per_second"] = round(requests / duration, 2)
    row.notes["healthy_requests_per_second"] = round(baseline_rate, 2)
    if named is None:
        where = case.condition or "its decision"
        row.violations.append(f"the rollout never named the cause (/{case.cause}/) in {where}")
    # No promotion or rollback, no weight above the ceiling, no step once the data was missing.
    ceiling = 50
    for rollout in held:
        if _status(rollout).get("phase") in ("Promoting", "RolledBack", "Stable"):
            row.violations.append(f"phase {_status(rollout)['phase']} during the fault")
            break
        if _weight(rollout) >= ceiling:
            row.violations.append(
                f"weight {_weight(rollout)} at or above the ceiling without approval"
            )
            break
    if named is not None and case.condition is not None:
        index = next(i for i, r in enumerate(held) if r is named)
        weights = {_weight(r) for r in held[index:]}
        if len(weights) > 1:
            row.violations.append(f"the weight moved while the data was missing: {sorted(weights)}")
    phase_after = scenario.proposal("classifier-2-1-0")["status"]["phase"]
    if phase_after not in ("Canary", "AwaitingApproval") or (
        proposal_phase_before == "AwaitingApproval" and phase_after != "AwaitingApproval"
    ):
        row.violations.append(f"proposal went from {proposal_phase_before} to {phase_after}")
    # A retry storm is many times the healthy rate; a few retries per pass are not.
    if requests / duration > 4 * baseline_rate + 2:
        row.violations.append(
            f"retry storm: {requests / duration:.1f} requests/s vs {baseline_rate:.1f} when healthy"
        )
    # Recovery on its own: the condition True again and the router's weights as status says.
    assert scenario.agents is not None
    agents = scenario.agents

    def recovered() -> bool:
        rollout = scenario.rollout()
        conditions_ok = all(
            _condition(rollout, t).get("status") == "True"
            for t in ("RouterReachable", "MetricsAvailable")
        )
        weight = _weight(rollout)
        return conditions_ok and weight > 0 and agents.weights().get("2.1.0") == weight * 100

    recovery_started = time.monotonic()
    if wait_until(recovered, timeout=30):
        row.recovered += 1
        row.notes["recovery_seconds"] = round(time.monotonic() - recovery_started, 1)
    else:
        conditions = _status(scenario.rollout()).get("conditions")
        row.violations.append(f"not recovered 30 s after the fault ended: {conditions}")
