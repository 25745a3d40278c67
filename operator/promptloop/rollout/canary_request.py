"""Approving or rejecting a rollout's active canary through annotations on the AgentRollout.

Argo CD's resource actions may patch only the object they run on, so the AgentRollout's
``approve`` and ``reject`` actions (manifests/argocd/actions/agentrollout/) cannot set
``spec.approved`` on the proposal. They write, on the rollout:

* ``promptloop.dev/approve-canary: "<proposal>@<prompt sha256>"``
* ``promptloop.dev/reject-canary: "<proposal>@<prompt sha256>"``

naming the active canary's proposal and the digest of the prompt it canaries. The operator
treats a value that names the *current* canary exactly like ``spec.approved: true`` or
``promptloop.dev/rejected`` on that proposal. A value naming another proposal or another prompt
(left from an earlier canary, or a proposal deleted and re-created under the same name) means
nothing, so an annotation can never approve a canary nobody looked at. Rejection wins over
approval when both name the canary. Pure: no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from promptloop.constants import DOMAIN

__all__ = [
    "APPROVE_CANARY_ANNOTATION",
    "REJECT_CANARY_ANNOTATION",
    "CanaryRequest",
    "canary_approver",
    "canary_request",
    "canary_target",
]

APPROVE_CANARY_ANNOTATION = f"{DOMAIN}/approve-canary"
REJECT_CANARY_ANNOTATION = f"{DOMAIN}/reject-canary"
# Stamped by the chart's MutatingAdmissionPolicy with the requester's user name.
_APPROVED_BY = f"{DOMAIN}/approved-by"


class CanaryRequest(enum.StrEnum):
    """What the rollout's annotations ask of its current canary."""

    APPROVE = "approve"
    REJECT = "reject"


def canary_target(proposal: str, prompt_digest: str) -> str:
    """The annotation value that names one canary: ``<proposal>@<sha256 of its prompt>``."""
    return f"{proposal}@{prompt_digest}"


def canary_request(
    annotations: Mapping[str, str], *, proposal: str, prompt_digest: str | None
) -> CanaryRequest | None:
    """What the rollout's annotations ask of the canary (``proposal``, ``prompt_digest``).

    Parameters
    ----------
    annotations
        The AgentRollout's annotations.
    proposal
        The active canary's PromptProposal.
    prompt_digest
        The sha256 of the prompt being canaried (``status.canary.promptDigest``); without one
        no annotation can name the canary, so nothing is asked.

    Returns
    -------
    CanaryRequest or None
        REJECT or APPROVE when an annotation names exactly this canary, else None.
    """
    if not prompt_digest:
        return None
    target = canary_target(proposal, prompt_digest)
    if annotations.get(REJECT_CANARY_ANNOTATION) == target:
        return CanaryRequest.REJECT
    if annotations.get(APPROVE_CANARY_ANNOTATION) == target:
        return CanaryRequest.APPROVE
    return None


def canary_approver(annotations: Mapping[str, str], managed_fields: list[Any]) -> str | None:
    """Who approved through the rollout: the user the approval policy stamped, else the client
    that last wrote the annotation (its managedFields manager, e.g. ``argocd-server``)."""
    stamped = annotations.get(_APPROVED_BY)
    if stamped:
        return stamped
    best: tuple[str, str] | None = None
    key = f"f:{APPROVE_CANARY_ANNOTATION}"
    for entry in managed_fields or []:
        fields = entry.get("fieldsV1", {}).get("f:metadata", {}).get("f:annotations", {})
        if key in fields:
            candidate = (entry.get("time", ""), entry.get("manager", ""))
            if best is None or candidate > best:
                best = candidate
    return best[1] if best else None
