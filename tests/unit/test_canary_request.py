"""The rollout's approve-canary / reject-canary annotations (what its Argo CD actions write)."""

from __future__ import annotations

from promptloop.rollout.canary_request import (
    APPROVE_CANARY_ANNOTATION,
    REJECT_CANARY_ANNOTATION,
    CanaryRequest,
    canary_approver,
    canary_request,
    canary_target,
)

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
