"""PromptProposal handlers: a new proposal, an approval, a rejection or a deletion is acted on at
once (event-driven), not at the rollout's next interval."""

from __future__ import annotations

from typing import Any

import kopf

from promptloop.constants import GROUP, PROPOSAL_PLURAL, REJECT_ANNOTATION, VERSION
from promptloop.k8s.cached import observe
from promptloop.k8s.client import NotFound

__all__ = ["approval_changed", "proposal_changed", "proposal_deleted", "rejection_changed"]


async def _reconcile_owner(
    body: kopf.Body, spec: kopf.Spec, namespace: str | None, memo: Any, cause: str
) -> None:
    namespace = namespace or "default"
    # The change kopf saw (an approval) may be ahead of the operator's own watch cache.
    observe(memo.kube, PROPOSAL_PLURAL, body)
    rollout = spec.get("rolloutRef", {}).get("name", "")
    try:
        await memo.kube.get_rollout(namespace, rollout)
    except NotFound:
        await memo.reconciler.mark_orphans(namespace, rollout)
        return
    await memo.reconciler.reconcile(namespace, rollout, cause=cause)


@kopf.on.create(GROUP, VERSION, PROPOSAL_PLURAL)
@kopf.on.resume(GROUP, VERSION, PROPOSAL_PLURAL)
async def proposal_changed(
    body: kopf.Body, spec: kopf.Spec, namespace: str | None, memo: Any, **_: Any
) -> None:
    """Validate and, when it is next in line, render the challenger now."""
    await _reconcile_owner(body, spec, namespace, memo, "proposal")


@kopf.on.field(GROUP, VERSION, PROPOSAL_PLURAL, field="spec.approved")
async def approval_changed(
    body: kopf.Body, spec: kopf.Spec, namespace: str | None, memo: Any, **_: Any
) -> None:
    """The human gate moved: write the ceiling weight (or roll back) without waiting."""
    await _reconcile_owner(body, spec, namespace, memo, "approval")


@kopf.on.field(
    GROUP, VERSION, PROPOSAL_PLURAL, field=("metadata", "annotations", REJECT_ANNOTATION)
)
async def rejection_changed(
    body: kopf.Body, spec: kopf.Spec, namespace: str | None, memo: Any, **_: Any
) -> None:
    """`promptloop reject` marked the proposal: roll it back now."""
    await _reconcile_owner(body, spec, namespace, memo, "approval")


@kopf.on.delete(GROUP, VERSION, PROPOSAL_PLURAL)
async def proposal_deleted(
    body: kopf.Body, spec: kopf.Spec, namespace: str | None, memo: Any, **_: Any
) -> None:
    """Before the proposal goes, the stable version gets the whole share again."""
    await _reconcile_owner(body, spec, namespace, memo, "deletion")
