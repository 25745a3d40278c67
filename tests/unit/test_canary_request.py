"""The rollout's approve-canary / reject-canary annotations (what its Argo CD actions write)."""

from __future__ import annotations

from typing import Any

from promptloop.api import AgentRollout, PromptProposal, ProposalPhase, RolloutPhase
from promptloop.rollout.advance import advance
from promptloop.rollout.canary_request import (
    APPROVE_CANARY_ANNOTATION,
    REJECT_CANARY_ANNOTATION,
    CanaryRequest,
    canary_approver,
    canary_request,
    canary_target,
)
from promptloop.rollout.effects import Step
from tests.unit.test_rollout_advance import STABLE, in_canary, make_rollout, observe, proposal_in

DIGEST = "2483f6ec680108cdc191f831211e009c0c83726867985a1b98fe9ffd5a88a237"


def ask(annotations: dict[str, str], digest: str | None = DIGEST) -> CanaryRequest | None:
    return canary_request(annotations, proposal="classifier-2-1-0", prompt_digest=digest)


def test_an_annotation_naming_the_canary_approves_or_rejects_it() -> None:
    target = canary_target("classifier-2-1-0", DIGEST)
    assert target == f"classifier-2-1-0@{DIGEST}"
    assert ask({APPROVE_CANARY_ANNOTATION: target}) is CanaryRequest.APPROVE
    assert ask({REJECT_CANARY_ANNOTATION: target}) is CanaryRequest.REJECT
    # Both: the rejection wins (the safe direction).
    both = {APPROVE_CANARY_ANNOTATION: target, REJECT_CANARY_ANNOTATION: target}
    assert ask(both) is CanaryRequest.REJECT


def test_a_stale_or_foreign_annotation_asks_nothing() -> None:
    assert ask({}) is None
    # An earlier canary's proposal, or the same name with another prompt (re-created).
    assert ask({APPROVE_CANARY_ANNOTATION: f"classifier-2-0-9@{DIGEST}"}) is None
    assert ask({APPROVE_CANARY_ANNOTATION: "classifier-2-1-0@" + "0" * 64}) is None
    assert ask({APPROVE_CANARY_ANNOTATION: "classifier-2-1-0"}) is None
    # A stale rejection does not block approving this canary.
    stale = {
        REJECT_CANARY_ANNOTATION: "classifier-2-0-9@" + "1" * 64,
        APPROVE_CANARY_ANNOTATION: canary_target("classifier-2-1-0", DIGEST),
    }
    assert ask(stale) is CanaryRequest.APPROVE
    # No digest recorded yet: nothing can name the canary.
    assert ask({APPROVE_CANARY_ANNOTATION: "classifier-2-1-0@"}, digest=None) is None


def test_the_approver_is_the_stamp_else_the_annotations_last_writer() -> None:
    entry = {
        "manager": "argocd-server",
        "time": "2026-12-02T10:00:00Z",
        "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{APPROVE_CANARY_ANNOTATION}": {}}}},
    }
    older = {**entry, "manager": "kubectl-annotate", "time": "2026-12-01T10:00:00Z"}
    other = {"manager": "kopf", "time": "2026-12-03T00:00:00Z", "fieldsV1": {"f:status": {}}}
    assert canary_approver({}, [older, entry, other]) == "argocd-server"
    assert canary_approver({"promptloop.dev/approved-by": "alice"}, [entry]) == "alice"
    assert canary_approver({}, [other]) is None


# -- in the pure decision: advance() -----------------------------------------------------------


def _annotated(
    annotations: dict[str, str], managed: list[dict[str, Any]] | None = None
) -> AgentRollout:
    raw = make_rollout(in_canary("AwaitingApproval", weight=30)).model_dump(
        by_alias=True, exclude_none=True
    )
    raw["metadata"]["annotations"] = annotations
    if managed is not None:
        raw["metadata"]["managedFields"] = managed
    return AgentRollout.model_validate(raw)


def _pass(rollout: AgentRollout, proposal: PromptProposal | None = None) -> Step:
    proposal = proposal or proposal_in("AwaitingApproval", 30)
    return advance(observe(rollout, proposal, registered=(STABLE, "2.1.0"), cause="approval"))


def test_the_rollout_action_approves_its_canary_in_the_pure_core() -> None:
    digest = "d" * 64  # the canary's promptDigest in test_rollout_advance's statuses
    writer = {
        "manager": "argocd-server",
        "time": "2026-03-01T11:59:00Z",
        "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{APPROVE_CANARY_ANNOTATION}": {}}}},
    }
    step = _pass(_annotated({APPROVE_CANARY_ANNOTATION: canary_target("p1", digest)}, [writer]))
    assert step.status is not None and step.status.phase is RolloutPhase.PROMOTING
    assert step.status.canary is not None and step.status.canary.weight == 50
    approval = step.proposals["p1"].approval
    assert approval is not None and approval.approved_by == "argocd-server"
    assert step.proposals["p1"].phase is ProposalPhase.CANARY


def test_a_stale_rollout_annotation_approves_nothing_in_the_pure_core() -> None:
    stale = _annotated({APPROVE_CANARY_ANNOTATION: canary_target("p1", "e" * 64)})
    step = _pass(stale)
    assert step.status is None or step.status.phase is RolloutPhase.AWAITING_APPROVAL
    assert "p1" not in step.proposals or step.proposals["p1"].approval is None


def test_the_rollout_action_rejects_its_canary_in_the_pure_core() -> None:
    step = _pass(_annotated({REJECT_CANARY_ANNOTATION: canary_target("p1", "d" * 64)}))
    assert step.status is not None and step.status.phase is RolloutPhase.ROLLED_BACK
    assert step.proposals["p1"].phase is ProposalPhase.REJECTED
