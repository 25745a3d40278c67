"""Names and numbers that are part of promptloop's contract with users and with the cluster.

Every name the operator persists (finalizer, annotations, labels) lives under ``promptloop.dev``
from the first release, so that no migration is ever needed to take them over from a framework.
"""

from typing import Final

__all__ = [
    "AGENTFIELD_WEIGHT_SCALE",
    "API_VERSION",
    "APPROVED_BY_ANNOTATION",
    "DEFAULT_PROMPT_ENV",
    "DOMAIN",
    "FINALIZER",
    "GROUP",
    "LABEL_MANAGED_BY",
    "LABEL_PROPOSAL",
    "LABEL_ROLLOUT",
    "LABEL_VERSION",
    "MANAGED_BY",
    "MAX_PROMPT_BYTES",
    "PROMPT_CONFIGMAP_KEY",
    "PROPOSAL_KIND",
    "PROPOSAL_PLURAL",
    "REJECT_ANNOTATION",
    "REJECT_REASON_ANNOTATION",
    "ROLLOUT_KIND",
    "ROLLOUT_PLURAL",
    "VERSION",
]

DOMAIN: Final = "promptloop.dev"
GROUP: Final = DOMAIN
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

ROLLOUT_KIND: Final = "AgentRollout"
ROLLOUT_PLURAL: Final = "agentrollouts"
PROPOSAL_KIND: Final = "PromptProposal"
PROPOSAL_PLURAL: Final = "promptproposals"

FINALIZER: Final = f"{DOMAIN}/finalizer"

LABEL_VERSION: Final = f"{DOMAIN}/version"
LABEL_PROPOSAL: Final = f"{DOMAIN}/proposal"
LABEL_ROLLOUT: Final = f"{DOMAIN}/rollout"
# `promptloop reject` sets it to "true"; the operator rolls the proposal back at once.
REJECT_ANNOTATION: Final = f"{DOMAIN}/rejected"
# Why a person rejected the proposal; for people and audits, the operator does not read it.
REJECT_REASON_ANNOTATION: Final = f"{DOMAIN}/rejected-reason"
# Written at admission by the optional approval policy (manifests/approval-policy).
APPROVED_BY_ANNOTATION: Final = f"{DOMAIN}/approved-by"

LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "promptloop"

# 32 KiB: large enough for any real system prompt, small enough that a ConfigMap (1 MiB cap) and
# an etcd write stay cheap, and that a runaway improver cannot file an essay.
MAX_PROMPT_BYTES: Final = 32 * 1024

# AgentField weights are relative shares validated to 0..10000; we write shares of 10000 so the
# canary's share equals the percent in our API (agentfield-api.md §1.3-1.4).
AGENTFIELD_WEIGHT_SCALE: Final = 10000

DEFAULT_PROMPT_ENV: Final = "SYSTEM_PROMPT"
PROMPT_CONFIGMAP_KEY: Final = "system-prompt"
