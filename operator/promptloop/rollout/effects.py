"""What a pass does: the effects the pure function returns and the reconciler carries out.

:func:`promptloop.rollout.advance.advance` returns a :class:`Step`: the new statuses and the list
of effects, already in the crash-safe order the reconciler executes them in:

1. :class:`ApplyManifests` (render a challenger) and :class:`ScaleToZero` (take one out: always
   safe, and a pass killed after it re-decides from the evidence);
2. :class:`WriteRolloutStatus`, the intent, before the router is told anything;
3. :class:`AssertWeights`, idempotent, read back; the read-back goes into status
   (:func:`promptloop.rollout.advance.after_router`) and is written;
4. :class:`WriteProposalStatus` and :class:`PostEvent`, off the approval's critical path (a pass
   killed before them is repaired by the next one from the rollout's status);
5. :class:`Notify`: the pending deliveries of the outbox the intent carried, started in the
   background.

To add an effect: define a frozen dataclass here, add it to :data:`Effect`, emit it from
:mod:`promptloop.rollout.advance` at its place in the order above, and give the reconciler's
``_execute`` a case for it (a fake in ``tests/unit/test_reconciler.py`` records it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from promptloop.api import AgentRolloutStatus, PromptProposalStatus
from promptloop.api.notifications import NotificationRecord, NotificationsSpec

__all__ = [
    "ApplyManifests",
    "AssertWeights",
    "CountDecision",
    "Effect",
    "Notify",
    "PostEvent",
    "ScaleToZero",
    "Step",
    "WriteProposalStatus",
    "WriteRolloutStatus",
]


@dataclass(frozen=True)
class ApplyManifests:
    """Create or update these objects (server-side apply), in order."""

    manifests: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class ScaleToZero:
    """Scale a Deployment the operator owns to zero replicas (a missing one is fine)."""

    deployment: str


@dataclass(frozen=True)
class WriteRolloutStatus:
    """Write the rollout's whole status (the intent)."""

    status: AgentRolloutStatus


@dataclass(frozen=True)
class AssertWeights:
    """Tell the router the split, read it back, and record the read-back in status.

    ``canary`` is None when the stable version takes the whole share; ``others`` are versions
    the router lists that are neither (they keep the router's minimum share).
    """

    node_id: str
    stable: str
    canary: str | None
    canary_percent: int
    others: tuple[str, ...] = ()


@dataclass(frozen=True)
class WriteProposalStatus:
    """Write one PromptProposal's whole status."""

    name: str
    status: PromptProposalStatus


@dataclass(frozen=True)
class PostEvent:
    """A Kubernetes Event on ``involved`` (an object reference: apiVersion, kind, metadata)."""

    involved: Mapping[str, Any]
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class CountDecision:
    """One verdict of the decision function, for the operator's own Prometheus metrics."""

    verdict: str


@dataclass(frozen=True)
class Notify:
    """Deliver the outbox's pending notifications, in the background (the pass never waits).

    Emitted last: the records were written with the rollout's status (the intent) first, so a
    crash before delivery leaves them Pending for the next operator. ``spec`` is the rollout's
    own sinks (``spec.notifications``).
    """

    records: tuple[NotificationRecord, ...]
    spec: NotificationsSpec | None = None


Effect = (
    ApplyManifests
    | ScaleToZero
    | WriteRolloutStatus
    | AssertWeights
    | WriteProposalStatus
    | PostEvent
    | CountDecision
    | Notify
)


@dataclass(frozen=True)
class Step:
    """The outcome of one pass: the statuses it leads to and what to do, in order."""

    status: AgentRolloutStatus | None
    proposals: Mapping[str, PromptProposalStatus] = field(default_factory=dict)
    effects: tuple[Effect, ...] = ()
