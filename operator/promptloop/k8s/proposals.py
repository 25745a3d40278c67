"""What the improver reads from and writes to the cluster (synchronously: it is a CLI).

Reads: the ``AgentRollout`` (its stable version: ``status.stableVersion``, else
``spec.stable.version``; its stable Deployment: ``status.stableDeployment``, else
``spec.stable.deploymentName``), and the stable prompt that Deployment carries, found exactly as
the operator finds it (:func:`promptloop.render.challenger.stable_prompt_source`: the last env
entry of that name, a ``configMapKeyRef``, an ``envFrom`` ConfigMap, or the file at
``spec.prompt.mountPath`` from a ConfigMap or projected volume). A prompt kept in a Secret is not
read (the improver has no business with Secrets): pass ``--stable-prompt`` instead.

Writes: one ``PromptProposal`` (create only; the improver never updates or deletes).

RBAC the improver needs: ``get`` agentrollouts, ``list``/``create`` promptproposals, ``get``
deployments and configmaps, in the rollout's namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from promptloop.api.agentrollout import AgentRollout
from promptloop.constants import PROPOSAL_PLURAL, ROLLOUT_PLURAL
from promptloop.k8s.sync import ClusterError, KubeRequestError, SyncKube
from promptloop.render.challenger import RenderError, stable_prompt_source

__all__ = [
    "ClusterError",
    "ProposalSummary",
    "StableInfo",
    "create_proposal",
    "list_proposals",
    "read_stable",
]


@dataclass(frozen=True)
class StableInfo:
    """The rollout's stable version as the improver needs it."""

    rollout: str
    namespace: str
    version: str
    deployment: str
    prompt: str
    agentfield_url: str | None
    node_id: str | None


def read_stable(kube: SyncKube, rollout: str) -> StableInfo:
    """Read the rollout's stable version, Deployment and prompt.

    Raises
    ------
    ClusterError
        On any failed read or when the prompt cannot be found.
    """
    namespace = kube.namespace
    raw = kube.get(ROLLOUT_PLURAL, rollout, "AgentRollout")
    try:
        model = AgentRollout.model_validate(raw)
    except pydantic.ValidationError as error:
        raise ClusterError(f"AgentRollout {namespace}/{rollout} is malformed: {error}") from None
    version = model.status.stable_version or model.spec.stable.version
    deployment = model.status.stable_deployment or model.spec.stable.deployment_name
    stable = kube.deployment(deployment)
    try:
        source = stable_prompt_source(stable_deployment=stable, prompt=model.spec.prompt)
    except RenderError as error:
        raise ClusterError(f"Deployment {namespace}/{deployment}: {error}") from None
    prompt, why = kube.stable_prompt(source)
    if prompt is None:
        raise ClusterError(f"cannot read the stable prompt of Deployment {deployment}: {why}")
    router = model.spec.router.agentfield
    return StableInfo(
        rollout=rollout,
        namespace=namespace,
        version=version,
        deployment=deployment,
        prompt=prompt,
        agentfield_url=router.url if router is not None else None,
        node_id=model.spec.agent.node_id,
    )


@dataclass(frozen=True)
class ProposalSummary:
    """One existing PromptProposal of a rollout."""

    name: str
    version: str
    phase: str | None


def list_proposals(kube: SyncKube, rollout: str) -> list[ProposalSummary]:
    """Every PromptProposal in the namespace that references the rollout.

    Raises
    ------
    ClusterError
        When the list fails.
    """
    found: list[ProposalSummary] = []
    for item in kube.list(PROPOSAL_PLURAL, "PromptProposal"):
        spec = item.get("spec") or {}
        if (spec.get("rolloutRef") or {}).get("name") != rollout or not spec.get("version"):
            continue
        found.append(
            ProposalSummary(
                name=str((item.get("metadata") or {}).get("name", "")),
                version=str(spec["version"]),
                phase=(item.get("status") or {}).get("phase"),
            )
        )
    return found


def create_proposal(kube: SyncKube, body: Mapping[str, Any]) -> dict[str, Any]:
    """Create a PromptProposal; never updates an existing one.

    Raises
    ------
    ClusterError
        When it exists already, admission refuses it, or the API is unreachable.
    """
    name = (body.get("metadata") or {}).get("name", "")
    try:
        return kube.create(PROPOSAL_PLURAL, body, "PromptProposal")
    except KubeRequestError as error:
        if error.status == 409:
            raise ClusterError(f"PromptProposal {kube.namespace}/{name} exists already") from None
        raise
