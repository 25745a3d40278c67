"""What each event does to a rollout and its proposal: pure functions from status to status.

The reconciler gathers observations (objects, router read-back, counters) and performs I/O; the
functions here decide. Each takes the current statuses and returns new ones plus the Events to
post, never touching the network or the clock (``now`` is an argument). "What happens on
approval" is :func:`approve`; "what happens on a tick" is :func:`apply_verdict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from promptloop.api import (
    AgentRolloutStatus,
    Approval,
    CanaryPolicy,
    CanaryStatus,
    DecisionStatus,
    HistoryEntry,
    PromptProposal,
    PromptProposalStatus,
    ProposalPhase,
    RetiringDeployment,
    RolloutPhase,
)
from promptloop.api.common import parse_duration
from promptloop.rollout.decision import Decision, Verdict, below_ceiling, needs_approval
from promptloop.rollout.phases import (
    append_history,
    iso,
    iso_precise,
    proposal_transition,
    rollout_transition,
    set_condition,
)

__all__ = [
    "Notice",
    "Outcome",
    "apply_verdict",
    "approval_command",
    "approve",
    "begin_canary",
    "clear_canary",
    "is_due",
    "parse_time",
    "promote",
    "reject",
    "roll_back",
    "seed",
    "withdraw_exposure",
]


@dataclass(frozen=True, kw_only=True)
class Notice:
    """A Kubernetes Event to post: on the rollout or on the proposal (keywords only: two
    booleans side by side are unreadable at the call site)."""

    on_proposal: bool
    reason: str
    message: str
    warning: bool = False


@dataclass
class Outcome:
    """New statuses and what to tell people about the change."""

    rollout: AgentRolloutStatus
    proposal: PromptProposalStatus | None
    notices: list[Notice] = field(default_factory=list)
    scale_challenger_to_zero: bool = False


STEP_SLACK = timedelta(seconds=0.25)


def parse_time(moment: str | None) -> datetime | None:
    """Parse a time written by :func:`iso` (RFC 3339, UTC)."""
    if not moment:
        return None
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def approval_command(namespace: str, proposal: str) -> str:
    """The exact command that approves a proposal."""
    return (
        f"kubectl patch promptproposal {proposal} -n {namespace} --type merge "
        '-p \'{"spec":{"approved":true}}\''
    )


def is_due(canary: CanaryStatus, policy: CanaryPolicy, now: datetime) -> bool:
    """Whether an interval has passed since the weight last changed.

    The weight changes at most once per interval however often the reconciler runs (events,
    restarts), which is what makes a restarted operator unable to double-step.
    """
    last = parse_time(canary.last_step_at) or parse_time(canary.started_at)
    # A little slack for scheduling jitter: the periodic pass runs one interval after the pass
    # that stepped, and must be allowed to step again.
    return last is None or now - last >= parse_duration(policy.interval) - STEP_SLACK


def begin_canary(
    *,
    rollout: AgentRolloutStatus,
    proposal: PromptProposal,
    deployment: str,
    digest: str,
    now: datetime,
) -> Outcome:
    """The proposal's challenger has been rendered; the rollout starts progressing with it."""
    name = proposal.metadata.name
    status = rollout.model_copy(deep=True)
    status.phase = rollout_transition(status.phase, RolloutPhase.PROGRESSING)
    status.canary = CanaryStatus(
        proposal=name,
        version=proposal.spec.version,
        weight=None,
        deployment=deployment,
        prompt_digest=digest,
        started_at=iso_precise(now),
    )
    status.window = None
    status.evidence = None
    status.decision = None
    status.counts = None
    status.message = f"rendered {name} ({proposal.spec.version}); waiting for it to be ready"
    status.history = append_history(
        status.history,
        HistoryEntry(at=iso(now), event="rendered", version=proposal.spec.version, message=name),
    )
    proposal_status = proposal.status.model_copy(deep=True)
    proposal_status.phase = proposal_transition(proposal_status.phase, ProposalPhase.RENDERED)
    proposal_status.message = f"challenger Deployment {deployment} rendered"
    return Outcome(
        status,
        proposal_status,
        [
            Notice(
                on_proposal=True,
                reason="Rendered",
                message=f"rendered challenger Deployment {deployment}",
            )
        ],
    )


