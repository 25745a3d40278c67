"""The one decision of a pass: from what was observed to the next statuses and what to do.

:func:`advance` is pure: it takes an immutable :class:`~promptloop.rollout.observations.
Observations` and returns a :class:`~promptloop.rollout.effects.Step` (new statuses plus the
effects, in the order the reconciler carries them out). Read it top to bottom to follow a pass:

1. the rollout is checked (token, stable Deployment, stable prompt): an invalid one holds;
2. :func:`_repair` brings proposals in line with the rollout's status after a killed pass;
3. :func:`_select_active` picks the proposal that owns the canary (the queue), rejecting,
   invalidating and queueing the others;
4. the active proposal moves on: rendered (:func:`_start`), or :func:`_advance_canary`
   (rejection, **approval**, readiness and its deadline, seeding, then the evidence in
   :func:`_tick`);
5. retired Deployments past their retention are scaled to zero (:func:`_retire`);
6. the router is told the weights status says (:func:`_router_effect`).

The statuses themselves change only through :mod:`promptloop.rollout.plan` (one function per
transition). :func:`after_router` records the router's read-back; :func:`orphaned` handles
proposals whose rollout does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from promptloop.api import (
    AgentRolloutStatus,
    DecisionStatus,
    PromptProposal,
    PromptProposalStatus,
    ProposalPhase,
    RolloutPhase,
    VersionCounts,
    VersionWeight,
    WindowCounts,
)
from promptloop.api.common import parse_duration
from promptloop.constants import (
    API_VERSION,
    APPROVED_BY_ANNOTATION,
    MAX_PROMPT_BYTES,
    PROPOSAL_KIND,
    REJECT_ANNOTATION,
)
from promptloop.rollout import notifications, plan
from promptloop.rollout.canary_request import CanaryRequest, canary_approver, canary_request
from promptloop.rollout.conditions import proposal_conditions, rollout_conditions
from promptloop.rollout.decision import Policy, Verdict, decide
from promptloop.rollout.effects import (
    ApplyManifests,
    AssertWeights,
    CountDecision,
    Effect,
    Notify,
    PostEvent,
    ScaleToZero,
    Step,
    WriteProposalStatus,
    WriteRolloutStatus,
)
from promptloop.rollout.exposure import ordering_problem
from promptloop.rollout.observations import Observations, RouterVersion
from promptloop.rollout.phases import PROPOSAL_TERMINAL, iso, proposal_transition, set_condition
from promptloop.rollout.traffic import TrafficVerdict, verify_traffic
from promptloop.rollout.window import Cumulative, read_evidence

__all__ = [
    "RouterResult",
    "advance",
    "after_router",
    "approver",
    "guard_worthwhile",
    "orphaned",
    "weights_drifted",
]


_IN_FLIGHT = (ProposalPhase.RENDERED, ProposalPhase.CANARY, ProposalPhase.AWAITING_APPROVAL)


@dataclass(frozen=True)
class RouterResult:
    """What the router answered to :class:`AssertWeights`: the read-back, or why not."""

    readback: tuple[VersionWeight, ...] = ()
    error: str | None = None
    forbidden: bool = False


# ----------------------------------------------------------------------------------------------
# The pass


def advance(obs: Observations) -> Step:
    """Decide one pass of ``obs.rollout``: the new statuses and the effects, in order."""
    draft = _Draft(obs)
    spec = obs.rollout.spec
    status = draft.status
    status.observed_generation = obs.rollout.metadata.generation
    if status.stable_version is None:
        status.stable_version = spec.stable.version
    if status.stable_deployment is None:
        status.stable_deployment = spec.stable.deployment_name

    problem = _rollout_problem(obs)
    if problem is not None:
        reason, message = problem
        _invalidate(draft.status, message, reason=reason, now=obs.now)
        _hold_unstarted_proposals(draft, draft.status.message or "")
        return draft.finish(router=False)
    if status.phase is RolloutPhase.INVALID:
        # What made the rollout invalid is fixed (the Secret or Deployment appeared).
        status.phase = RolloutPhase.PROGRESSING if status.canary else RolloutPhase.STABLE
        status.message = "recovered: the missing object is present"

    stale_challengers = _repair(draft)
    challenger_out: str | None = _recheck_ordering(draft)
    active = _select_active(draft)
    if active is not None:
        canary = draft.status.canary
        if canary is not None and canary.proposal != active.metadata.name:
            # A rolled-back challenger held at the floor gives way to the next proposal.
            challenger_out = challenger_out or canary.deployment
            draft.status.canary = None
        if draft.status.canary is None:
            _start(draft, active)
        else:
            deployment = draft.status.canary.deployment
            outcome = _advance_canary(draft, active)
            if outcome is not None and outcome.scale_challenger_to_zero:
                challenger_out = challenger_out or deployment
    elif draft.status.canary is None and draft.status.phase in (None, RolloutPhase.PENDING):
        draft.status.phase = RolloutPhase.STABLE
        draft.status.message = f"{draft.status.stable_version} serves all traffic"

    _retire(draft)
    # Taking a challenger out is always safe, and a pass killed after it re-decides from the
    # evidence, whereas one killed before it would leave it running.
    draft.scale_down += [d for d in (challenger_out, *stale_challengers) if d]
    return draft.finish(router=True)


def _rollout_problem(obs: Observations) -> tuple[str, str] | None:
    """Why the rollout cannot proceed (condition reason, message), or None."""
    if obs.token_problem is not None:
        return "MissingSecret", obs.token_problem
    if obs.stable_deployment is None:
        return "StableDeploymentMissing", obs.stable_problem or "stable Deployment unreadable"
    if obs.stable_prompt_problem is not None:
        return (
            "StableDeploymentUnusable",
            f"cannot read the stable Deployment's prompt: {obs.stable_prompt_problem}",
        )
    return None


def _invalidate(status: AgentRolloutStatus, message: str, *, reason: str, now: datetime) -> None:
    status.phase = RolloutPhase.INVALID
    status.message = message
    status.conditions = set_condition(
        status.conditions, type_="Ready", status=False, reason=reason, message=message, now=now
    )


def _hold_unstarted_proposals(draft: _Draft, message: str) -> None:
    """Proposals not yet rendered cannot start while the rollout is invalid: say why."""
    for proposal in draft.proposals:
        if proposal.status.phase not in (None, ProposalPhase.PENDING, ProposalPhase.INVALID):
            continue
        text = f"the rollout is invalid: {message}"
        if proposal.status.message == text:
            continue
        updated = proposal.status.model_copy(deep=True)
        updated.phase = ProposalPhase.INVALID
        updated.message = text
        draft.set_proposal(proposal.metadata.name, updated)
        draft.notify(
            proposal, plan.Notice(on_proposal=True, reason="Invalid", message=text, warning=True)
        )


# ----------------------------------------------------------------------------------------------
# Proposals: repair, validation, the queue


def _repair(draft: _Draft) -> list[str]:
    """Bring proposals in line with the rollout's status after a pass was killed mid-write.

    The rollout's status is written first and is the truth: a proposal it no longer names as its
    canary but that still looks in flight was promoted (it is the stable one) or rolled back; the
    proposal it names but that never recorded its rendering was rendered. Returns the Deployments
    of challengers found rolled back, to be scaled to zero.
    """
    status = draft.status
    active = status.canary.proposal if status.canary else None
    stale: list[str] = []
    for proposal in list(draft.proposals):
        if proposal.metadata.deletion_timestamp:
            continue
        name = proposal.metadata.name
        current = proposal.status
        updated = current.model_copy(deep=True)
        if name == active and current.phase in (
            None,
            ProposalPhase.PENDING,
            ProposalPhase.INVALID,
        ):
            assert status.canary is not None
            updated.phase = ProposalPhase.RENDERED
            updated.deployment_name = status.canary.deployment
            updated.prompt_digest = status.canary.prompt_digest
            updated.message = "challenger rendered (recorded after a restart)"
        elif (
            name == active
            and current.phase is ProposalPhase.RENDERED
            and status.canary is not None
            and status.canary.weight is not None
        ):
            updated.phase = ProposalPhase.CANARY
            updated.weight = status.canary.weight
            updated.message = f"canary at {status.canary.weight}% (recorded after a restart)"
        elif name != active and current.phase in _IN_FLIGHT:
            if name == status.stable_proposal:
                updated.phase = proposal_transition(current.phase, ProposalPhase.PROMOTED)
                updated.message = "promoted to stable (recorded after a restart)"
            else:
                updated.phase = proposal_transition(current.phase, ProposalPhase.ROLLED_BACK)
                updated.message = "rolled back (recorded after a restart)"
                updated.weight = 0
                if current.deployment_name:
                    stale.append(current.deployment_name)
        else:
            continue
        draft.set_proposal(name, updated)
    return stale


def _validate(
    proposal: PromptProposal,
    *,
    stable_version: str,
    stable_prompt: str | None,
    taken_versions: dict[str, str],
    ordered_router: bool = True,
    registered: tuple[str, ...] = (),
) -> str | None:
    """Why a proposal cannot be canaried (None when it can).

    On a router whose real routing goes to the smallest version string (AgentField), a version
    that would sort before the stable one or any registered one is refused before anything is
    rendered: it would take all the traffic before approval.
    """
    version = proposal.spec.version
    if version == stable_version:
        return f"version {version} is the stable version; propose a new version"
    if version in taken_versions:
        return f"version {version} is already proposed by {taken_versions[version]}"
    if ordered_router and (
        problem := ordering_problem(version, stable=stable_version, registered=registered)
    ):
        return problem
    if len(proposal.spec.system_prompt.encode()) > MAX_PROMPT_BYTES:
        return "systemPrompt is larger than 32 KiB"
    if stable_prompt is not None and proposal.spec.system_prompt.strip() == stable_prompt.strip():
        return "systemPrompt is identical to the stable prompt; nothing to canary"
    return None


def _recheck_ordering(draft: _Draft) -> str | None:
    """The running canary is re-checked against AgentField's ordering on every pass.

    The stable version can change (a promotion, a new spec.stable.version) and versions come
    and go: a challenger that now sorts before the stable version or a registered one would
    take all the traffic, so its exposure is withdrawn at once (scaled to zero, rolled back).
    Returns the Deployment to scale to zero, if any.
    """
    obs = draft.obs
    status = draft.status
    canary = status.canary
    if not obs.router_orders_by_version_string or canary is None or not canary.version:
        return None
    if canary.approved:
        # A person approved this version with the traffic it had: no longer an exposure.
        return None
    proposal = next((p for p in draft.proposals if p.metadata.name == canary.proposal), None)
    if proposal is None or proposal.status.phase in PROPOSAL_TERMINAL:
        return None
    stable_version = status.stable_version or obs.rollout.spec.stable.version
    problem = ordering_problem(
        canary.version,
        stable=stable_version,
        registered=tuple(v.version for v in obs.versions or ()),
    )
    if problem is None:
        return None
    deployment = canary.deployment
    draft.take(
        proposal,
        plan.withdraw_exposure(
            rollout=status,
            proposal=proposal,
            policy=obs.rollout.spec.canary,
            reason=problem,
            now=obs.now,
        ),
    )
    return deployment


def _select_active(draft: _Draft) -> PromptProposal | None:
    """The proposal that owns the canary this pass; the others are rejected, invalid or queued."""
    obs = draft.obs
    status = draft.status
    stable_version = status.stable_version or obs.rollout.spec.stable.version
    live = [p for p in draft.proposals if not p.metadata.deletion_timestamp]
    names = {p.metadata.name for p in live}
    if status.canary is not None and status.canary.proposal not in names:
        gone = status.canary.proposal
        draft.status = status = plan.clear_canary(
            rollout=status,
            reason=f"proposal {gone} was deleted; {stable_version} serves all traffic",
            now=obs.now,
        )
    taken: dict[str, str] = {}
    candidates: list[PromptProposal] = []
    active_name = status.canary.proposal if status.canary else None
    # The active proposal and finished ones claim their versions first: creation times have
    # one-second resolution, so a newer duplicate could otherwise sort ahead of them.
    live.sort(
        key=lambda p: (p.metadata.name != active_name, p.status.phase not in PROPOSAL_TERMINAL)
    )
    for proposal in live:
        name = proposal.metadata.name
        current = proposal.status
        if current.phase in PROPOSAL_TERMINAL:
            taken.setdefault(proposal.spec.version, name)
            continue
        if _rejected_by_annotation(proposal) and name != active_name:
            # Rejected before its turn: it never gets children or traffic.
            updated = current.model_copy(deep=True)
            updated.phase = ProposalPhase.REJECTED
            updated.message = "rejected before it started"
            draft.set_proposal(name, updated)
            draft.notify(
                proposal, plan.Notice(on_proposal=True, reason="Rejected", message=updated.message)
            )
            taken.setdefault(proposal.spec.version, name)
            continue
        problem = _validate(
            proposal,
            stable_version=stable_version,
            stable_prompt=obs.stable_prompt,
            taken_versions=taken,
            ordered_router=obs.router_orders_by_version_string,
            registered=tuple(v.version for v in obs.versions or ()),
        )
        taken.setdefault(proposal.spec.version, name)
        if problem is not None:
            if name != active_name and (
                current.phase != ProposalPhase.INVALID or current.message != problem
            ):
                updated = current.model_copy(deep=True)
                updated.phase = ProposalPhase.INVALID
                updated.message = problem
                draft.set_proposal(name, updated)
                draft.notify(
                    proposal,
                    plan.Notice(on_proposal=True, reason="Invalid", message=problem, warning=True),
                )
            continue
        candidates.append(proposal)

    rolled_back_floor = status.canary is not None and status.canary.rolled_back
    active = next((p for p in candidates if p.metadata.name == active_name), None)
    if active is None or rolled_back_floor:
        waiting = [p for p in candidates if p.metadata.name != active_name]
        if waiting:
            active = waiting[0]
        elif rolled_back_floor:
            active = None
    for proposal in candidates:
        name = proposal.metadata.name
        if (active is not None and name == active.metadata.name) or name == active_name:
            continue
        message = f"queued behind {active.metadata.name}" if active else "queued"
        current = draft.proposal_status.get(name, proposal.status)
        if current.phase != ProposalPhase.PENDING or current.message != message:
            updated = current.model_copy(deep=True)
            updated.phase = ProposalPhase.PENDING
            updated.message = message
            draft.set_proposal(name, updated)
    return draft.proposal(active.metadata.name) if active is not None else None


def _rejected_by_annotation(proposal: PromptProposal) -> bool:
    return proposal.metadata.annotations.get(REJECT_ANNOTATION) == "true"


def approver(proposal: PromptProposal) -> str | None:
    """Who set spec.approved: the person, when the shipped approval policy stamped
    ``promptloop.dev/approved-by`` at admission; otherwise the client that wrote the field (its
    managedFields manager, e.g. kubectl-patch), which is all the API server itself records."""
    stamped = proposal.metadata.annotations.get(APPROVED_BY_ANNOTATION)
    if stamped:
        return stamped
    extra = proposal.metadata.model_extra or {}
    best: tuple[str, str] | None = None
    for entry in extra.get("managedFields") or []:
        fields = entry.get("fieldsV1", {}).get("f:spec", {})
        if "f:approved" in fields:
            candidate = (entry.get("time", ""), entry.get("manager", ""))
            if best is None or candidate > best:
                best = candidate
    return best[1] if best else None


# ----------------------------------------------------------------------------------------------
# The active proposal


def _start(draft: _Draft, proposal: PromptProposal) -> None:
    """Render the proposal's challenger: the canary begins (weight set once it is ready)."""
    name = proposal.metadata.name
    rendering = draft.obs.renderings.get(name)
    if rendering is None:
        # The gatherer renders every proposal that may start; nothing to do without one.
        return
    if rendering.error is not None:
        updated = proposal.status.model_copy(deep=True)
        updated.phase = ProposalPhase.INVALID
        updated.message = f"cannot render the challenger: {rendering.error}"
        draft.set_proposal(name, updated)
        draft.notify(
            proposal,
            plan.Notice(on_proposal=True, reason="Invalid", message=updated.message, warning=True),
        )
        return
    draft.applies.append(ApplyManifests(rendering.manifests))
    outcome = plan.begin_canary(
        rollout=draft.status,
        proposal=proposal,
        deployment=rendering.deployment,
        digest=rendering.digest,
        now=draft.obs.now,
    )
    assert outcome.proposal is not None
    outcome.proposal.config_map_name = rendering.config_map
    outcome.proposal.deployment_name = rendering.deployment
    outcome.proposal.prompt_digest = rendering.digest
    outcome.proposal.rendered_at = iso(draft.obs.now)
    draft.take(proposal, outcome)


