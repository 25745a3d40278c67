"""The pure pass (rollout/advance.py) with real-world counters (issue 12): a reset loses one
increment and says so, the decision deadline rolls back with its own Event reason, the
outcome lag keeps a read out of the evidence, and status.evidence carries the strata."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from promptloop.rollout.advance import advance
from promptloop.rollout.effects import PostEvent
from promptloop.rollout.observations import Counters
from tests.unit.test_rollout_advance import (
    NOW,
    READY,
    STABLE,
    in_canary,
    make_rollout,
    observe,
    proposal_in,
)


def _pass(status: dict[str, Any], counters: Counters, **canary: Any) -> Any:
    rollout = make_rollout(status, **canary)
    return advance(
        observe(
            rollout,
            proposal_in("Canary"),
            registered=(STABLE, "2.1.0"),
            challenger_deployment=READY,
            counters=counters,
        )
    )


def _with_last(status: dict[str, Any], stable: tuple[int, int], canary: tuple[int, int]) -> None:
    evidence = status["evidence"]
    evidence["stableLast"] = {"total": stable[0], "failed": stable[1]}
    evidence["canaryLast"] = {"total": canary[0], "failed": canary[1]}
    stratum = evidence["strata"][0]
    stratum.update(
        stableTotal=stable[0], stableFailed=stable[1], canaryTotal=canary[0], canaryFailed=canary[1]
    )


def test_a_counter_reset_loses_one_increment_and_is_named_not_a_new_window() -> None:
    status = in_canary()
    _with_last(status, (3600, 360), (400, 40))
    # The canary restarted: its counters now read 12 requests, 1 failure.
    step = _pass(status, Counters(3800, 380, 12, 1))
    after = step.status
    assert after.evidence is not None and after.evidence.canary_resets == 1
    # The stable's increment counts, the canary's lost one does not; the window stays.
    assert after.counts.stable.total == 3800 and after.counts.canary.total == 400
    assert "canary counter went back" in after.decision.reason
    metrics = next(c for c in after.conditions if c.type == "MetricsAvailable")
    assert metrics.reason == "CounterReset"
    assert "re-opened" not in after.decision.reason


def test_an_undecided_canary_is_rolled_back_at_the_decision_deadline() -> None:
    status = in_canary()
    _with_last(status, (3600, 360), (400, 40))
    # Equal rates: inconclusive. The window opened 5 minutes ago; the deadline is 4 minutes.
    step = _pass(status, Counters(3780, 378, 420, 42), decisionDeadline="4m")
    after = step.status
    assert after.phase.value == "RolledBack"
    events = [e.reason for e in step.effects if isinstance(e, PostEvent)]
    assert "DecisionDeadline" in events and "RolledBack" not in events
    assert "Decision deadline passed" in after.history[-1].message


def test_before_the_deadline_the_same_canary_holds() -> None:
    status = in_canary()
    _with_last(status, (3600, 360), (400, 40))
    step = _pass(status, Counters(3780, 378, 420, 42), decisionDeadline="10m")
    assert step.status.phase.value == "Progressing"
    assert step.status.decision.verdict == "hold"
    assert step.status.decision.strata == 1


def test_a_read_within_the_outcome_lag_of_a_weight_change_is_not_evidence() -> None:
    status = in_canary()
    _with_last(status, (3600, 360), (400, 40))
    # The weight was 10 since the last read; now it is 30 (a step just happened): the first
    # reads under 30 within the lag are skipped.
    status["canary"]["weight"] = 30
    status["evidence"]["readAt"] = (NOW - timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    rollout_status = dict(status)
    rollout = make_rollout(rollout_status)
    spec_metrics = rollout.spec.metrics.model_copy(update={"outcome_lag": "2m"})
    rollout = rollout.model_copy(
        update={"spec": rollout.spec.model_copy(update={"metrics": spec_metrics})}
    )
    step = advance(
        observe(
            rollout,
            proposal_in("Canary", weight=30),
            registered=(STABLE, "2.1.0"),
            challenger_deployment=READY,
            counters=Counters(3740, 374, 460, 46),
        )
    )
    after = step.status
    assert after.evidence is not None and after.evidence.skipped_reads == 1
    assert [s.weight for s in after.evidence.strata] == [10, 30]
    assert after.evidence.strata[1].canary_total == 0
    assert after.counts.canary.total == 400


def test_missing_metrics_do_not_stop_the_deadline_clock() -> None:
    status = in_canary()
    _with_last(status, (3600, 360), (400, 40))
    rollout = make_rollout(status, decisionDeadline="4m")
    step = advance(
        observe(
            rollout,
            proposal_in("Canary"),
            registered=(STABLE, "2.1.0"),
            challenger_deployment=READY,
            counters=None,
            counters_problem="HTTP 503",
        )
    )
    assert step.status.phase.value == "RolledBack"
    assert "Decision deadline passed" in step.status.history[-1].message
    assert "HTTP 503" in step.status.history[-1].message
    # Before the deadline the same pass only holds.
    rollout = make_rollout(in_canary(), decisionDeadline="10m")
    step = advance(
        observe(
            rollout,
            proposal_in("Canary"),
            registered=(STABLE, "2.1.0"),
            challenger_deployment=READY,
            counters=None,
            counters_problem="HTTP 503",
        )
    )
    assert step.status.phase.value == "Progressing"
    assert step.status.decision.reason.startswith("metrics unavailable")
