"""The order in which a rollout's proposals take their turn.

Proposals run one at a time, oldest first. Kubernetes records creation to the second only
(``metadata.creationTimestamp``) and exposes no finer creation order, so proposals filed in the
same second (a burst from an improver, ``kubectl apply`` of a list) need a tie-break: their
versions by semver precedence, which is how improvers number successive candidates (2.9.0
before 2.10.0, which name order would get wrong), then the name.
"""

from __future__ import annotations

import re

from promptloop.api import PromptProposal

__all__ = ["queue_key", "semver_key"]

_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")

SemverKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


def semver_key(version: str) -> SemverKey | None:
    """A sort key giving semver 2.0 precedence (build metadata ignored); None if not semver."""
    match = _SEMVER.match(version)
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    if pre is None:
        # A release sorts after all of its pre-releases.
        return int(major), int(minor), int(patch), 1, ()
    identifiers = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split(".")
    )
    return int(major), int(minor), int(patch), 0, identifiers


def queue_key(proposal: PromptProposal) -> tuple[str, int, SemverKey | tuple[()], str]:
    """Oldest first (to the second), then lower version, then name."""
    version = semver_key(proposal.spec.version)
    return (
        proposal.metadata.creation_timestamp or "",
        0 if version is not None else 1,
        version if version is not None else (),
        proposal.metadata.name,
    )
