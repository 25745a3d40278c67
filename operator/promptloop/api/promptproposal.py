"""``PromptProposal``: one candidate system prompt for an agent, filed by an improver.

The improver may create proposals and nothing else; the operator renders each into a challenger
and the referenced ``AgentRollout`` decides its fate. ``spec.approved`` is the human gate: the
only field anyone edits after creation.
"""

from __future__ import annotations

import enum

from pydantic import Field
from pydantic.config import JsonDict

from promptloop.api.common import (
    SEMVER_PATTERN,
    ApiModel,
    Condition,
    LocalObjectReference,
    ObjectMeta,
    SpecModel,
    cel,
)
from promptloop.constants import API_VERSION, MAX_PROMPT_BYTES, PROPOSAL_KIND

__all__ = [
    "MAX_EXAMPLES",
    "Approval",
    "Evidence",
    "FailureExample",
    "PromptProposal",
    "PromptProposalSpec",
    "PromptProposalStatus",
    "ProposalPhase",
    "ProposalSource",
]

MAX_EXAMPLES = 10


def _immutable(field: str, hint: str) -> JsonDict:
    return {"x-kubernetes-validations": [cel("self == oldSelf", f"{field} is immutable; {hint}")]}


class FailureExample(SpecModel):
    """One recorded miss the proposal learned from."""

    input: str = Field(max_length=4096, description="The agent's input (truncated).")
    predicted: str = Field(default="", max_length=1024, description="What the agent answered.")
    expected: str = Field(default="", max_length=1024, description="What it should have answered.")


class Evidence(SpecModel):
    """What the improver saw and, with --evaluate, what the candidate fixed and broke."""

    failure_count: int = Field(default=0, ge=0, description="Failures the improver read.")
    examples: list[FailureExample] = Field(
        default_factory=list,
        max_length=MAX_EXAMPLES,
        description=f"A few of those failures (at most {MAX_EXAMPLES}).",
    )
    fixed: int | None = Field(default=None, ge=0, description="Replayed failures now right.")
    regressed: int | None = Field(default=None, ge=0, description="Passing cases now wrong.")
    evaluated: int | None = Field(default=None, ge=0, description="Cases replayed in all.")


class ProposalSource(SpecModel):
    """Who proposed it and what it cost."""

    improver: str = Field(default="", max_length=253, description="The improver's name.")
    model: str = Field(default="", max_length=253, description="The model that wrote the prompt.")
    prompt_tokens: int | None = Field(default=None, ge=0, description="Tokens sent.")
    completion_tokens: int | None = Field(default=None, ge=0, description="Tokens received.")
    cost_usd: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?$",
        max_length=32,
        description="Estimated cost in US dollars, as a decimal string.",
    )


class PromptProposalSpec(SpecModel):
    """A candidate prompt. Everything but ``approved`` is fixed at creation."""

    rollout_ref: LocalObjectReference = Field(
        description="The AgentRollout (same namespace) that canaries this proposal.",
        json_schema_extra=_immutable("rolloutRef", "file a new PromptProposal instead"),
    )
    version: str = Field(
        pattern=SEMVER_PATTERN,
        max_length=128,
        description="The challenger's version (semver, unique per rollout), e.g. 2.1.0.",
        json_schema_extra=_immutable("version", "file a new PromptProposal instead"),
    )
    system_prompt: str = Field(
        min_length=1,
        max_length=MAX_PROMPT_BYTES,
        description=f"The revised system prompt (1 to {MAX_PROMPT_BYTES} characters).",
        json_schema_extra=_immutable("systemPrompt", "file a new PromptProposal instead"),
    )
    rationale: str = Field(
        default="",
        max_length=4096,
        description="One line on what the prompt changes and why.",
    )
    evidence: Evidence | None = Field(default=None, description="What the proposal rests on.")
    source: ProposalSource | None = Field(default=None, description="Who proposed it.")
    approved: bool | None = Field(
        default=None,
        description=(
            "The human gate. Absent or false: the canary holds below the ceiling. true: the "
            "operator may give the challenger the majority and promote it on evidence."
        ),
    )


class ProposalPhase(enum.StrEnum):
    """Where a proposal is. The transition table lives in :mod:`promptloop.rollout.phases`."""

    PENDING = "Pending"
    RENDERED = "Rendered"
    CANARY = "Canary"
    AWAITING_APPROVAL = "AwaitingApproval"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    REJECTED = "Rejected"
    SUPERSEDED = "Superseded"
    INVALID = "Invalid"


class Approval(ApiModel):
    """The approval as the operator acted on it."""

    approved_at: str | None = Field(default=None, description="When it was seen (RFC 3339).")
    approved_by: str | None = Field(
        default=None,
        description="Who set spec.approved, where the platform records it (managedFields manager).",
    )
    prompt_digest: str | None = Field(
        default=None,
        description="sha256 of the prompt that was approved.",
    )


class PromptProposalStatus(ApiModel):
    """What the operator made of the proposal."""

    phase: ProposalPhase | None = Field(default=None, description="Where the proposal is.")
    message: str | None = Field(default=None, description="Why it is there, in a sentence.")
    observed_generation: int | None = Field(
        default=None,
        description="The .metadata.generation last acted on.",
    )
    config_map_name: str | None = Field(default=None, description="The prompt's ConfigMap.")
    deployment_name: str | None = Field(default=None, description="The challenger Deployment.")
    prompt_digest: str | None = Field(default=None, description="sha256 of spec.systemPrompt.")
    weight: int | None = Field(default=None, description="The challenger's weight, in percent.")
    approval: Approval | None = Field(default=None, description="The approval, once acted on.")
    rendered_at: str | None = Field(default=None, description="When the challenger was rendered.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Rendered, ChallengerReady, Approved, Promoted, RolledBack.",
    )


class PromptProposal(ApiModel):
    """A whole PromptProposal object."""

    model_config = {
        "json_schema_extra": {
            "x-promptloop-crd": {
                "kind": PROPOSAL_KIND,
                "plural": "promptproposals",
                "singular": "promptproposal",
                "shortNames": ["pp"],
                "categories": ["promptloop"],
                # A rollout's pass lists only its own proposals, filtered by the API server.
                "selectableFields": [".spec.rolloutRef.name"],
                "description": (
                    "A candidate system prompt for the agent of an AgentRollout, filed by an "
                    "improver and promoted only on evidence and a person's approval."
                ),
                "printerColumns": [
                    {"name": "Rollout", "type": "string", "jsonPath": ".spec.rolloutRef.name"},
                    {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Weight", "type": "integer", "jsonPath": ".status.weight"},
                    {"name": "Approved", "type": "boolean", "jsonPath": ".spec.approved"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }
        }
    }

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = Field(default=PROPOSAL_KIND)
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PromptProposalSpec
    status: PromptProposalStatus = Field(default_factory=PromptProposalStatus)