def _advance_canary(draft: _Draft, proposal: PromptProposal) -> plan.Outcome | None:
    """Move the active proposal on: rejection, approval, readiness, then the evidence."""
    obs = draft.obs
    now = obs.now
    policy = obs.rollout.spec.canary
    canary = draft.status.canary
    assert canary is not None

    # The rollout's Argo CD approve/reject actions annotate the rollout, naming this canary.
    asked = canary_request(
        obs.rollout.metadata.annotations,
        proposal=proposal.metadata.name,
        prompt_digest=canary.prompt_digest,
    )
    # A person said no: `promptloop reject`, spec.approved set back to false, or the action.
    withdrawn = proposal.status.approval is not None and proposal.spec.approved is False
    said_no = _rejected_by_annotation(proposal) or withdrawn or asked is CanaryRequest.REJECT
    if said_no and proposal.status.phase not in PROPOSAL_TERMINAL:
        outcome = plan.reject(
            rollout=draft.status,
            proposal=proposal,
            policy=policy,
            reason="approval withdrawn" if proposal.status.approval else "rejected",
            now=now,
        )
        return draft.take(proposal, outcome)
    if canary.rolled_back:
        return None

    # A person said yes: record it; a rollout waiting at the ceiling steps to it at once.
    approved = bool(proposal.spec.approved) or asked is CanaryRequest.APPROVE
    if approved and (proposal.status.approval is None or not canary.approved):
        metadata = obs.rollout.metadata
        approved_by = (
            approver(proposal)
            if proposal.spec.approved
            else canary_approver(
                metadata.annotations, (metadata.model_extra or {}).get("managedFields") or []
            )
        )
        outcome = plan.approve(
            rollout=draft.status,
            proposal=proposal,
            policy=policy,
            approved_by=approved_by,
            digest=canary.prompt_digest or "",
            now=now,
        )
        draft.take(proposal, outcome)
        proposal = draft.proposal(proposal.metadata.name)
        if outcome.rollout.phase is RolloutPhase.PROMOTING and obs.cause == "approval":
            # The ceiling weight is written by this pass's router step; evidence waits for
            # the next tick.
            return outcome

    ready, reason, why = _challenger_ready(obs, proposal)
    draft.status.conditions = set_condition(
        draft.status.conditions,
        type_="ChallengerReady",
        status=ready,
        reason=reason,
        message=why,
        now=now,
    )
    canary = draft.status.canary
    assert canary is not None
    if ready is None:
        return _hold(draft, proposal, why)
    if not ready:
        not_ready_since = _condition_since(draft.status, "ChallengerReady") or now
        started = plan.parse_time(canary.started_at) or now
        since = max(not_ready_since, started) if canary.weight is None else not_ready_since
        if now - since >= parse_duration(policy.progress_deadline):
            outcome = plan.roll_back(
                rollout=draft.status,
                proposal=proposal,
                policy=policy,
                now=now,
                reason=(
                    f"challenger not ready within progressDeadline {policy.progress_deadline}: "
                    f"{why}"
                ),
            )
            return draft.take(proposal, outcome)
        draft.status.message = f"waiting for {proposal.spec.version}: {why}"
        return None
    if canary.weight is None:
        return draft.take(
            proposal, plan.seed(rollout=draft.status, proposal=proposal, policy=policy, now=now)
        )
    return _tick(draft, proposal)


