"""Phases of both resources and the one table of transitions each may make.

Every status change goes through :func:`rollout_transition` or :func:`proposal_transition`, so an
illegal move (say, a rolled-back proposal becoming promoted) is a bug caught at the point it is
attempted rather than a state users discover later.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from promptloop.api import (
    Condition,
    ConditionStatus,
    HistoryEntry,
    ProposalPhase,
    RolloutPhase,
)
from promptloop.api.agentrollout import HISTORY_LIMIT

__all__ = [
    "PROPOSAL_CLOSED",
    "PROPOSAL_TERMINAL",
    "PROPOSAL_TRANSITIONS",
    "ROLLOUT_TRANSITIONS",
    "IllegalTransition",
    "append_history",
    "iso",
    "iso_precise",
    "proposal_transition",
    "rollout_transition",
    "set_condition",
]

P = ProposalPhase
R = RolloutPhase

PROPOSAL_TRANSITIONS: Final[dict[ProposalPhase | None, frozenset[ProposalPhase]]] = {
    None: frozenset({P.PENDING, P.RENDERED, P.INVALID, P.REJECTED}),
    P.PENDING: frozenset({P.RENDERED, P.INVALID, P.REJECTED}),
    P.RENDERED: frozenset({P.CANARY, P.ROLLED_BACK, P.REJECTED, P.INVALID}),
    P.CANARY: frozenset({P.AWAITING_APPROVAL, P.PROMOTED, P.ROLLED_BACK, P.REJECTED}),
    P.AWAITING_APPROVAL: frozenset({P.CANARY, P.PROMOTED, P.ROLLED_BACK, P.REJECTED}),
    P.PROMOTED: frozenset({P.SUPERSEDED}),
    P.ROLLED_BACK: frozenset(),
    P.REJECTED: frozenset(),
    P.SUPERSEDED: frozenset(),
    # A proposal found invalid may become valid once the missing object appears (a Secret
    # created after the proposal, a rollout applied later by the same GitOps sync).
    P.INVALID: frozenset({P.PENDING, P.RENDERED, P.REJECTED}),
}

# Phases after which a proposal never takes traffic again.
PROPOSAL_TERMINAL: Final = frozenset({P.PROMOTED, P.ROLLED_BACK, P.REJECTED, P.SUPERSEDED})
# Phases in which a proposal no longer competes: terminal, or Invalid (never canaried). Approving
# or rejecting it changes nothing; the improver may file a new one.
PROPOSAL_CLOSED: Final = PROPOSAL_TERMINAL | {P.INVALID}

ROLLOUT_TRANSITIONS: Final[dict[RolloutPhase | None, frozenset[RolloutPhase]]] = {
    None: frozenset({R.PENDING, R.STABLE, R.INVALID, R.PROGRESSING}),
    R.PENDING: frozenset({R.STABLE, R.PROGRESSING, R.INVALID}),
    R.STABLE: frozenset({R.PROGRESSING, R.INVALID}),
    R.PROGRESSING: frozenset(
        {R.AWAITING_APPROVAL, R.PROMOTING, R.ROLLED_BACK, R.STABLE, R.INVALID}
    ),
    R.AWAITING_APPROVAL: frozenset(
        {R.PROMOTING, R.PROGRESSING, R.ROLLED_BACK, R.STABLE, R.INVALID}
    ),
    R.PROMOTING: frozenset({R.STABLE, R.ROLLED_BACK, R.INVALID}),
    R.ROLLED_BACK: frozenset({R.PROGRESSING, R.STABLE, R.INVALID}),
    R.INVALID: frozenset({R.STABLE, R.PROGRESSING, R.PENDING}),
}


class IllegalTransition(RuntimeError):
    """A phase change the transition table does not allow."""


def proposal_transition(current: ProposalPhase | None, target: ProposalPhase) -> ProposalPhase:
    """Return ``target`` when a proposal may move there from ``current``; staying is allowed.

    Raises
    ------
    IllegalTransition
        When the table forbids the move.
    """
    if current == target or target in PROPOSAL_TRANSITIONS[current]:
        return target
    raise IllegalTransition(f"PromptProposal cannot go from {current} to {target}")


def rollout_transition(current: RolloutPhase | None, target: RolloutPhase) -> RolloutPhase:
    """Return ``target`` when a rollout may move there from ``current``; staying is allowed.

    Raises
    ------
    IllegalTransition
        When the table forbids the move.
    """
    if current == target or target in ROLLOUT_TRANSITIONS[current]:
        return target
    raise IllegalTransition(f"AgentRollout cannot go from {current} to {target}")


def iso(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, as Kubernetes writes times."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_precise(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds: for times the step gate compares with an interval."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def set_condition(
    conditions: list[Condition],
    *,
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> list[Condition]:
    """Conditions with one entry set (in its place, or appended); its transition time moves only
    when its status changes."""
    value = {
        True: ConditionStatus.TRUE,
        False: ConditionStatus.FALSE,
        None: ConditionStatus.UNKNOWN,
    }[status]
    previous = next((c for c in conditions if c.type == type_), None)
    changed_at = (
        previous.last_transition_time
        if previous is not None and previous.status == value
        else iso(now)
    )
    updated = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=changed_at,
        observed_generation=generation,
    )
    if previous is None:
        return [*conditions, updated]
    # In place: an unchanged condition set again leaves the list equal, so a pass that changes
    # nothing writes nothing.
    return [updated if c.type == type_ else c for c in conditions]


def append_history(history: list[HistoryEntry], entry: HistoryEntry) -> list[HistoryEntry]:
    """The history with one more entry, keeping only the newest ``HISTORY_LIMIT``."""
    return [*history, entry][-HISTORY_LIMIT:]
