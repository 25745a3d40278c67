"""Conditions are derived from the phase and say the truth, also after a rollback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from promptloop.api import (
    AgentRolloutStatus,
    Approval,
    CanaryStatus,
    Condition,
    ConditionStatus,
    PromptProposalStatus,
    ProposalPhase,
    RolloutPhase,
)
from promptloop.rollout.conditions import proposal_conditions, rollout_conditions

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
P = ProposalPhase


def _table(conditions: list[Condition]) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status.value, c.reason) for c in conditions}


@pytest.mark.parametrize(
    ("phase", "deployment", "approved", "expected"),
    [
        (
            P.PENDING,
            None,
            False,
            {
                "Rendered": ("False", "Queued"),
                "ChallengerReady": ("False", "NotRendered"),
                "Approved": ("False", "NotApproved"),
                "Promoted": ("False", "Pending"),
                "RolledBack": ("False", "NotRolledBack"),
            },
        ),
        (
            P.AWAITING_APPROVAL,
            "d",
            False,
            {
                "Rendered": ("True", "Rendered"),
                "ChallengerReady": ("True", "Ready"),
                "Approved": ("False", "AwaitingApproval"),
                "Promoted": ("False", "AwaitingApproval"),
                "RolledBack": ("False", "NotRolledBack"),
            },
        ),
        (
            P.PROMOTED,
            "d",
            True,
            {
                "Rendered": ("True", "Rendered"),
                "ChallengerReady": ("True", "Promoted"),
                "Approved": ("True", "Approved"),
                "Promoted": ("True", "Promoted"),
                "RolledBack": ("False", "NotRolledBack"),
            },
        ),
        (
            P.ROLLED_BACK,
            "d",
            False,
            {
                "Rendered": ("True", "Rendered"),
                "ChallengerReady": ("False", "RolledBack"),
                "Approved": ("False", "NotApproved"),
                "Promoted": ("False", "RolledBack"),
                "RolledBack": ("True", "RolledBack"),
            },
        ),
        (
            P.REJECTED,
            "d",
            False,
            {
                "Rendered": ("True", "Rendered"),
                "ChallengerReady": ("False", "Rejected"),
                "Approved": ("False", "Rejected"),
                "Promoted": ("False", "Rejected"),
                "RolledBack": ("True", "Rejected"),
            },
        ),
        (
            P.SUPERSEDED,
            "d",
            True,
            {
                "Rendered": ("True", "Rendered"),
                "ChallengerReady": ("False", "Superseded"),
                "Approved": ("True", "Approved"),
                "Promoted": ("True", "Superseded"),
                "RolledBack": ("False", "NotRolledBack"),
            },
        ),
        (
            P.INVALID,
            None,
            False,
            {
                "Rendered": ("False", "Invalid"),
                "ChallengerReady": ("False", "NotRendered"),
                "Approved": ("False", "NotApproved"),
                "Promoted": ("False", "Invalid"),
                "RolledBack": ("False", "NotRolledBack"),
            },
        ),
    ],
)
def test_proposal_conditions_per_phase(
    phase: ProposalPhase,
    deployment: str | None,
    approved: bool,
    expected: dict[str, tuple[str, str]],
) -> None:
    status = PromptProposalStatus(
        phase=phase,
        deployment_name=deployment,
        message="queued behind other" if phase is P.PENDING else "why",
        approval=Approval(approved_at="t", approved_by="alice") if approved else None,
    )
    ready = Condition(type="ChallengerReady", status=ConditionStatus.TRUE, reason="Ready")
    conditions = proposal_conditions(
        status,
        challenger_ready=ready if phase is P.AWAITING_APPROVAL else None,
        generation=3,
        now=NOW,
    )
    assert _table(conditions) == expected
    assert all(c.observed_generation == 3 for c in conditions)


def test_transition_time_moves_only_when_the_status_changes() -> None:
    status = PromptProposalStatus(phase=P.CANARY, deployment_name="d")
    first = proposal_conditions(status, challenger_ready=None, generation=1, now=NOW)
    later = NOW + timedelta(minutes=5)
    status.conditions = first
    again = proposal_conditions(status, challenger_ready=None, generation=1, now=later)
    assert again == first
    status.phase = P.PROMOTED
    status.conditions = first
    promoted = {
        c.type: c
        for c in proposal_conditions(status, challenger_ready=None, generation=1, now=later)
    }
    assert promoted["Promoted"].last_transition_time == "2026-12-02T12:05:00Z"
    assert promoted["Rendered"].last_transition_time == "2026-12-02T12:00:00Z"


def _rollout(phase: RolloutPhase, **fields: object) -> AgentRolloutStatus:
    status = AgentRolloutStatus(phase=phase, **fields)  # type: ignore[arg-type]
    status.conditions = [
        Condition(type="RouterReachable", status=ConditionStatus.TRUE, reason="Reachable")
    ]
    return status


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (
            _rollout(RolloutPhase.STABLE),
            {
                "Ready": ("True", "Reconciled"),
                "Completed": ("True", "Stable"),
                "Healthy": ("True", "Healthy"),
            },
        ),
        (
            _rollout(RolloutPhase.STABLE, stable_proposal="pp"),
            {
                "Ready": ("True", "Reconciled"),
                "Completed": ("True", "Promoted"),
                "Healthy": ("True", "Healthy"),
            },
        ),
        (
            _rollout(RolloutPhase.PROGRESSING, canary=CanaryStatus(proposal="pp", weight=10)),
            {
                "Ready": ("True", "Reconciled"),
                "Completed": ("False", "InProgress"),
                "Healthy": ("False", "InProgress"),
            },
        ),
        (
            _rollout(RolloutPhase.ROLLED_BACK),
            {
                "Ready": ("False", "RolledBack"),
                "Completed": ("False", "RolledBack"),
                "Healthy": ("False", "RolledBack"),
            },
        ),
        (
            # Rolled back to a floor above 0: the challenger keeps a share, still a rollback.
            _rollout(
                RolloutPhase.ROLLED_BACK,
                canary=CanaryStatus(proposal="pp", weight=5, rolled_back=True),
            ),
            {
                "Ready": ("False", "RolledBack"),
                "Completed": ("False", "RolledBack"),
                "Healthy": ("False", "RolledBack"),
            },
        ),
        (
            _rollout(RolloutPhase.INVALID),
            {
                "Ready": ("False", "Invalid"),
                "Completed": ("False", "Invalid"),
                "Healthy": ("False", "Invalid"),
            },
        ),
    ],
)
def test_rollout_outcome_conditions(
    status: AgentRolloutStatus, expected: dict[str, tuple[str, str]]
) -> None:
    table = _table(rollout_conditions(status, now=NOW))
    assert {k: table[k] for k in expected} == expected


def test_an_unreachable_router_is_not_ready_nor_healthy() -> None:
    status = AgentRolloutStatus(phase=RolloutPhase.STABLE)
    status.conditions = [
        Condition(type="RouterReachable", status=ConditionStatus.FALSE, reason="Unavailable")
    ]
    table = _table(rollout_conditions(status, now=NOW))
    assert table["Ready"] == ("False", "NotReady")
    assert table["Completed"] == ("True", "Stable")
    assert table["Healthy"] == ("False", "NotReady")