def seed(
    *, rollout: AgentRolloutStatus, proposal: PromptProposal, policy: CanaryPolicy, now: datetime
) -> Outcome:
    """The challenger is ready: give it the initial weight."""
    status = rollout.model_copy(deep=True)
    assert status.canary is not None
    weight = policy.initial_weight
    if needs_approval(weight, ceiling=policy.ceiling, approved=status.canary.approved):
        # An initial weight at the ceiling would skip the human gate.
        weight = below_ceiling(policy.ceiling)
    status.canary.weight = weight
    status.canary.last_step_at = iso_precise(now)
    status.message = f"{proposal.spec.version} is ready; seeded at {weight}% of traffic"
    status.history = append_history(
        status.history,
        HistoryEntry(
            at=iso(now),
            event="seed",
            version=proposal.spec.version,
            weight=weight,
            message="challenger ready",
        ),
    )
    proposal_status = proposal.status.model_copy(deep=True)
    proposal_status.phase = proposal_transition(proposal_status.phase, ProposalPhase.CANARY)
    proposal_status.weight = weight
    proposal_status.message = f"canary at {weight}%"
    return Outcome(
        status,
        proposal_status,
        [
            Notice(on_proposal=False, reason="CanaryStarted", message=status.message),
            Notice(on_proposal=True, reason="CanaryStarted", message=status.message),
        ],
    )


#: Event reasons of rollbacks that are not plain "worse" verdicts.
_ROLLBACK_REASONS = {"deadline": "DecisionDeadline", "guard": "FailureRateGuard"}


def apply_verdict(
    *,
    rollout: AgentRolloutStatus,
    proposal: PromptProposal,
    policy: CanaryPolicy,
    decision: Decision,
    namespace: str,
    now: datetime,
) -> Outcome:
    """Act on the decision function's verdict for one tick.

    Parameters
    ----------
    rollout, proposal
        Current statuses (the rollout has an active canary with a weight).
    policy
        The canary policy.
    decision
        What :func:`promptloop.rollout.decision.decide` returned for this tick.
    namespace
        For the approval command in messages.
    now
        The tick's time.

    Returns
    -------
    Outcome
        New statuses; the caller writes them, then the router.
    """
    status = rollout.model_copy(deep=True)
    canary = status.canary
    assert canary is not None and canary.weight is not None
    ceiling, approved = policy.ceiling, canary.approved
    if decision.verdict in (Verdict.STEP, Verdict.PROMOTE) and needs_approval(
        decision.next_weight, ceiling=ceiling, approved=approved
    ):
        # The majority step needs a person whatever the evidence (a verdict made elsewhere).
        decision = replace(
            decision,
            verdict=Verdict.AWAIT_APPROVAL,
            next_weight=canary.weight,
            reason=f"{decision.reason} The next step reaches the ceiling: approval needed.",
        )
    if decision.verdict is Verdict.AWAIT_APPROVAL and needs_approval(
        canary.weight, ceiling=ceiling, approved=approved
    ):
        # The ceiling was lowered mid-canary, or the canary was seeded at it.
        canary.weight = below_ceiling(policy.ceiling)
    status.decision = DecisionStatus(
        verdict=decision.verdict.value,
        reason=decision.reason,
        statistic=decision.statistic,
        samples_needed=decision.samples_needed,
        interval=list(decision.interval) if decision.interval else None,
        strata=decision.strata,
        dispersion=decision.dispersion,
        decided_at=iso(now),
    )
    proposal_status = proposal.status.model_copy(deep=True)
    name = proposal.metadata.name
    version = proposal.spec.version

    if decision.verdict is Verdict.ROLLBACK:
        return roll_back(
            rollout=status,
            proposal=proposal,
            policy=policy,
            reason=decision.reason,
            now=now,
            event_reason=_ROLLBACK_REASONS.get(decision.cause or "", "RolledBack"),
        )
    if decision.verdict is Verdict.PROMOTE:
        return promote(rollout=status, proposal=proposal, now=now)
    if decision.verdict is Verdict.AWAIT_APPROVAL:
        notices = []
        command = approval_command(namespace, name)
        message = (
            f"{version} has earned {canary.weight}%; the next step would give it "
            f"{min(canary.weight + policy.max_step, 100)}% (ceiling {policy.ceiling}%). "
            f"Approve with: {command}"
        )
        # Said again on every tick (a hold in between replaces the message), announced once.
        status.message = message
        proposal_status.message = message
        if status.phase is not RolloutPhase.AWAITING_APPROVAL:
            notices = [
                Notice(on_proposal=False, reason="AwaitingApproval", message=message),
                Notice(on_proposal=True, reason="AwaitingApproval", message=message),
            ]
            status.history = append_history(
                status.history,
                HistoryEntry(
                    at=iso(now),
                    event="await-approval",
                    version=version,
                    weight=canary.weight,
                    message=decision.reason,
                ),
            )
        status.phase = rollout_transition(status.phase, RolloutPhase.AWAITING_APPROVAL)
        proposal_status.phase = proposal_transition(
            proposal_status.phase, ProposalPhase.AWAITING_APPROVAL
        )
        status.conditions = set_condition(
            status.conditions,
            type_="AwaitingApproval",
            status=True,
            reason="CeilingReached",
            message=message,
            now=now,
        )
        return Outcome(status, proposal_status, notices)
    if decision.verdict is Verdict.STEP and decision.next_weight != canary.weight:
        previous = canary.weight
        canary.weight = decision.next_weight
        canary.last_step_at = iso_precise(now)
        canary.steps += 1
        canary.step_canary_total = None
        canary.step_stable_total = None
        proposal_status.weight = canary.weight
        # A step while waiting means the policy changed under the wait (a raised ceiling): the
        # rollout is no longer waiting, and reaching the new ceiling is announced afresh.
        was_waiting = status.phase is RolloutPhase.AWAITING_APPROVAL
        if canary.weight >= policy.ceiling:
            status.phase = rollout_transition(status.phase, RolloutPhase.PROMOTING)
        elif was_waiting:
            status.phase = rollout_transition(status.phase, RolloutPhase.PROGRESSING)
        proposal_status.phase = proposal_transition(proposal_status.phase, ProposalPhase.CANARY)
        message = f"stepped {version} from {previous}% to {canary.weight}%: {decision.reason}"
        status.message = message
        proposal_status.message = message
        if was_waiting:
            status.conditions = set_condition(
                status.conditions,
                type_="AwaitingApproval",
                status=False,
                reason="PolicyChanged",
                message=message,
                now=now,
            )
        status.history = append_history(
            status.history,
            HistoryEntry(
                at=iso(now),
                event="step",
                version=version,
                weight=canary.weight,
                message=decision.reason,
            ),
        )
        return Outcome(
            status, proposal_status, [Notice(on_proposal=False, reason="Stepped", message=message)]
        )
    status.message = f"holding {version} at {canary.weight}%: {decision.reason}"
    return Outcome(status, proposal_status, [])


