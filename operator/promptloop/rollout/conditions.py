"""Conditions people and CI wait on, derived from the statuses a pass is about to write.

Pure functions. Every pass recomputes them from the phase and the facts in status, so they can
never drift from the phase (``kubectl wait --for=condition=Promoted pp/x`` returns exactly when
the proposal's phase says Promoted).

A proposal carries five, each True or False with a CamelCase reason:

==================  ===========================================================================
``Rendered``        its ConfigMap and Deployment exist (False: Queued, Pending, Invalid, ...)
``ChallengerReady`` its Deployment is available and registered (the rollout's check while it is
                    the canary; Promoted afterwards; False once rolled back or superseded)
``Approved``        a person's approval was acted on (False: AwaitingApproval while the rollout
                    holds for it, Rejected, NotApproved)
``Promoted``        it became the stable version (True also once Superseded by a later one)
``RolledBack``      it was rolled back (reason RolledBack) or rejected (reason Rejected)
==================  ===========================================================================

A rollout's outcome conditions follow Argo Rollouts' ``Completed`` and ``Healthy``:

==============  ===============================================================================
``Ready``       the operator reconciles it and the router is reachable, and its last canary did
                not fail: False with reason RolledBack while the rollout sits RolledBack
``Completed``   the last change finished as intended: True (Promoted, or Stable before any
                change); False while a canary runs (InProgress), after a rollback
                (RolledBack) or while Invalid
``Healthy``     Completed and Ready: the version meant to serve serves, nothing is pending
==============  ===============================================================================
"""

from __future__ import annotations

from datetime import datetime

from promptloop.api import (
    AgentRolloutStatus,
    Condition,
    ConditionStatus,
    PromptProposalStatus,
    ProposalPhase,
    RolloutPhase,
)
from promptloop.rollout.phases import set_condition

__all__ = ["proposal_conditions", "rollout_conditions"]

P = ProposalPhase


def _reason_of(phase: ProposalPhase | None) -> str:
    return phase.value if phase is not None else "Pending"


def proposal_conditions(
    status: PromptProposalStatus,
    *,
    challenger_ready: Condition | None,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """The proposal's conditions for the status about to be written.

    Parameters
    ----------
    status
        The proposal's new status.
    challenger_ready
        The rollout's ``ChallengerReady`` condition when this proposal is its active canary.
    generation
        The proposal's ``metadata.generation``.
    now
        The pass's time (a transition time moves only when a condition's status changes).
    """
    phase = status.phase
    message = status.message or ""
    conditions = list(status.conditions)

    def put(type_: str, value: bool | None, reason: str, text: str) -> None:
        nonlocal conditions
        conditions = set_condition(
            conditions,
            type_=type_,
            status=value,
            reason=reason,
            message=text,
            now=now,
            generation=generation,
        )

    if status.deployment_name:
        put("Rendered", True, "Rendered", f"challenger Deployment {status.deployment_name}")
    else:
        reason = "Queued" if phase is P.PENDING and message.startswith("queued") else None
        put("Rendered", False, reason or _reason_of(phase), message)

    if phase is P.PROMOTED:
        put("ChallengerReady", True, "Promoted", "serves as the stable version")
    elif phase in (P.ROLLED_BACK, P.REJECTED, P.SUPERSEDED):
        put("ChallengerReady", False, phase.value, message)
    elif challenger_ready is not None:
        value = {
            ConditionStatus.TRUE: True,
            ConditionStatus.FALSE: False,
            ConditionStatus.UNKNOWN: None,
        }[challenger_ready.status]
        put("ChallengerReady", value, challenger_ready.reason, challenger_ready.message)
    elif status.deployment_name:
        put("ChallengerReady", None, "Waiting", "readiness not checked yet")
    else:
        put("ChallengerReady", False, "NotRendered", "no challenger Deployment yet")

    if status.approval is not None:
        who = f" by {status.approval.approved_by}" if status.approval.approved_by else ""
        put(
            "Approved", True, "Approved", f"approval acted on{who} at {status.approval.approved_at}"
        )
    elif phase is P.AWAITING_APPROVAL:
        put("Approved", False, "AwaitingApproval", message)
    elif phase is P.REJECTED:
        put("Approved", False, "Rejected", message)
    else:
        put("Approved", False, "NotApproved", "spec.approved is not true")

    if phase in (P.PROMOTED, P.SUPERSEDED):
        put("Promoted", True, phase.value, message)
    else:
        put("Promoted", False, _reason_of(phase), message)

    if phase in (P.ROLLED_BACK, P.REJECTED):
        put("RolledBack", True, phase.value, message)
    else:
        put("RolledBack", False, "NotRolledBack", "")
    return conditions


def _is_true(status: AgentRolloutStatus, type_: str) -> bool:
    return any(c.type == type_ and c.status is ConditionStatus.TRUE for c in status.conditions)


def rollout_conditions(status: AgentRolloutStatus, *, now: datetime) -> list[Condition]:
    """The rollout's ``Ready``, ``Completed`` and ``Healthy`` for the status about to be written.

    ``Ready`` needs ``RouterReachable`` True, so it is computed after the router step.
    """
    conditions = list(status.conditions)
    phase = status.phase
    message = status.message or ""
    canary = status.canary
    rolled_back = phase is RolloutPhase.ROLLED_BACK or (canary is not None and canary.rolled_back)

    if phase is RolloutPhase.INVALID:
        ready: tuple[bool, str] = (False, "Invalid")
    elif rolled_back:
        ready = (False, "RolledBack")
    elif not _is_true(status, "RouterReachable"):
        ready = (False, "NotReady")
    else:
        ready = (True, "Reconciled")
    conditions = set_condition(
        conditions, type_="Ready", status=ready[0], reason=ready[1], message=message, now=now
    )

    if phase is RolloutPhase.INVALID:
        completed: tuple[bool, str] = (False, "Invalid")
    elif rolled_back:
        completed = (False, "RolledBack")
    elif canary is not None:
        completed = (False, "InProgress")
    elif status.stable_proposal:
        completed = (True, "Promoted")
    else:
        completed = (True, "Stable")
    conditions = set_condition(
        conditions,
        type_="Completed",
        status=completed[0],
        reason=completed[1],
        message=message,
        now=now,
    )

    if completed[0] and ready[0]:
        healthy: tuple[bool, str] = (True, "Healthy")
    else:
        healthy = (False, completed[1] if not completed[0] else ready[1])
    conditions = set_condition(
        conditions, type_="Healthy", status=healthy[0], reason=healthy[1], message=message, now=now
    )
    return conditions