def _challenger_ready(obs: Observations, proposal: PromptProposal) -> tuple[bool | None, str, str]:
    """Ready, reason, message; ready is None when the router cannot be asked (hold, no clock).

    What is reliable decides: the challenger Deployment's availability, then what the router
    says about the version (on AgentField: registered, and answering at its own address). The
    AgentField heartbeat is only advisory: the control plane writes one per node id every 2 s,
    and a beat with a status lands on the smallest version's row.
    """
    canary = obs.rollout.status.canary
    name = canary.deployment if canary is not None else None
    deployment = obs.challenger_deployment
    if deployment is None:
        return False, "NotReady", f"Deployment {name} not found"
    spec_replicas = deployment.get("spec", {}).get("replicas", 1)
    deployment_status = deployment.get("status", {})
    available = deployment_status.get("availableReplicas", 0) or 0
    if deployment_status.get("observedGeneration", 0) < deployment["metadata"].get("generation", 0):
        return False, "NotReady", f"Deployment {name} not yet observed"
    if available < max(spec_replicas, 1):
        return False, "NotReady", f"Deployment {name} has {available}/{spec_replicas} available"
    readiness = obs.challenger_readiness
    if readiness is None:
        problem = obs.router_problem or "the router was not asked"
        return None, "Unknown", f"cannot ask the router about {proposal.spec.version}: {problem}"
    if readiness.ready is None:
        return None, "Unknown", readiness.message
    if not readiness.ready:
        return False, readiness.reason, readiness.message
    return True, "Ready", f"Deployment {name} available; {readiness.message}"