def approve(
    *,
    rollout: AgentRolloutStatus,
    proposal: PromptProposal,
    policy: CanaryPolicy,
    approved_by: str | None,
    digest: str,
    now: datetime,
) -> Outcome:
    """A person set ``spec.approved: true``: record it, and if the rollout is holding for it,
    give the challenger the ceiling weight at once.

    Approval given early (before the rollout holds) is recorded and skips no evidence: the
    decision function then steps through the ceiling when the evidence gets there.
    """
    status = rollout.model_copy(deep=True)
    proposal_status = proposal.status.model_copy(deep=True)
    notices: list[Notice] = []
    if proposal_status.approval is None:
        proposal_status.approval = Approval(
            approved_at=iso(now), approved_by=approved_by, prompt_digest=digest
        )
        who = f" by {approved_by}" if approved_by else ""
        notices.append(
            Notice(on_proposal=True, reason="Approved", message=f"approval recorded{who}")
        )
    canary = status.canary
    if canary is None or canary.proposal != proposal.metadata.name:
        return Outcome(status, proposal_status, notices)
    canary.approved = True
    if status.phase is RolloutPhase.AWAITING_APPROVAL and canary.weight is not None:
        previous = canary.weight
        canary.weight = max(policy.ceiling, previous)
        canary.last_step_at = iso_precise(now)
        canary.steps += 1
        canary.step_canary_total = None
        canary.step_stable_total = None
        status.phase = rollout_transition(status.phase, RolloutPhase.PROMOTING)
        proposal_status.phase = proposal_transition(proposal_status.phase, ProposalPhase.CANARY)
        proposal_status.weight = canary.weight
        message = (
            f"approved: {proposal.spec.version} stepped from {previous}% to the ceiling "
            f"{canary.weight}%; it continues to 100% on evidence"
        )
        status.message = message
        proposal_status.message = message
        status.conditions = set_condition(
            status.conditions,
            type_="AwaitingApproval",
            status=False,
            reason="Approved",
            message=message,
            now=now,
        )
        status.history = append_history(
            status.history,
            HistoryEntry(
                at=iso(now),
                event="approved",
                version=proposal.spec.version,
                weight=canary.weight,
                message=approved_by or "",
            ),
        )
        notices += [
            Notice(on_proposal=False, reason="Approved", message=message),
            Notice(on_proposal=True, reason="Approved", message=message),
        ]
    return Outcome(status, proposal_status, notices)


