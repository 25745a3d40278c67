"""Two operators on one Lease: the standby takes over when the leader is SIGKILLed mid-canary.

Both run as subprocesses under the shipped ServiceAccount (the Lease Role of manifests/base is in
promptloop-system, so the Lease lives there, one name per test). What must hold across a
takeover: no step is taken twice (the next step comes an interval after the last one, by at most
maxStep), an approval given while nobody leads is not lost, and the weight guard re-asserts a
reset weight under the new leader. The failover time itself is a figure of ``make bench-scale``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.integration.conftest import Scenario
from tests.integration.harness import OperatorProcess, wait_for
from tests.integration.test_operator import _canary_running, _status, _weight

pytestmark = pytest.mark.cluster

LEADING = "leading: acquired Lease"


def _election_args(scenario: Scenario) -> list[str]:
    return [
        "--leader-election",
        "--lease-name",
        f"test-{scenario.namespace}",
        "--lease-namespace",
        "promptloop-system",
        # Short, so the test is quick; the chart keeps client-go's 15 s / 10 s / 2 s.
        "--lease-duration",
        "4",
        "--renew-deadline",
        "3",
        "--retry-period",
        "0.5",
    ]


def _leads(operator: OperatorProcess) -> bool:
    return LEADING in operator.log_text()


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_standby_takes_over_mid_canary(scenario: Scenario) -> None:
    scenario.setup(
        stable_failure_rate=0.30,
        canary={"interval": "4s", "maxStep": 10, "progressDeadline": "5m"},
    )
    args = _election_args(scenario)
    first = scenario.start_operator(*args)
    wait_for(lambda: _leads(first), timeout=30, what="the first operator leading")
    second = scenario.start_operator(*args)
    _canary_running(scenario)
    stepped = scenario.wait_rollout(
        lambda r: (_status(r).get("canary") or {}).get("steps", 0) >= 1, "a first step", timeout=60
    )
    # The standby is live, but has not acted: it does not hold the Lease.
    assert not _leads(second), second.log_tail()

    first.kill()
    step_at = stepped["status"]["canary"]["lastStepAt"]
    weight = _weight(stepped) or 0
    wait_for(lambda: _leads(second), timeout=30, what="the standby taking the Lease")
    after = scenario.wait_rollout(
        lambda r: (_status(r).get("canary") or {}).get("lastStepAt") not in (None, step_at),
        "the next step under the new leader",
        timeout=60,
    )
    # Not stepped twice: a whole interval after the dead leader's step, and by one step.
    gap = _time(after["status"]["canary"]["lastStepAt"]) - _time(step_at)
    assert gap.total_seconds() >= 3, f"stepped again {gap} after the previous step"
    assert (_weight(after) or 0) - weight <= 10
    assert scenario.agents is not None

    # The weight guard runs under the new leader: a re-registered stable (reset to 100 by
    # AgentField) is brought back to what status says.
    def converged(rollout: dict[str, Any]) -> bool:
        assert scenario.agents is not None
        weights = scenario.agents.weights()
        canary = _weight(rollout) or 0
        return weights.get("2.1.0") == canary * 100 and weights.get("2.0.0") == (100 - canary) * 100

    scenario.wait_rollout(converged, "router weights match status", timeout=15)
    scenario.agents.register("2.0.0", 0.30)
    assert scenario.agents.weights()["2.0.0"] == 100
    scenario.wait_rollout(converged, "the reset weight re-asserted by the new leader", timeout=15)

    # An approval given while nobody leads is acted on by the next leader.
    third = scenario.start_operator(*args)
    second.kill()
    scenario.kube.kubectl(
        "patch",
        "pp",
        "classifier-2-1-0",
        "-n",
        scenario.namespace,
        "--type",
        "merge",
        "-p",
        '{"spec":{"approved":true}}',
    )
    wait_for(lambda: _leads(third), timeout=30, what="the third operator taking the Lease")
    scenario.wait_rollout(
        lambda r: (_weight(r) or 0) >= 50 or _status(r).get("stableVersion") == "2.1.0",
        "the ceiling weight after the approval",
        timeout=30,
    )
    approved = scenario.proposal("classifier-2-1-0")
    assert approved["status"]["approval"] is not None
    promoted = scenario.wait_proposal_phase("classifier-2-1-0", "Promoted", timeout=120)
    assert promoted["status"]["approval"]["promptDigest"] == promoted["status"]["promptDigest"]
    assert scenario.agents.weights()["2.1.0"] == 10000