def _tick(draft: _Draft, proposal: PromptProposal) -> plan.Outcome | None:
    """The evidence: window counts, traffic verification, the decision, the interval gate."""
    obs = draft.obs
    now = obs.now
    rollout = obs.rollout
    policy = rollout.spec.canary
    status = draft.status
    canary = status.canary
    assert canary is not None and canary.weight is not None and canary.version
    stable_version = status.stable_version or rollout.spec.stable.version
    decision_policy = Policy(
        alpha=policy.alpha,
        min_samples=policy.min_samples,
        max_failure_rate=policy.max_failure_rate,
        margin=policy.non_inferiority_margin,
        max_step=policy.max_step,
        floor=policy.floor,
        ceiling=policy.ceiling,
        decision_deadline=(
            parse_duration(policy.decision_deadline).total_seconds()
            if policy.decision_deadline
            else None
        ),
    )
    if obs.counters is None and obs.counters_problem is None:
        # Not read in this pass (see promptloop.observe): nothing is known either way.
        return _hold(draft, proposal, "the evidence is read at the next tick")
    if obs.counters is None:
        problem = obs.counters_problem or "not read"
        status.conditions = set_condition(
            status.conditions,
            type_="MetricsAvailable",
            status=False,
            reason="Unavailable",
            message=problem,
            now=now,
        )
        began = plan.parse_time(status.evidence.started_at) if status.evidence else None
        if began is not None:
            # Missing metrics do not stop the decision deadline's clock.
            age = (now - began).total_seconds()
            late = _past_deadline(draft, proposal, decision_policy, age, problem)
            if late is not None:
                return late
        return _hold(draft, proposal, f"metrics unavailable: {problem}")
    stable_now = Cumulative(obs.counters.stable_total, obs.counters.stable_failed)
    canary_now = Cumulative(obs.counters.canary_total, obs.counters.canary_failed)
    metrics = rollout.spec.metrics
    evidence = read_evidence(
        window=status.evidence,
        stable=stable_now,
        canary=canary_now,
        weight=canary.weight,
        now=now,
        outcome_lag=(
            parse_duration(metrics.outcome_lag).total_seconds() if metrics.outcome_lag else 0.0
        ),
        baseline=status.window,
    )
    status.evidence = evidence.window
    status.window = None  # the baseline form is superseded by the ledger
    reset_note = ""
    if evidence.resets:
        # Never silent: the lost increment is named here, in the reason, and counted in
        # status.evidence; the window's evidence before it stays.
        reset_note = (
            f"{' and '.join(evidence.resets)} counter went back at this read (a restart):"
            " that read's increment is lost, the window's evidence is kept"
        )
    status.conditions = set_condition(
        status.conditions,
        type_="MetricsAvailable",
        status=True,
        reason="CounterReset" if evidence.resets else "Read",
        message=reset_note or "read both versions' counters",
        now=now,
    )
    status.counts = VersionCounts(
        stable=_counts(stable_version, evidence.stable.samples, evidence.stable.failures),
        canary=_counts(canary.version, evidence.canary.samples, evidence.canary.failures),
    )
    # Weights that drifted since the last read-back (AgentField resets a re-registered version
    # to 100; a GitOps sync can restore an HTTPRoute's weights) are re-asserted by this pass.
    # The requests served meanwhile followed a split nobody chose: they say nothing about
    # whether the router honours ours, so the share is measured afresh from here.
    drifted = obs.versions is not None and weights_drifted(status.weights, list(obs.versions))
    if (
        canary.step_canary_total is None
        or canary.step_stable_total is None
        or evidence.resets
        or drifted
    ):
        canary.step_canary_total = canary_now.total
        canary.step_stable_total = stable_now.total
    traffic = verify_traffic(
        canary_requests=canary_now.total - canary.step_canary_total,
        stable_requests=stable_now.total - canary.step_stable_total,
        weight=canary.weight,
    )
    if drifted:
        traffic = replace(
            traffic,
            message="the router's weights drifted from the last read-back and are re-asserted"
            " now; the canary's share is measured again from this pass",
        )
    verified = {
        TrafficVerdict.VERIFIED: True,
        TrafficVerdict.NOT_HONOURED: False,
        TrafficVerdict.OVER_EXPOSED: False,
        TrafficVerdict.TOO_LITTLE: None,
    }[traffic.verdict]
    status.conditions = set_condition(
        status.conditions,
        type_="TrafficVerified",
        status=verified,
        reason=traffic.verdict.value,
        message=traffic.message,
        now=now,
    )
    if traffic.verdict is TrafficVerdict.OVER_EXPOSED and not canary.approved:
        # Safety first: exposure beyond the weight before approval is withdrawn at once.
        return draft.take(
            proposal,
            plan.withdraw_exposure(
                rollout=status, proposal=proposal, policy=policy, reason=traffic.message, now=now
            ),
        )
    if evidence.opened:
        return _hold(draft, proposal, "evidence window opened at these counters")
    if traffic.verdict is TrafficVerdict.OVER_EXPOSED:
        return _hold(draft, proposal, traffic.message)
    if traffic.verdict is TrafficVerdict.NOT_HONOURED:
        late = _past_deadline(draft, proposal, decision_policy, evidence.age, traffic.message)
        return late if late is not None else _hold(draft, proposal, traffic.message)
    if evidence.inconsistent:
        # Counters read at slightly different moments can disagree for a tick; that is missing
        # data, not evidence.
        return _hold(draft, proposal, "inconsistent counters (more failures than requests)")

    decision = decide(
        stable=evidence.stable,
        canary=evidence.canary,
        policy=decision_policy,
        weight=canary.weight,
        approved=canary.approved,
        strata=evidence.strata,
        canary_age=evidence.age,
    )
    if reset_note:
        decision = replace(decision, reason=f"{decision.reason} Note: {reset_note}.")
    if evidence.skipped:
        decision = replace(
            decision,
            reason=f"{decision.reason} This read is within metrics.outcomeLag of the last"
            " weight change and is not evidence.",
        )
    draft.decisions.append(CountDecision(decision.verdict.value))
    moves = decision.verdict in (Verdict.STEP, Verdict.PROMOTE) and (
        decision.next_weight != canary.weight or decision.verdict is Verdict.PROMOTE
    )
    if moves and not plan.is_due(canary, policy, now):
        return _hold(
            draft,
            proposal,
            f"evidence supports {decision.verdict.value}; waiting for the interval since the "
            "last step",
        )
    outcome = plan.apply_verdict(
        rollout=status,
        proposal=proposal,
        policy=policy,
        decision=decision,
        namespace=obs.namespace,
        now=now,
    )
    return draft.take(proposal, outcome)


