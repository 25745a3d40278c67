"""What approval, a tick's verdict, rollback, rejection, promotion and deletion do to both
statuses: the pure functions of ``promptloop.rollout.plan``.

Whole lives of rollouts, driven through the real pass (:func:`promptloop.rollout.advance.advance`)
with its guards, are in ``test_rollout_advance.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptloop.api import (
    AgentRolloutStatus,
    Approval,
    CanaryPolicy,
    CanaryStatus,
    Condition,
    ConditionStatus,
    HistoryEntry,
    LocalObjectReference,
    PromptProposal,
    PromptProposalSpec,
    PromptProposalStatus,
    ProposalPhase,
    RetiringDeployment,
    RolloutPhase,
    WindowBaseline,
)
from promptloop.api.common import ObjectMeta
from promptloop.rollout.decision import Decision, Verdict
from promptloop.rollout.phases import (
    PROPOSAL_TRANSITIONS,
    ROLLOUT_TRANSITIONS,
    iso,
    iso_precise,
)
from promptloop.rollout.plan import (
    Notice,
    Outcome,
    apply_verdict,
    approval_command,
    approve,
    begin_canary,
    clear_canary,
    is_due,
    parse_time,
    promote,
    reject,
    roll_back,
    seed,
    withdraw_exposure,
)

P = ProposalPhase
R = RolloutPhase
NS = "agents"
NAME = "classifier-2-1-0"
VERSION = "2.1.0"
DEPLOYMENT = "classifier-2-1-0"
DIGEST = "0" * 64
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
STARTED = NOW - timedelta(minutes=10)
LAST_STEP = NOW - timedelta(minutes=1)
# is_due lets a tick that comes a little early count (the daemon's timer and the time a pass
# reads its clock drift by milliseconds); see test_is_due_*.
JITTER = timedelta(seconds=0.5)


def policy(**overrides: Any) -> CanaryPolicy:
    values: dict[str, Any] = {
        "initial_weight": 5,
        "max_step": 10,
        "floor": 0,
        "ceiling": 50,
        "interval": "30s",
    }
    return CanaryPolicy(**{**values, **overrides})


def proposal(
    phase: P | None = P.CANARY,
    *,
    weight: int | None = 20,
    approval: Approval | None = None,
    name: str = NAME,
    version: str = VERSION,
) -> PromptProposal:
    return PromptProposal(
        metadata=ObjectMeta(name=name, namespace=NS),
        spec=PromptProposalSpec(
            rollout_ref=LocalObjectReference(name="classifier"),
            version=version,
            system_prompt="Classify the ticket.",
        ),
        status=PromptProposalStatus(
            phase=phase,
            weight=weight,
            approval=approval,
            deployment_name=DEPLOYMENT,
            prompt_digest=DIGEST,
        ),
    )


def rollout(
    phase: R | None = R.PROGRESSING,
    *,
    weight: int | None = 20,
    approved: bool = False,
    canary: bool = True,
    stable_proposal: str | None = None,
    stable_deployment: str = "classifier",
    retiring: list[RetiringDeployment] | None = None,
) -> AgentRolloutStatus:
    return AgentRolloutStatus(
        phase=phase,
        message="before",
        stable_version="2.0.0",
        stable_deployment=stable_deployment,
        stable_prompt_digest="1" * 64,
        stable_proposal=stable_proposal,
        canary=CanaryStatus(
            proposal=NAME,
            version=VERSION,
            weight=weight,
            deployment=DEPLOYMENT,
            prompt_digest=DIGEST,
            started_at=iso(STARTED),
            last_step_at=iso(LAST_STEP) if weight is not None else None,
            steps=0 if weight is None else 2,
            approved=approved,
            step_stable_total=900,
            step_canary_total=100,
        )
        if canary
        else None,
        retiring=retiring or [],
        window=WindowBaseline(started_at=iso(STARTED), stable_total=500, canary_total=3),
        history=[HistoryEntry(at=iso(STARTED), event="seed", version=VERSION, weight=5)],
        conditions=[
            Condition(
                type="Ready",
                status=ConditionStatus.TRUE,
                reason="Reconciled",
                last_transition_time=iso(STARTED),
            )
        ],
    )


def decision(verdict: Verdict, next_weight: int, reason: str = "the evidence says so") -> Decision:
    return Decision(verdict, reason, -3.5, 120, next_weight)


def condition(status: AgentRolloutStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def allowed(table: dict[Any, frozenset[Any]], before: Any, after: Any) -> bool:
    return before == after or after in table[before]


def check_transitions(before_r: Any, before_p: Any, outcome: Outcome) -> None:
    assert allowed(ROLLOUT_TRANSITIONS, before_r, outcome.rollout.phase)
    if outcome.proposal is not None:
        assert allowed(PROPOSAL_TRANSITIONS, before_p, outcome.proposal.phase)


def without(status: AgentRolloutStatus, *fields: str) -> dict[str, Any]:
    dumped = status.model_dump()
    for name in fields:
        dumped.pop(name)
    return dumped


# --- begin_canary and seed --------------------------------------------------------------------


@pytest.mark.parametrize("rollout_phase", [None, R.PENDING, R.STABLE, R.ROLLED_BACK, R.INVALID])
@pytest.mark.parametrize("proposal_phase", [None, P.PENDING, P.INVALID, P.RENDERED])
def test_begin_canary_starts_progressing_with_a_fresh_challenger(
    rollout_phase: R | None, proposal_phase: P | None
) -> None:
    before = rollout(rollout_phase, canary=False)
    before.decision = None
    pp = proposal(proposal_phase, weight=None)
    outcome = begin_canary(
        rollout=before, proposal=pp, deployment=DEPLOYMENT, digest=DIGEST, now=NOW
    )
    check_transitions(rollout_phase, proposal_phase, outcome)
    status = outcome.rollout
    assert status.phase is R.PROGRESSING
    assert status.canary == CanaryStatus(
        proposal=NAME,
        version=VERSION,
        weight=None,  # no traffic until it is ready
        deployment=DEPLOYMENT,
        prompt_digest=DIGEST,
        started_at=iso_precise(NOW),
    )
    # The last canary's evidence does not carry over.
    assert (status.window, status.decision, status.counts) == (None, None, None)
    assert (status.stable_version, status.stable_deployment) == ("2.0.0", "classifier")
    assert status.history[-1].event == "rendered"
    assert status.history[-1].version == VERSION
    assert outcome.proposal is not None
    assert outcome.proposal.phase is P.RENDERED
    assert DEPLOYMENT in (outcome.proposal.message or "")
    assert [n.on_proposal for n in outcome.notices] == [True]
    assert not outcome.scale_challenger_to_zero
    # The inputs are not modified.
    assert before.canary is None
    assert pp.status.phase is proposal_phase


def test_begin_canary_replaces_a_challenger_held_at_the_floor() -> None:
    held = rollout(R.ROLLED_BACK, weight=5)
    assert held.canary is not None
    held.canary.rolled_back = True
    nxt = proposal(P.PENDING, weight=None, name="classifier-2-2-0", version="2.2.0")
    outcome = begin_canary(rollout=held, proposal=nxt, deployment="d", digest=DIGEST, now=NOW)
    assert outcome.rollout.phase is R.PROGRESSING
    assert outcome.rollout.canary is not None
    assert outcome.rollout.canary.proposal == "classifier-2-2-0"
    assert outcome.rollout.canary.rolled_back is False
    assert outcome.rollout.canary.weight is None


def test_seed_gives_the_initial_weight_and_starts_the_interval() -> None:
    before = rollout(weight=None)
    outcome = seed(
        rollout=before, proposal=proposal(P.RENDERED, weight=None), policy=policy(), now=NOW
    )
    check_transitions(R.PROGRESSING, P.RENDERED, outcome)
    canary = outcome.rollout.canary
    assert canary is not None
    assert canary.weight == 5
    assert canary.last_step_at == iso_precise(NOW)
    assert canary.steps == 0  # seeding is not a step up
    assert outcome.rollout.phase is R.PROGRESSING
    assert outcome.proposal is not None
    assert (outcome.proposal.phase, outcome.proposal.weight) == (P.CANARY, 5)
    assert outcome.rollout.history[-1].event == "seed"
    assert outcome.rollout.history[-1].weight == 5
    assert sorted(n.on_proposal for n in outcome.notices) == [False, True]
    assert all("5%" in n.message for n in outcome.notices)
    assert before.canary is not None and before.canary.weight is None


# --- apply_verdict: STEP ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "approved", "weight", "to", "expected"),
    [
        (R.PROGRESSING, False, 5, 15, R.PROGRESSING),
        (R.PROGRESSING, False, 30, 40, R.PROGRESSING),
        (R.PROGRESSING, True, 40, 50, R.PROMOTING),  # early approval: steps through the ceiling
        (R.PROGRESSING, True, 20, 50, R.PROMOTING),
        (R.PROMOTING, True, 50, 60, R.PROMOTING),
        (R.PROMOTING, True, 90, 100, R.PROMOTING),
    ],
)
def test_step_raises_the_weight_and_restarts_the_interval(
    phase: R, approved: bool, weight: int, to: int, expected: R
) -> None:
    before = rollout(phase, weight=weight, approved=approved)
    pp = proposal(P.CANARY, weight=weight)
    outcome = apply_verdict(
        rollout=before,
        proposal=pp,
        policy=policy(),
        decision=decision(Verdict.STEP, to),
        namespace=NS,
        now=NOW,
    )
    check_transitions(phase, P.CANARY, outcome)
    status = outcome.rollout
    canary = status.canary
    assert canary is not None and before.canary is not None
    assert status.phase is expected
    assert canary.weight == to
    assert canary.last_step_at == iso_precise(NOW)
    assert canary.steps == before.canary.steps + 1
    # The traffic check counts requests from the next tick's counters at the new weight.
    assert (canary.step_stable_total, canary.step_canary_total) == (None, None)
    assert status.window == before.window  # the evidence window spans the whole canary
    assert status.decision is not None
    assert (status.decision.verdict, status.decision.decided_at) == ("step", iso(NOW))
    assert (status.decision.statistic, status.decision.samples_needed) == (-3.5, 120)
    assert status.history[-1] == HistoryEntry(
        at=iso(NOW), event="step", version=VERSION, weight=to, message="the evidence says so"
    )
    assert f"from {weight}% to {to}%" in (status.message or "")
    assert outcome.proposal is not None
    assert (outcome.proposal.phase, outcome.proposal.weight) == (P.CANARY, to)
    assert [(n.on_proposal, n.reason) for n in outcome.notices] == [(False, "Stepped")]
    assert not outcome.scale_challenger_to_zero
    assert before.canary.weight == weight  # input untouched


def test_a_step_to_the_same_weight_is_a_hold() -> None:
    before = rollout(weight=20)
    outcome = apply_verdict(
        rollout=before,
        proposal=proposal(),
        policy=policy(),
        decision=decision(Verdict.STEP, 20),
        namespace=NS,
        now=NOW,
    )
    assert without(outcome.rollout, "message", "decision") == without(before, "message", "decision")
    assert outcome.notices == []


# --- apply_verdict: HOLD ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "proposal_phase", "weight"),
    [
        (R.PROGRESSING, P.CANARY, 20),
        (R.AWAITING_APPROVAL, P.AWAITING_APPROVAL, 40),
        (R.PROMOTING, P.CANARY, 70),
        (R.PROMOTING, P.CANARY, 100),
    ],
)
def test_hold_changes_nothing_but_the_message_and_the_decision(
    phase: R, proposal_phase: P, weight: int
) -> None:
    before = rollout(phase, weight=weight)
    pp = proposal(proposal_phase, weight=weight)
    outcome = apply_verdict(
        rollout=before,
        proposal=pp,
        policy=policy(),
        decision=decision(Verdict.HOLD, weight, "inconclusive"),
        namespace=NS,
        now=NOW,
    )
    assert without(outcome.rollout, "message", "decision") == without(before, "message", "decision")
    assert outcome.proposal == pp.status
    assert outcome.notices == []
    assert not outcome.scale_challenger_to_zero
    assert outcome.rollout.decision is not None
    assert outcome.rollout.decision.verdict == "hold"
    assert outcome.rollout.decision.reason == "inconclusive"
    assert f"{weight}%" in (outcome.rollout.message or "")
    assert "inconclusive" in (outcome.rollout.message or "")


# --- apply_verdict: AWAIT_APPROVAL ------------------------------------------------------------


def _await(status: AgentRolloutStatus, pp: PromptProposal, now: datetime) -> Outcome:
    return apply_verdict(
        rollout=status,
        proposal=pp,
        policy=policy(),
        decision=decision(Verdict.AWAIT_APPROVAL, 40, "at least as good"),
        namespace=NS,
        now=now,
    )


def test_entering_await_approval_posts_the_command_once() -> None:
    before = rollout(R.PROGRESSING, weight=40)
    outcome = _await(before, proposal(P.CANARY, weight=40), NOW)
    check_transitions(R.PROGRESSING, P.CANARY, outcome)
    command = approval_command(NS, NAME)
    assert outcome.rollout.phase is R.AWAITING_APPROVAL
    assert outcome.proposal is not None
    assert outcome.proposal.phase is P.AWAITING_APPROVAL
    assert sorted((n.on_proposal, n.reason) for n in outcome.notices) == [
        (False, "AwaitingApproval"),
        (True, "AwaitingApproval"),
    ]
    for text in [
        *(n.message for n in outcome.notices),
        outcome.rollout.message,
        outcome.proposal.message,
    ]:
        assert text is not None
        assert command in text
        assert "40%" in text and "50%" in text  # where it is, where approval takes it
    awaiting = condition(outcome.rollout, "AwaitingApproval")
    assert awaiting is not None
    assert (awaiting.status, awaiting.reason) == (ConditionStatus.TRUE, "CeilingReached")
    assert awaiting.last_transition_time == iso(NOW)
    assert command in awaiting.message
    # Waiting is not a step: the weight and the interval stay where they are.
    assert outcome.rollout.canary == before.canary
    assert outcome.proposal.weight == 40
    assert outcome.rollout.history[-1].event == "await-approval"


def test_staying_in_await_approval_posts_nothing_more_and_keeps_the_command() -> None:
    first = _await(rollout(R.PROGRESSING, weight=40), proposal(P.CANARY, weight=40), NOW)
    assert first.proposal is not None
    status, pp_status = first.rollout, first.proposal
    notices = list(first.notices)
    verdicts = [Verdict.AWAIT_APPROVAL, Verdict.HOLD, Verdict.AWAIT_APPROVAL, Verdict.HOLD]
    verdicts += [Verdict.AWAIT_APPROVAL] * 3
    for i, verdict in enumerate(verdicts, start=1):
        outcome = apply_verdict(
            rollout=status,
            proposal=proposal(P.AWAITING_APPROVAL, weight=40).model_copy(
                update={"status": pp_status}
            ),
            policy=policy(),
            decision=decision(verdict, 40, f"tick {i}"),
            namespace=NS,
            now=NOW + timedelta(seconds=30 * i),
        )
        assert outcome.proposal is not None
        status, pp_status = outcome.rollout, outcome.proposal
        notices += outcome.notices
        assert status.phase is R.AWAITING_APPROVAL
        assert pp_status.phase is P.AWAITING_APPROVAL
    assert len(notices) == 2
    assert [h.event for h in status.history].count("await-approval") == 1
    awaiting = condition(status, "AwaitingApproval")
    assert awaiting is not None
    assert awaiting.status is ConditionStatus.TRUE
    assert awaiting.last_transition_time == iso(NOW)
    # However the ticks went, whoever looks at status still finds how to approve.
    command = approval_command(NS, NAME)
    assert command in awaiting.message
    assert command in (status.message or "")
    assert command in (pp_status.message or "")


def test_a_step_while_waiting_leaves_the_wait_and_the_next_ceiling_is_announced() -> None:
    # A person raised the ceiling from 50 to 80 while the rollout waited at 40: the decision
    # steps on below the new ceiling, so the rollout is no longer waiting for anyone.
    raised = policy(ceiling=80)
    waiting = _await(rollout(R.PROGRESSING, weight=40), proposal(P.CANARY, weight=40), LAST_STEP)
    assert waiting.proposal is not None
    pp = proposal(P.AWAITING_APPROVAL, weight=40).model_copy(update={"status": waiting.proposal})
    stepped = apply_verdict(
        rollout=waiting.rollout,
        proposal=pp,
        policy=raised,
        decision=decision(Verdict.STEP, 50),
        namespace=NS,
        now=NOW,
    )
    check_transitions(R.AWAITING_APPROVAL, P.AWAITING_APPROVAL, stepped)
    assert stepped.rollout.phase is R.PROGRESSING
    assert stepped.proposal is not None and stepped.proposal.phase is P.CANARY
    awaiting = condition(stepped.rollout, "AwaitingApproval")
    assert awaiting is not None and awaiting.status is ConditionStatus.FALSE
    # Reaching the new ceiling is a new wait, and people are told about it.
    again = apply_verdict(
        rollout=stepped.rollout,
        proposal=pp.model_copy(update={"status": stepped.proposal}),
        policy=raised,
        decision=decision(Verdict.AWAIT_APPROVAL, 50),
        namespace=NS,
        now=NOW + timedelta(seconds=30),
    )
    assert again.rollout.phase is R.AWAITING_APPROVAL
    assert [n.reason for n in again.notices] == ["AwaitingApproval"] * 2
    assert all("ceiling 80%" in n.message for n in again.notices)


# --- apply_verdict: ROLLBACK, and roll_back itself --------------------------------------------


@pytest.mark.parametrize(
    ("phase", "proposal_phase", "weight"),
    [
        (R.PROGRESSING, P.CANARY, 20),
        (R.AWAITING_APPROVAL, P.AWAITING_APPROVAL, 40),
        (R.PROMOTING, P.CANARY, 80),
    ],
)
def test_rollback_with_floor_zero_drains_the_challenger(
    phase: R, proposal_phase: P, weight: int
) -> None:
    before = rollout(phase, weight=weight)
    outcome = apply_verdict(
        rollout=before,
        proposal=proposal(proposal_phase, weight=weight),
        policy=policy(floor=0),
        decision=decision(Verdict.ROLLBACK, 0, "canary is worse"),
        namespace=NS,
        now=NOW,
    )
    check_transitions(phase, proposal_phase, outcome)
    status = outcome.rollout
    assert status.phase is R.ROLLED_BACK
    assert status.canary is None  # out of the router: AgentField cannot drain by weight
    assert outcome.scale_challenger_to_zero
    assert status.decision is not None and status.decision.verdict == "rollback"
    assert outcome.proposal is not None
    assert (outcome.proposal.phase, outcome.proposal.weight) == (P.ROLLED_BACK, 0)
    for text in (status.message, outcome.proposal.message):
        assert text is not None and "scaled to zero" in text and "canary is worse" in text
    awaiting = condition(status, "AwaitingApproval")
    assert awaiting is not None and awaiting.status is ConditionStatus.FALSE
    assert status.history[-1].event == "rollback"
    assert status.history[-1].weight == 0
    assert sorted((n.on_proposal, n.reason, n.warning) for n in outcome.notices) == [
        (False, "RolledBack", True),
        (True, "RolledBack", True),
    ]


@pytest.mark.parametrize(
    ("phase", "proposal_phase", "weight"),
    [
        (R.PROGRESSING, P.CANARY, 20),
        (R.AWAITING_APPROVAL, P.AWAITING_APPROVAL, 40),
        (R.PROMOTING, P.CANARY, 80),
    ],
)
def test_rollback_with_a_floor_keeps_the_challenger_at_the_floor(
    phase: R, proposal_phase: P, weight: int
) -> None:
    outcome = apply_verdict(
        rollout=rollout(phase, weight=weight),
        proposal=proposal(proposal_phase, weight=weight),
        policy=policy(floor=5, initial_weight=5),
        decision=decision(Verdict.ROLLBACK, 5, "canary is worse"),
        namespace=NS,
        now=NOW,
    )
    check_transitions(phase, proposal_phase, outcome)
    canary = outcome.rollout.canary
    assert outcome.rollout.phase is R.ROLLED_BACK
    assert canary is not None
    assert (canary.weight, canary.rolled_back) == (5, True)
    assert not outcome.scale_challenger_to_zero
    assert outcome.proposal is not None
    assert (outcome.proposal.phase, outcome.proposal.weight) == (P.ROLLED_BACK, 5)
    assert "held at the floor 5%" in (outcome.rollout.message or "")
    assert outcome.rollout.history[-1].weight == 5


@pytest.mark.parametrize(
    ("weight", "floor", "kept"),
    [
        (None, 5, None),  # never seeded (progressDeadline): it never had traffic, drain it
        (0, 5, None),
        (3, 5, 3),  # the floor was raised above it since: a rollback never raises a weight
        (5, 5, 5),
        (30, 5, 5),
    ],
)
def test_a_rollback_never_raises_the_weight(
    weight: int | None, floor: int, kept: int | None
) -> None:
    outcome = roll_back(
        rollout=rollout(R.PROGRESSING, weight=weight),
        proposal=proposal(P.RENDERED if weight is None else P.CANARY, weight=weight),
        policy=policy(floor=floor, initial_weight=floor),
        reason="challenger not ready within progressDeadline",
        now=NOW,
    )
    assert outcome.rollout.phase is R.ROLLED_BACK
    assert outcome.proposal is not None
    assert outcome.proposal.phase is P.ROLLED_BACK
    if kept is None:
        assert outcome.rollout.canary is None
        assert outcome.scale_challenger_to_zero
        assert outcome.proposal.weight == 0
    else:
        assert outcome.rollout.canary is not None
        assert outcome.rollout.canary.weight == kept
        assert not outcome.scale_challenger_to_zero
        assert outcome.proposal.weight == kept
        held = f"the floor {kept}%" if kept == floor else f"{kept}%, below the floor {floor}%"
        assert f"held at {held}" in (outcome.rollout.message or "")


# --- apply_verdict: PROMOTE, and promote itself -----------------------------------------------


def test_promote_makes_the_canary_the_stable_and_leaves_a_user_deployment_alone() -> None:
    before = rollout(R.PROMOTING, weight=100, approved=True)
    outcome = apply_verdict(
        rollout=before,
        proposal=proposal(P.CANARY, weight=100),
        policy=policy(),
        decision=decision(Verdict.PROMOTE, 100),
        namespace=NS,
        now=NOW,
    )
    check_transitions(R.PROMOTING, P.CANARY, outcome)
    status = outcome.rollout
    assert status.phase is R.STABLE
    assert (status.stable_version, status.stable_deployment) == (VERSION, DEPLOYMENT)
    assert (status.stable_prompt_digest, status.stable_proposal) == (DIGEST, NAME)
    assert status.canary is None
    assert status.window is None
    assert status.decision is not None and status.decision.verdict == "promote"
    # The previous stable is the user's Deployment: never queued for scaling, and said so.
    assert status.retiring == []
    assert outcome.proposal is not None
    for text in (status.message, outcome.proposal.message, status.history[-1].message):
        assert text is not None
        assert "2.0.0" in text and "classifier" in text and "never modifies" in text
    assert (outcome.proposal.phase, outcome.proposal.weight) == (P.PROMOTED, 100)
    awaiting = condition(status, "AwaitingApproval")
    assert awaiting is not None and awaiting.status is ConditionStatus.FALSE
    assert status.history[-1].event == "promote"
    assert sorted((n.on_proposal, n.reason) for n in outcome.notices) == [
        (False, "Promoted"),
        (True, "Promoted"),
    ]
    assert not outcome.scale_challenger_to_zero


def test_promote_queues_an_operator_owned_previous_stable_for_retirement() -> None:
    earlier = RetiringDeployment(
        proposal="classifier-1-9-0", deployment="classifier-1-9-0", version="1.9.0", since="x"
    )
    before = rollout(
        R.PROMOTING,
        weight=100,
        stable_proposal="classifier-2-0-0",
        stable_deployment="classifier-2-0-0",
        retiring=[earlier],
    )
    outcome = promote(rollout=before, proposal=proposal(P.CANARY, weight=100), now=NOW)
    status = outcome.rollout
    assert status.retiring == [
        earlier,
        RetiringDeployment(
            proposal="classifier-2-0-0",
            deployment="classifier-2-0-0",
            version="2.0.0",
            since=iso(NOW),
        ),
    ]
    assert (status.stable_version, status.stable_deployment, status.stable_proposal) == (
        VERSION,
        DEPLOYMENT,
        NAME,
    )
    assert "scaled to zero after the retention window" in (status.message or "")
    assert "never modifies" not in (status.message or "")
    assert before.retiring == [earlier]


# --- approve ----------------------------------------------------------------------------------


def _approve(
    status: AgentRolloutStatus,
    pp: PromptProposal,
    *,
    by: str | None = "kubectl-patch",
    now: datetime = NOW,
    **overrides: Any,
) -> Outcome:
    return approve(
        rollout=status,
        proposal=pp,
        policy=policy(**overrides),
        approved_by=by,
        digest=DIGEST,
        now=now,
    )


def test_approval_while_waiting_writes_the_ceiling_at_once() -> None:
    waiting = _await(rollout(R.PROGRESSING, weight=40), proposal(P.CANARY, weight=40), LAST_STEP)
    assert waiting.proposal is not None
    pp = proposal(P.AWAITING_APPROVAL, weight=40).model_copy(update={"status": waiting.proposal})
    outcome = _approve(waiting.rollout, pp)
    check_transitions(R.AWAITING_APPROVAL, P.AWAITING_APPROVAL, outcome)
    status = outcome.rollout
    canary = status.canary
    assert canary is not None and waiting.rollout.canary is not None
    assert status.phase is R.PROMOTING
    assert canary.weight == 50
    assert canary.approved
    assert canary.last_step_at == iso_precise(NOW)
    assert canary.steps == waiting.rollout.canary.steps + 1
    assert (canary.step_stable_total, canary.step_canary_total) == (None, None)
    assert outcome.proposal is not None
    assert (outcome.proposal.phase, outcome.proposal.weight) == (P.CANARY, 50)
    assert outcome.proposal.approval == Approval(
        approved_at=iso(NOW), approved_by="kubectl-patch", prompt_digest=DIGEST
    )
    awaiting = condition(status, "AwaitingApproval")
    assert awaiting is not None
    assert (awaiting.status, awaiting.reason) == (ConditionStatus.FALSE, "Approved")
    assert awaiting.last_transition_time == iso(NOW)
    assert status.history[-1].event == "approved"
    assert status.history[-1].weight == 50
    assert "from 40% to the ceiling 50%" in (status.message or "")
    reasons = sorted((n.on_proposal, n.reason) for n in outcome.notices)
    assert reasons == [(False, "Approved"), (True, "Approved"), (True, "Approved")]
    assert any("kubectl-patch" in n.message for n in outcome.notices)


def test_approving_twice_is_idempotent() -> None:
    first = _approve(rollout(R.AWAITING_APPROVAL, weight=40), proposal(P.AWAITING_APPROVAL))
    assert first.proposal is not None
    pp = proposal(P.CANARY).model_copy(update={"status": first.proposal})
    second = _approve(first.rollout, pp, now=NOW + timedelta(seconds=5), by="someone-else")
    assert second.notices == []
    assert second.rollout.model_dump() == first.rollout.model_dump()
    assert second.proposal == first.proposal  # first approver and time kept


def test_early_approval_is_recorded_and_skips_no_evidence() -> None:
    before = rollout(R.PROGRESSING, weight=20)
    outcome = _approve(before, proposal(P.CANARY, weight=20), by="alice")
    check_transitions(R.PROGRESSING, P.CANARY, outcome)
    assert outcome.rollout.phase is R.PROGRESSING
    canary = outcome.rollout.canary
    assert canary is not None and before.canary is not None
    assert canary.approved
    assert canary.model_dump(exclude={"approved"}) == before.canary.model_dump(exclude={"approved"})
    assert outcome.proposal is not None
    assert outcome.proposal.phase is P.CANARY
    assert outcome.proposal.approval == Approval(
        approved_at=iso(NOW), approved_by="alice", prompt_digest=DIGEST
    )
    assert outcome.notices == [
        Notice(on_proposal=True, reason="Approved", message="approval recorded by alice")
    ]


def test_approval_before_the_challenger_is_seeded_only_records() -> None:
    outcome = _approve(rollout(R.PROGRESSING, weight=None), proposal(P.RENDERED, weight=None))
    assert outcome.rollout.canary is not None
    assert outcome.rollout.canary.weight is None
    assert outcome.rollout.canary.approved
    assert outcome.rollout.phase is R.PROGRESSING


def test_approval_without_a_known_approver_says_so_plainly() -> None:
    outcome = _approve(rollout(R.PROGRESSING), proposal(), by=None)
    assert outcome.notices == [
        Notice(on_proposal=True, reason="Approved", message="approval recorded")
    ]
    assert outcome.proposal is not None and outcome.proposal.approval is not None
    assert outcome.proposal.approval.approved_by is None


@pytest.mark.parametrize("has_canary", [True, False])
def test_approval_of_a_queued_proposal_leaves_the_rollout_alone(has_canary: bool) -> None:
    before = rollout(R.AWAITING_APPROVAL if has_canary else R.STABLE, weight=40, canary=has_canary)
    queued = proposal(P.PENDING, weight=None, name="classifier-2-2-0", version="2.2.0")
    outcome = _approve(before, queued)
    assert outcome.rollout.model_dump() == before.model_dump()
    assert outcome.proposal is not None and outcome.proposal.approval is not None
    assert outcome.proposal.phase is P.PENDING


def test_approval_recorded_before_a_crash_still_steps_once_without_a_second_record() -> None:
    # The proposal's approval was written, the rollout's step was not (or the reverse order on
    # replay): approving again steps the rollout and keeps the first record.
    recorded = Approval(approved_at=iso(LAST_STEP), approved_by="alice", prompt_digest=DIGEST)
    outcome = _approve(
        rollout(R.AWAITING_APPROVAL, weight=40),
        proposal(P.AWAITING_APPROVAL, weight=40, approval=recorded),
    )
    assert outcome.rollout.canary is not None and outcome.rollout.canary.weight == 50
    assert outcome.proposal is not None and outcome.proposal.approval == recorded
    assert not any("approval recorded" in n.message for n in outcome.notices)


def test_approval_never_lowers_the_weight() -> None:
    # The ceiling was lowered under a waiting rollout.
    outcome = _approve(rollout(R.AWAITING_APPROVAL, weight=40), proposal(), ceiling=30)
    assert outcome.rollout.canary is not None
    assert outcome.rollout.canary.weight == 40


# --- reject -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "proposal_phase"),
    [
        (R.PROGRESSING, P.RENDERED),
        (R.PROGRESSING, P.CANARY),
        (R.AWAITING_APPROVAL, P.AWAITING_APPROVAL),
        (R.PROMOTING, P.CANARY),
    ],
)
def test_reject_drains_the_challenger_whatever_the_floor(phase: R, proposal_phase: P) -> None:
    pol = policy(floor=5, initial_weight=5)
    outcome = reject(
        rollout=rollout(phase, weight=40),
        proposal=proposal(proposal_phase, weight=40),
        policy=pol,
        reason="approval withdrawn",
        now=NOW,
    )
    check_transitions(phase, proposal_phase, outcome)
    assert outcome.rollout.phase is R.ROLLED_BACK
    assert outcome.rollout.canary is None
    assert outcome.scale_challenger_to_zero
    assert outcome.proposal is not None
    assert (outcome.proposal.phase, outcome.proposal.weight) == (P.REJECTED, 0)
    assert "rejected" in (outcome.proposal.message or "")
    assert "approval withdrawn" in (outcome.proposal.message or "")
    assert outcome.rollout.history[-1].event == "rejected"
    assert (True, "Rejected") in [(n.on_proposal, n.reason) for n in outcome.notices]
    assert all(n.warning for n in outcome.notices)
    assert pol.floor == 5  # the caller's policy is not modified


# --- clear_canary -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phase", [R.PROGRESSING, R.AWAITING_APPROVAL, R.PROMOTING, R.ROLLED_BACK, R.INVALID]
)
def test_deleting_the_active_proposal_returns_all_traffic_to_the_stable(phase: R) -> None:
    before = rollout(phase, weight=40)
    status = clear_canary(rollout=before, reason="proposal gone; 2.0.0 serves all", now=NOW)
    assert allowed(ROLLOUT_TRANSITIONS, phase, status.phase)
    assert status.phase is R.STABLE
    assert (status.canary, status.window, status.counts, status.decision) == (None,) * 4
    assert (status.stable_version, status.stable_deployment) == ("2.0.0", "classifier")
    assert status.message == "proposal gone; 2.0.0 serves all"
    awaiting = condition(status, "AwaitingApproval")
    assert awaiting is not None
    assert (awaiting.status, awaiting.reason) == (ConditionStatus.FALSE, "NoChallenger")
    assert status.history[-1] == HistoryEntry(
        at=iso(NOW),
        event="cleared",
        version=VERSION,
        weight=0,
        message="proposal gone; 2.0.0 serves all",
    )
    assert before.canary is not None


# --- is_due -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last_step", "started", "now", "due"),
    [
        (None, None, NOW, True),  # nothing to wait for
        (NOW, STARTED, NOW, False),
        (NOW, STARTED, NOW + timedelta(seconds=15), False),
        (NOW, STARTED, NOW + timedelta(seconds=29), False),
        (NOW, STARTED, NOW + timedelta(seconds=30), True),
        (NOW, STARTED, NOW + timedelta(hours=3), True),
        # Without a step, the interval runs from the start of the canary.
        (None, NOW, NOW + timedelta(seconds=10), False),
        (None, NOW, NOW + timedelta(seconds=30), True),
        # The last step, not the start, is what counts once there is one.
        (NOW, NOW - timedelta(hours=1), NOW + timedelta(seconds=10), False),
    ],
)
def test_is_due_waits_an_interval_since_the_last_step(
    last_step: datetime | None, started: datetime | None, now: datetime, due: bool
) -> None:
    canary = CanaryStatus(
        last_step_at=iso(last_step) if last_step else None,
        started_at=iso(started) if started else None,
    )
    assert is_due(canary, policy(interval="30s"), now) is due


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 3600),
    st.floats(0, 2, allow_nan=False),
    st.booleans(),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
)
def test_is_due_is_never_due_before_an_interval_less_the_jitter_allowance(
    interval: int, fraction: float, from_step: bool, at: datetime
) -> None:
    last = at.replace(microsecond=0, tzinfo=UTC)
    canary = CanaryStatus(
        last_step_at=iso(last) if from_step else None,
        started_at=iso(last if not from_step else last - timedelta(days=1)),
    )
    elapsed = timedelta(seconds=interval) * fraction
    due = is_due(canary, policy(interval=f"{interval}s"), last + elapsed)
    if elapsed < timedelta(seconds=interval) - JITTER:
        assert not due
    if elapsed >= timedelta(seconds=interval):
        assert due


def test_parse_time_reads_what_iso_writes() -> None:
    assert parse_time(iso(NOW)) == NOW
    assert parse_time(None) is None
    assert parse_time("") is None


@pytest.mark.parametrize(
    ("weight", "ceiling", "to", "expected_weight"),
    [
        (40, 50, 50, 40),  # the decision function asked for the ceiling without approval
        (40, 30, 50, 29),  # the ceiling was lowered below the weight mid-canary
        (30, 30, 40, 29),  # seeded at the ceiling (CEL allows initialWeight == ceiling)
    ],
)
def test_the_ceiling_is_never_reached_without_approval(
    weight: int, ceiling: int, to: int, expected_weight: int
) -> None:
    outcome = apply_verdict(
        rollout=rollout(R.PROGRESSING, weight=weight),
        proposal=proposal(P.CANARY, weight=weight),
        policy=policy(ceiling=ceiling),
        decision=decision(Verdict.STEP, to),
        namespace=NS,
        now=NOW,
    )
    check_transitions(R.PROGRESSING, P.CANARY, outcome)
    assert outcome.rollout.phase is R.AWAITING_APPROVAL
    assert outcome.rollout.canary is not None
    assert outcome.rollout.canary.weight == expected_weight < ceiling
    assert outcome.rollout.decision is not None
    assert outcome.rollout.decision.verdict == "await-approval"


def test_seeding_at_the_ceiling_stays_below_it_until_approved() -> None:
    outcome = seed(
        rollout=rollout(R.PROGRESSING, weight=None),
        proposal=proposal(P.RENDERED, weight=None),
        policy=policy(initial_weight=50, ceiling=50),
        now=NOW,
    )
    assert outcome.rollout.canary is not None
    assert outcome.rollout.canary.weight == 49


# --- over-exposure -----------------------------------------------------------------------------


@pytest.mark.parametrize("floor", [0, 5, 20])
@pytest.mark.parametrize(
    ("phase", "proposal_phase"),
    [(R.PROGRESSING, P.CANARY), (R.AWAITING_APPROVAL, P.AWAITING_APPROVAL)],
)
def test_over_exposure_drains_whatever_the_floor_and_never_promotes(
    floor: int, phase: R, proposal_phase: P
) -> None:
    reason = "the canary served 100.0% of 40 requests at weight 10%"
    outcome = withdraw_exposure(
        rollout=rollout(phase, weight=10),
        proposal=proposal(proposal_phase, weight=10),
        policy=policy(floor=floor, initial_weight=max(floor, 5)),
        reason=reason,
        now=NOW,
    )
    check_transitions(phase, proposal_phase, outcome)
    assert outcome.scale_challenger_to_zero
    assert outcome.rollout.canary is None  # no weight left to re-assert
    assert outcome.rollout.phase is R.ROLLED_BACK
    assert outcome.proposal is not None
    assert (outcome.proposal.phase, outcome.proposal.weight) == (P.ROLLED_BACK, 0)
    verified = condition(outcome.rollout, "TrafficVerified")
    assert verified is not None
    assert (verified.status, verified.reason) == (ConditionStatus.FALSE, "OverExposed")
    assert reason in (verified.message or "")
    waiting = condition(outcome.rollout, "AwaitingApproval")
    assert waiting is not None and waiting.status is ConditionStatus.FALSE
    # The user is told, on both objects, as a warning.
    assert {(n.on_proposal, n.reason, n.warning) for n in outcome.notices} == {
        (False, "OverExposed", True),
        (True, "OverExposed", True),
    }
    assert all("scaled to zero" in n.message for n in outcome.notices)
    # A rolled-back proposal has no way back to AwaitingApproval or Promoted.
    assert P.PROMOTED not in PROPOSAL_TRANSITIONS[P.ROLLED_BACK]
    assert P.AWAITING_APPROVAL not in PROPOSAL_TRANSITIONS[P.ROLLED_BACK]