def roll_back(
    *,
    rollout: AgentRolloutStatus,
    proposal: PromptProposal,
    policy: CanaryPolicy,
    reason: str,
    now: datetime,
    phase: ProposalPhase = ProposalPhase.ROLLED_BACK,
    event_reason: str = "RolledBack",
    drain: bool = False,
) -> Outcome:
    """Drop the challenger to the floor, or out altogether with ``drain`` (``event_reason`` names
    the Events' reason).

    AgentField cannot drain a version by weight (0 counts as 100), so a floor of 0 takes the
    challenger out of the router and scales it to zero. A floor above 0 keeps it at that share
    (or its current one, if lower) until the next proposal becomes active or the proposal is
    deleted; a challenger never seeded is drained whatever the floor.
    """
    status = rollout.model_copy(deep=True)
    proposal_status = proposal.status.model_copy(deep=True)
    version = proposal.spec.version
    # A rollback never raises the weight: a challenger that was never seeded (progressDeadline)
    # or sits below a floor raised since is drained or kept where it is, not given more.
    weight = status.canary.weight if status.canary is not None else None
    floor = 0 if drain else min(policy.floor, weight or 0)
    drain = floor == 0
    if drain:
        status.canary = None
    elif status.canary is not None:
        status.canary.weight = floor
        status.canary.rolled_back = True
    status.window = None
    status.evidence = None
    status.counts = None
    status.phase = rollout_transition(status.phase, RolloutPhase.ROLLED_BACK)
    proposal_status.phase = proposal_transition(proposal_status.phase, phase)
    proposal_status.weight = 0 if drain else floor
    verb = "rejected" if phase is ProposalPhase.REJECTED else "rolled back"
    where = (
        "scaled to zero"
        if drain
        else f"held at the floor {floor}%"
        if floor == policy.floor
        else f"held at {floor}%, below the floor {policy.floor}%"
    )
    message = f"{version} {verb} ({where}): {reason}"
    status.message = message
    proposal_status.message = message
    status.conditions = set_condition(
        status.conditions,
        type_="AwaitingApproval",
        status=False,
        reason="RolledBack",
        message=message,
        now=now,
    )
    status.history = append_history(
        status.history,
        HistoryEntry(
            at=iso(now),
            event="rejected" if phase is ProposalPhase.REJECTED else "rollback",
            version=version,
            weight=proposal_status.weight,
            message=reason,
        ),
    )
    notices = [
        Notice(on_proposal=False, reason=event_reason, message=message, warning=True),
        Notice(
            on_proposal=True,
            reason="Rejected" if phase is ProposalPhase.REJECTED else event_reason,
            message=message,
            warning=True,
        ),
    ]
    return Outcome(status, proposal_status, notices, scale_challenger_to_zero=drain)


def withdraw_exposure(
    *,
    rollout: AgentRolloutStatus,
    proposal: PromptProposal,
    policy: CanaryPolicy,
    reason: str,
    now: datetime,
) -> Outcome:
    """The challenger gets (or would get) far more traffic than its weight: take it out now.

    Whatever the floor, it is drained (scaled to zero: on AgentField nothing else removes a
    version from rotation), the proposal is rolled back and can never be promoted,
    ``TrafficVerified`` is False with reason ``OverExposed``, and a warning Event says why on
    both objects.
    """
    outcome = roll_back(
        rollout=rollout, proposal=proposal, policy=policy, reason=reason, now=now, drain=True
    )
    outcome.rollout.conditions = set_condition(
        outcome.rollout.conditions,
        type_="TrafficVerified",
        status=False,
        reason="OverExposed",
        message=reason,
        now=now,
    )
    message = (
        f"{proposal.spec.version} was exposed beyond its weight before approval and has been "
        f"scaled to zero: {reason}"
    )
    outcome.notices = [
        Notice(on_proposal=False, reason="OverExposed", message=message, warning=True),
        Notice(on_proposal=True, reason="OverExposed", message=message, warning=True),
    ]
    return outcome