def _past_deadline(
    draft: _Draft, proposal: PromptProposal, policy: Policy, age: float, problem: str
) -> plan.Outcome | None:
    """The deadline's rollback when a hold for missing data outlasts ``decisionDeadline``."""
    canary = draft.status.canary
    assert canary is not None and canary.weight is not None
    decision = decide(
        stable=None,
        canary=None,
        policy=policy,
        weight=canary.weight,
        approved=canary.approved,
        canary_age=age,
    )
    if decision.verdict is not Verdict.ROLLBACK:
        return None
    decision = replace(decision, reason=f"{decision.reason} ({problem})")
    draft.decisions.append(CountDecision(decision.verdict.value))
    outcome = plan.apply_verdict(
        rollout=draft.status,
        proposal=proposal,
        policy=draft.obs.rollout.spec.canary,
        decision=decision,
        namespace=draft.obs.namespace,
        now=draft.obs.now,
    )
    return draft.take(proposal, outcome)


def _hold(draft: _Draft, proposal: PromptProposal, reason: str) -> plan.Outcome | None:
    """Hold the weight where it is, and say why (no outcome: nothing to take out)."""
    canary = draft.status.canary
    weight = canary.weight if canary else None
    draft.status.decision = DecisionStatus(
        verdict=Verdict.HOLD.value, reason=reason, decided_at=iso(draft.obs.now)
    )
    draft.status.message = f"holding {proposal.spec.version} at {weight}%: {reason}"
    return None


