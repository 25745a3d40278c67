"""What one pass knows: an immutable snapshot of the world, gathered before anything is decided.

The reconciler's gatherer (:mod:`promptloop.observe`) fills an :class:`Observations` with
everything a pass may need (the rollout, its proposals, the stable Deployment and prompt, the
challenger's Deployment, the router's versions, the counters, the clock) and hands it to
:func:`promptloop.rollout.advance.advance`. Nothing here does I/O; the types are plain frozen
dataclasses so that tests build them by hand.

To add an observation: add a field here (with a default, so that existing callers and tests keep
working), fill it in :mod:`promptloop.observe`, read it in :mod:`promptloop.rollout.advance`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from promptloop.api import AgentRollout, PromptProposal
from promptloop.rollout.notifications import Sink

__all__ = [
    "Counters",
    "Observations",
    "Readiness",
    "Rendering",
    "RouterVersion",
]


@dataclass(frozen=True)
class RouterVersion:
    """One version as the traffic router lists it."""

    version: str
    # The router's own number for the version's share (AgentField's weight); None when the
    # listing does not carry one (the Gateway API router lists versions from its Services).
    weight: int | None
    last_heartbeat: datetime | None = None


@dataclass(frozen=True)
class Readiness:
    """Whether a version can take traffic through the router, and why (for a condition).

    ``ready`` is None when the router could not be asked (missing data: hold, no clock runs).
    """

    ready: bool | None
    reason: str
    message: str


@dataclass(frozen=True)
class Counters:
    """Cumulative requests and failures of both versions, as the evidence provider reported."""

    stable_total: int
    stable_failed: int
    canary_total: int
    canary_failed: int


@dataclass(frozen=True)
class Rendering:
    """A proposal's challenger as ``render/`` produced it, or why it could not be rendered.

    ``manifests`` are applied in order (the ConfigMap first: the Deployment refers to it).
    """

    deployment: str = ""
    config_map: str = ""
    digest: str = ""
    manifests: tuple[Mapping[str, Any], ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Observations:
    """Everything one pass of one rollout decides from.

    Attributes
    ----------
    rollout
        The AgentRollout as read at the start of the pass (its status is the truth).
    proposals
        The PromptProposals that name it, oldest first.
    now
        The pass's clock.
    cause
        What triggered the pass: ``tick``, ``spec``, ``proposal``, ``approval`` or ``deletion``.
    token_problem
        Why the connector token could not be read (None: it was).
    stable_deployment, stable_problem
        The stable Deployment (None when it could not be read, and then why).
    stable_prompt, stable_prompt_problem
        The stable prompt text when it can be known, and why the Deployment's prompt is unusable.
    challenger_deployment
        The Deployment named by ``status.canary.deployment`` (None: no canary, or not found).
    versions, router_problem
        The router's versions of the node (None when they could not be listed, and why).
        ``router_forbidden`` tells a rejected token from an unreachable router.
    counters, counters_problem
        Both versions' cumulative counters while a canary holds a weight (None: not read, or
        unavailable and why).
    renderings
        The rendered challenger of each proposal that may start in this pass, by name.
    notification_sinks
        The sinks configured for this rollout (the operator's and ``spec.notifications``'s):
        each transition to announce gets one delivery per sink that wants its event.
    challenger_readiness
        What the router says about the canary's version (registered and answering at its own
        address on AgentField; the route carrying the canary backend on Gateway API); None when
        it was not asked (no canary, or no router).
    router_orders_by_version_string
        The router's real routing sends every call to the smallest version string (AgentField's
        execute route): a challenger that sorts first must be refused. True when unknown.
    router_drains_by_weight
        Weight 0 takes a version out of rotation (Gateway API; not AgentField).
    """

    rollout: AgentRollout
    now: datetime
    proposals: tuple[PromptProposal, ...] = ()
    cause: str = "tick"
    token_problem: str | None = None
    stable_deployment: Mapping[str, Any] | None = None
    stable_problem: str | None = None
    stable_prompt: str | None = None
    stable_prompt_problem: str | None = None
    challenger_deployment: Mapping[str, Any] | None = None
    versions: tuple[RouterVersion, ...] | None = None
    router_problem: str | None = None
    router_forbidden: bool = False
    counters: Counters | None = None
    counters_problem: str | None = None
    renderings: Mapping[str, Rendering] = field(default_factory=dict)
    notification_sinks: tuple[Sink, ...] = ()
    challenger_readiness: Readiness | None = None
    router_orders_by_version_string: bool = True
    router_drains_by_weight: bool = False

    @property
    def namespace(self) -> str:
        return self.rollout.metadata.namespace or "default"