def reject(
    *,
    rollout: AgentRolloutStatus,
    proposal: PromptProposal,
    policy: CanaryPolicy,
    reason: str,
    now: datetime,
) -> Outcome:
    """A person withdrew approval or rejected the proposal before promotion: roll back."""
    outcome = roll_back(
        rollout=rollout,
        proposal=proposal,
        policy=CanaryPolicy.model_validate({**policy.model_dump(), "floor": 0}),
        reason=reason,
        now=now,
        phase=ProposalPhase.REJECTED,
    )
    return outcome


def promote(*, rollout: AgentRolloutStatus, proposal: PromptProposal, now: datetime) -> Outcome:
    """The challenger holds 100% and the evidence still supports it: it becomes the stable.

    An operator-owned previous stable is queued for retirement (scaled to zero after the
    retention window); a user-owned one is never modified and keeps the router's minimum share.
    """
    status = rollout.model_copy(deep=True)
    canary = status.canary
    assert canary is not None
    previous_version = status.stable_version
    previous_proposal = status.stable_proposal
    previous_deployment = status.stable_deployment
    if previous_proposal and previous_deployment and previous_version:
        status.retiring = [
            *status.retiring,
            RetiringDeployment(
                proposal=previous_proposal,
                deployment=previous_deployment,
                version=previous_version,
                since=iso(now),
            ),
        ]
        retired = (
            f"previous stable {previous_version} ({previous_deployment}) will be scaled to zero "
            "after the retention window"
        )
    else:
        retired = (
            f"previous stable {previous_version} runs from your Deployment "
            f"{previous_deployment}, which promptloop never modifies: it keeps the router's "
            "minimum share until you retire it in git (see README, 'After a promotion')"
        )
    status.stable_version = proposal.spec.version
    status.stable_deployment = canary.deployment
    status.stable_prompt_digest = canary.prompt_digest
    status.stable_proposal = proposal.metadata.name
    status.canary = None
    status.window = None
    status.evidence = None
    # The finished canary's rates would otherwise linger in `kubectl get ar`.
    status.counts = None
    status.phase = rollout_transition(status.phase, RolloutPhase.STABLE)
    message = f"promoted {proposal.spec.version}; {retired}"
    status.message = message
    status.conditions = set_condition(
        status.conditions,
        type_="AwaitingApproval",
        status=False,
        reason="Promoted",
        message=message,
        now=now,
    )
    status.history = append_history(
        status.history,
        HistoryEntry(
            at=iso(now), event="promote", version=proposal.spec.version, weight=100, message=retired
        ),
    )
    proposal_status = proposal.status.model_copy(deep=True)
    proposal_status.phase = proposal_transition(proposal_status.phase, ProposalPhase.PROMOTED)
    proposal_status.weight = 100
    proposal_status.message = f"promoted to stable; {retired}"
    return Outcome(
        status,
        proposal_status,
        [
            Notice(on_proposal=False, reason="Promoted", message=message),
            Notice(on_proposal=True, reason="Promoted", message=message),
        ],
    )


def clear_canary(*, rollout: AgentRolloutStatus, reason: str, now: datetime) -> AgentRolloutStatus:
    """The active proposal is gone (deleted): the stable version takes the whole share again."""
    status = rollout.model_copy(deep=True)
    version = status.canary.version if status.canary else None
    status.canary = None
    status.window = None
    status.evidence = None
    status.counts = None
    status.decision = None
    status.phase = rollout_transition(status.phase, RolloutPhase.STABLE)
    status.message = reason
    status.conditions = set_condition(
        status.conditions,
        type_="AwaitingApproval",
        status=False,
        reason="NoChallenger",
        message=reason,
        now=now,
    )
    status.history = append_history(
        status.history,
        HistoryEntry(at=iso(now), event="cleared", version=version, weight=0, message=reason),
    )
    return status