def _retire(draft: _Draft) -> None:
    """Previous stables past the retention window are scaled to zero; their proposals are
    superseded."""
    status = draft.status
    if not status.retiring:
        return
    now = draft.obs.now
    window = parse_duration(draft.obs.rollout.spec.canary.retire_after)
    keep = []
    for entry in status.retiring:
        since = plan.parse_time(entry.since) or now
        if now - since < window:
            keep.append(entry)
            continue
        draft.scale_down.append(entry.deployment)
        proposal = next((p for p in draft.proposals if p.metadata.name == entry.proposal), None)
        if proposal is not None and proposal.status.phase is ProposalPhase.PROMOTED:
            updated = proposal.status.model_copy(deep=True)
            updated.phase = ProposalPhase.SUPERSEDED
            updated.weight = 0
            updated.message = (
                f"superseded by {status.stable_version}; Deployment {entry.deployment} "
                "scaled to zero"
            )
            draft.set_proposal(entry.proposal, updated)
    status.retiring = keep


# ----------------------------------------------------------------------------------------------
# The router


def _router_effect(obs: Observations, status: AgentRolloutStatus) -> AssertWeights | RouterResult:
    """The split status says, as an effect; or, when nothing can be written, the result now."""
    if obs.versions is None:
        return RouterResult(error=obs.router_problem or "unknown", forbidden=obs.router_forbidden)
    stable = status.stable_version or obs.rollout.spec.stable.version
    canary = status.canary
    canary_version = canary.version if canary and canary.weight is not None else None
    canary_percent = canary.weight if canary and canary.weight is not None else 0
    known = {v.version for v in obs.versions}
    others = tuple(sorted(known - {stable} - ({canary_version} if canary_version else set())))
    node_id = obs.rollout.spec.agent.node_id
    if canary_version and canary_percent > 0 and canary_version in known:
        return AssertWeights(node_id, stable, canary_version, canary_percent, others)
    if stable in known:
        return AssertWeights(node_id, stable, None, 0, others)
    # Nothing registered yet: nothing to write, and nothing to read back.
    return RouterResult()


def after_router(
    status: AgentRolloutStatus,
    weights: AssertWeights | None,
    result: RouterResult,
    now: datetime,
) -> AgentRolloutStatus:
    """The status with the router's answer recorded: weights, RouterReachable, and the outcome
    conditions (Ready, Completed, Healthy) that depend on it."""
    status = status.model_copy(deep=True)
    if result.error is not None:
        status.conditions = set_condition(
            status.conditions,
            type_="RouterReachable",
            status=False,
            reason="Forbidden" if result.forbidden else "Unavailable",
            message=result.error,
            now=now,
        )
    else:
        roles = {}
        if weights is not None:
            roles[weights.stable] = "stable"
            if weights.canary:
                roles[weights.canary] = "canary"
        status.weights = [
            VersionWeight(
                version=w.version,
                percent=round(w.percent, 3),
                raw=w.raw,
                role=roles.get(w.version, "other"),
            )
            for w in result.readback
        ]
        status.other_versions = list(weights.others) if weights is not None else []
        status.conditions = set_condition(
            status.conditions,
            type_="RouterReachable",
            status=True,
            reason="Reachable",
            message=f"weights written and read back for {len(result.readback)} versions",
            now=now,
        )
    status.conditions = rollout_conditions(status, now=now)
    return status


def guard_worthwhile(weights: list[VersionWeight], *, canary_in_progress: bool) -> bool:
    """Whether the weight guard should read the router between passes.

    During a canary, always: a reset must be re-asserted, and a challenger that registers must
    be seeded, within seconds. Without one, only when two or more versions are weighted: with a
    single version there is nothing a reset could over-expose (100 or 10000 of one version is
    all its traffic either way). At 1,000 mostly idle rollouts, skipping those reads is most of
    the guard's cost; the pass itself still reads the router every interval.
    """
    return canary_in_progress or sum(1 for w in weights if w.raw is not None) >= 2


def weights_drifted(weights: list[VersionWeight], versions: list[RouterVersion]) -> bool:
    """Whether the router's raw weights differ from those status last read back.

    Every (re-)registration of a version in AgentField resets its weight to 100: a restarted
    stable pod mid-canary would hand the canary the majority until the next pass.
    """
    expected = {w.version: w.raw for w in weights if w.raw is not None}
    if not expected or any(v.weight is None for v in versions):
        return False  # nothing read back yet, or a listing without weights: nothing to compare
    return {v.version: v.weight for v in versions} != expected


# ----------------------------------------------------------------------------------------------
# Orphans


def orphaned(namespace: str, rollout_name: str, proposals: list[PromptProposal]) -> Step:
    """Proposals that reference a rollout which does not exist become Invalid."""
    effects: list[Effect] = []
    statuses: dict[str, PromptProposalStatus] = {}
    message = f"AgentRollout {rollout_name} not found in namespace {namespace}"
    for proposal in proposals:
        if proposal.spec.rollout_ref.name != rollout_name:
            continue
        if proposal.status.phase in PROPOSAL_TERMINAL or proposal.status.message == message:
            continue
        status = proposal.status.model_copy(deep=True)
        status.phase = ProposalPhase.INVALID
        status.message = message
        statuses[proposal.metadata.name] = status
        effects.append(WriteProposalStatus(proposal.metadata.name, status))
        effects.append(PostEvent(_proposal_ref(proposal), "Invalid", message, warning=True))
    return Step(status=None, proposals=statuses, effects=tuple(effects))


# ----------------------------------------------------------------------------------------------
# The draft one pass builds


@dataclass
class _Draft:
    """What one call of :func:`advance` accumulates; private to it (the inputs stay intact)."""

    obs: Observations
    status: AgentRolloutStatus = field(init=False)
    proposals: list[PromptProposal] = field(init=False)
    proposal_status: dict[str, PromptProposalStatus] = field(default_factory=dict)
    applies: list[ApplyManifests] = field(default_factory=list)
    scale_down: list[str] = field(default_factory=list)
    events: list[PostEvent] = field(default_factory=list)
    decisions: list[CountDecision] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = self.obs.rollout.status.model_copy(deep=True)
        self.proposals = list(self.obs.proposals)

    def proposal(self, name: str) -> PromptProposal:
        """A proposal with the status this pass has given it so far."""
        return next(p for p in self.proposals if p.metadata.name == name)

    def set_proposal(self, name: str, status: PromptProposalStatus) -> None:
        self.proposal_status[name] = status
        self.proposals = [
            p.model_copy(update={"status": status}) if p.metadata.name == name else p
            for p in self.proposals
        ]

    def notify(self, proposal: PromptProposal | None, notice: plan.Notice) -> None:
        involved = (
            _proposal_ref(proposal) if proposal and notice.on_proposal else _rollout_ref(self.obs)
        )
        self.events.append(PostEvent(involved, notice.reason, notice.message, notice.warning))

    def take(self, proposal: PromptProposal, outcome: plan.Outcome) -> plan.Outcome:
        self.status = outcome.rollout
        if outcome.proposal is not None:
            self.set_proposal(proposal.metadata.name, outcome.proposal)
        for notice in outcome.notices:
            self.notify(proposal, notice)
        return outcome

    def finish(self, *, router: bool) -> Step:
        """The step: statuses, and the effects in the crash-safe order."""
        obs = self.obs
        original = obs.rollout.status
        effects: list[Effect] = [*self.applies]
        effects += [ScaleToZero(d) for d in self.scale_down]
        status = self.status
        weights: AssertWeights | None = None
        if router:
            planned = _router_effect(obs, status)
            if isinstance(planned, AssertWeights):
                weights = planned
            else:
                status = after_router(status, None, planned, obs.now)
        status = self.conditions_and_notifications(status)
        if status.model_dump() != original.model_dump():
            # Intent before the router: a crash after this write re-asserts the same weights.
            effects.append(WriteRolloutStatus(status))
            if (
                status.phase != original.phase
                and status.phase in (RolloutPhase.INVALID, RolloutPhase.STABLE)
                and original.phase in (None, RolloutPhase.PENDING, RolloutPhase.INVALID)
            ):
                self.notify(
                    None,
                    plan.Notice(
                        on_proposal=False,
                        reason=str(status.phase),
                        message=status.message or "",
                        warning=status.phase is RolloutPhase.INVALID,
                    ),
                )
        if weights is not None:
            effects.append(weights)
        originals = {p.metadata.name: p for p in obs.proposals}
        written: dict[str, PromptProposalStatus] = {}
        for name, proposal_status in self.proposal_status.items():
            before = originals[name]
            if proposal_status.model_dump() == before.status.model_dump():
                continue
            proposal_status = proposal_status.model_copy(
                update={"observed_generation": before.metadata.generation}
            )
            written[name] = proposal_status
            effects.append(WriteProposalStatus(name, proposal_status))
        effects += self.events
        effects += self.decisions
        if notifications.pending(status.notifications):
            effects.append(Notify(tuple(status.notifications), obs.rollout.spec.notifications))
        return Step(status=status, proposals=written, effects=tuple(effects))

    def conditions_and_notifications(self, status: AgentRolloutStatus) -> AgentRolloutStatus:
        """Derive every proposal's conditions and the rollout's outcome conditions from the
        statuses about to be written, and put the transitions to announce into the outbox
        (``status.notifications``), which the intent write then carries."""
        obs = self.obs
        # ``status`` is this draft's own copy (or after_router's): changed in place.
        active = status.canary.proposal if status.canary is not None else None
        challenger_ready = next((c for c in status.conditions if c.type == "ChallengerReady"), None)
        for proposal in self.proposals:
            name = proposal.metadata.name
            conditions = proposal_conditions(
                proposal.status,
                challenger_ready=challenger_ready if name == active else None,
                generation=proposal.metadata.generation,
                now=obs.now,
            )
            if conditions != proposal.status.conditions:
                self.set_proposal(
                    name, proposal.status.model_copy(update={"conditions": conditions})
                )
        status.conditions = rollout_conditions(status, now=obs.now)
        if obs.notification_sinks:
            records = notifications.detect(
                rollout_before=obs.rollout.status,
                rollout_after=status,
                proposals=obs.proposals,
                proposals_after=self.proposal_status,
                sinks=obs.notification_sinks,
                now=obs.now,
            )
            status.notifications = notifications.merge(status.notifications, records)
        return status


def _proposal_ref(proposal: PromptProposal) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": PROPOSAL_KIND,
        "metadata": {
            "name": proposal.metadata.name,
            "namespace": proposal.metadata.namespace,
            "uid": proposal.metadata.uid,
        },
    }


def _rollout_ref(obs: Observations) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": obs.rollout.kind,
        "metadata": obs.rollout.metadata.model_dump(by_alias=True),
    }


def _counts(version: str, total: int, failed: int) -> WindowCounts:
    return WindowCounts(
        version=version,
        total=total,
        failed=failed,
        rate=round(failed / total, 4) if total else None,
    )


def _condition_since(status: AgentRolloutStatus, type_: str) -> datetime | None:
    condition = next((c for c in status.conditions if c.type == type_), None)
    return plan.parse_time(condition.last_transition_time) if condition else None
