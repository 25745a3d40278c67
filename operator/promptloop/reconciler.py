"""One reconciliation pass of an AgentRollout and its PromptProposals.

The kopf handlers delegate here; this module gathers observations through ``k8s/``, the router
and the metrics provider, hands them to the pure functions in ``rollout/`` and ``render/``, and
performs what they decide, in an order that keeps the system crash-safe:

1. the new status (the intent) is written first;
2. then the router is told, idempotently, and read back;
3. the read-back goes into status.

A pass killed at any point leaves status as the truth; the next pass re-asserts the router from
it. Passes of one rollout never run concurrently (a lock per rollout), and the weight changes at
most once per interval however often passes run (``plan.is_due``), so a restart cannot
double-step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from promptloop.api import (
    AgentRollout,
    AgentRolloutStatus,
    DecisionStatus,
    PromptProposal,
    PromptProposalStatus,
    ProposalPhase,
    RolloutPhase,
    VersionCounts,
    VersionWeight,
    WindowCounts,
)
from promptloop.api.common import parse_duration
from promptloop.constants import (
    API_VERSION,
    DOMAIN,
    PROPOSAL_KIND,
    PROPOSAL_PLURAL,
    ROLLOUT_PLURAL,
)
from promptloop.k8s.client import Kube, KubeError, NotFound
from promptloop.metrics.base import MetricsProvider, MetricsUnavailable
from promptloop.metrics.base import provider_for as metrics_provider_for
from promptloop.metrics.endpoint import ClientPool
from promptloop.metrics.endpoint import resolve as resolve_endpoint
from promptloop.notify.dispatch import Notifier
from promptloop.observability import OperatorMetrics
from promptloop.render.challenger import (
    OwnerRef,
    RenderError,
    prompt_digest,
    render_challenger,
    stable_prompt_source,
)
from promptloop.rollout import notifications, plan
from promptloop.rollout.conditions import proposal_conditions, rollout_conditions
from promptloop.rollout.decision import Counts, Policy, Verdict, decide
from promptloop.rollout.phases import (
    PROPOSAL_TERMINAL,
    iso,
    proposal_transition,
    set_condition,
)
from promptloop.rollout.traffic import TrafficVerdict, verify_traffic
from promptloop.rollout.window import Cumulative, window_counts
from promptloop.routers.agentfield import AgentFieldRouter, RetryPolicy
from promptloop.routers.base import RouterError, RouterForbidden, VersionInfo

__all__ = ["APPROVED_BY_ANNOTATION", "HEARTBEAT_FRESH", "REJECT_ANNOTATION", "Reconciler"]

log = logging.getLogger("promptloop.reconciler")

# AgentField's own stale threshold for heartbeats (agentfield-api.md §2).
HEARTBEAT_FRESH = timedelta(seconds=60)
REJECT_ANNOTATION = f"{DOMAIN}/rejected"
# Written at admission by the optional approval policy (manifests/approval-policy).
APPROVED_BY_ANNOTATION = f"{DOMAIN}/approved-by"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Pass:
    """What one pass accumulates before writing."""

    rollout: AgentRollout
    status: AgentRolloutStatus
    proposals: list[PromptProposal]
    proposal_status: dict[str, PromptProposalStatus] = field(default_factory=dict)
    # AgentField's versions, listed once per pass (by the readiness check or the router step).
    versions: list[VersionInfo] | None = None
    notices: list[tuple[dict[str, Any], plan.Notice]] = field(default_factory=list)

    def proposal(self, name: str) -> PromptProposal:
        found = next(p for p in self.proposals if p.metadata.name == name)
        if name in self.proposal_status:
            return found.model_copy(update={"status": self.proposal_status[name]})
        return found


class Reconciler:
    """Reconciles rollouts; one instance per operator process."""

    def __init__(
        self,
        kube: Kube,
        http: httpx.AsyncClient,
        *,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], datetime] = _now,
        router_retry_delays: tuple[float, ...] = (0.2, 0.5, 1.0),
        notifier: Notifier | None = None,
    ) -> None:
        self.kube = kube
        self.notifier = notifier
        # Clients for metrics backends with their own CA bundle (closed at shutdown).
        self.clients = ClientPool(http)
        self.http = http
        self.metrics = metrics or OperatorMetrics()
        self.clock = clock
        self.router_retry_delays = router_retry_delays
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # The router each rollout's last pass used (URL and token), for the weight guard.
        self._routers: dict[tuple[str, str], tuple[str, str]] = {}

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """The lock that serialises passes of one rollout."""
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def forget(self, namespace: str, name: str) -> None:
        """Drop the lock and cached router of a deleted rollout."""
        self._locks.pop((namespace, name), None)
        self._routers.pop((namespace, name), None)

    async def weights_drifted(
        self, namespace: str, name: str, *, node_id: str, status: Mapping[str, Any]
    ) -> bool:
        """Whether AgentField's weights differ from what the last pass read back.

        Every (re-)registration of a version resets its weight to 100: a restarted stable pod
        mid-canary would hand the canary the majority until the next pass. This read-only check
        (one GET, no Kubernetes call) runs between passes so that the drift is re-asserted within
        seconds rather than an interval. Unreachable or unknown: no drift (the pass reports it).
        """
        cached = self._routers.get((namespace, name))
        expected = {
            w["version"]: w["raw"] for w in status.get("weights") or [] if w.get("raw") is not None
        }
        if cached is None or not expected:
            return False
        url, token = cached
        router = AgentFieldRouter(
            url, token, client=self.http, retry=RetryPolicy(attempts=1, backoff=())
        )
        try:
            versions = await router.list_versions(node_id)
        except RouterError:
            return False
        actual = {v.version: v.weight for v in versions}
        return actual != expected

    # ------------------------------------------------------------------------------------
    # Entry points

    async def reconcile(self, namespace: str, name: str, *, cause: str) -> None:
        """One pass over rollout ``namespace/name`` and its proposals."""
        async with self.lock(namespace, name):
            try:
                raw = await self.kube.get_rollout(namespace, name)
            except NotFound:
                return
            await self._pass(raw, cause=cause)

    async def mark_orphans(self, namespace: str, rollout_name: str) -> None:
        """Proposals that reference a rollout which does not exist become Invalid."""
        for raw in await self.kube.list_proposals(namespace, rollout_name):
            proposal = PromptProposal.model_validate(raw)
            if proposal.spec.rollout_ref.name != rollout_name:
                continue
            if proposal.status.phase in PROPOSAL_TERMINAL:
                continue
            message = f"AgentRollout {rollout_name} not found in namespace {namespace}"
            if proposal.status.message != message:
                status = proposal.status.model_copy(deep=True)
                status.phase = ProposalPhase.INVALID
                status.message = message
                await self._write_proposal_status(namespace, proposal.metadata.name, status)
                await self.kube.post_event(
                    involved=raw, reason="Invalid", message=message, warning=True
                )

    # ------------------------------------------------------------------------------------
    # The pass

    async def _pass(self, raw: dict[str, Any], *, cause: str) -> None:
        rollout = AgentRollout.model_validate(raw)
        namespace = rollout.metadata.namespace or "default"
        now = self.clock()
        state = _Pass(rollout, rollout.status.model_copy(deep=True), [])
        original = rollout.status.model_copy(deep=True)
        state.status.observed_generation = rollout.metadata.generation
        # Independent reads run concurrently: a pass's length is what an approval may wait for.
        raw_proposals, (token, token_problem), stable_deployment = await asyncio.gather(
            self.kube.list_proposals(namespace, rollout.metadata.name),
            self._token(rollout),
            self._stable_deployment(state),
        )
        state.proposals = proposals = sorted(
            (
                PromptProposal.model_validate(p)
                for p in raw_proposals
                if p.get("spec", {}).get("rolloutRef", {}).get("name") == rollout.metadata.name
            ),
            key=lambda p: (p.metadata.creation_timestamp or "", p.metadata.name),
        )
        original_proposals = {p.metadata.name: p.status for p in proposals}
        if token is None:
            self._invalidate(state.status, token_problem, reason="MissingSecret")
            stable_deployment = None
        stable_prompt: str | None = None
        if stable_deployment is not None:
            try:
                stable_prompt = await self._stable_prompt(namespace, stable_deployment, rollout)
            except RenderError as error:
                self._invalidate(
                    state.status,
                    f"cannot read the stable Deployment's prompt: {error}",
                    reason="StableDeploymentUnusable",
                )
                stable_deployment = None
        if token is None or stable_deployment is None:
            self._hold_unstarted_proposals(state, state.status.message or "")
            self._conditions_and_notifications(state, original, now)
            await self._commit(state, original, raw)
            await self._commit_rest(state, original_proposals)
            self._notify(state)
            return
        if state.status.phase is RolloutPhase.INVALID:
            # What made the rollout invalid is fixed (the Secret or Deployment appeared).
            state.status.phase = (
                RolloutPhase.PROGRESSING if state.status.canary else RolloutPhase.STABLE
            )
            state.status.message = "recovered: the missing object is present"

        stale_challengers = self._repair(state)
        active = self._select_active(state, stable_prompt, now)
        router = self._router(rollout, token)
        assert rollout.spec.router.agentfield is not None
        self._routers[(namespace, rollout.metadata.name)] = (
            rollout.spec.router.agentfield.url,
            token,
        )
        challenger_scale_to_zero: str | None = None

        if active is not None:
            canary = state.status.canary
            if canary is not None and canary.proposal != active.metadata.name:
                # A rolled-back challenger held at the floor gives way to the next proposal.
                challenger_scale_to_zero = canary.deployment
                state.status.canary = None
            if state.status.canary is None:
                await self._render(state, active, stable_deployment, now)
            else:
                deployment = state.status.canary.deployment
                outcome = await self._advance(state, active, router, now, cause=cause)
                if outcome is not None and outcome.scale_challenger_to_zero:
                    challenger_scale_to_zero = deployment
        elif state.status.canary is None and state.status.phase in (
            None,
            RolloutPhase.PENDING,
        ):
            state.status.phase = RolloutPhase.STABLE
            state.status.message = f"{state.status.stable_version} serves all traffic"

        await self._retire(state, now)
        # Taking a challenger out goes first: it is always safe, and a pass killed after it
        # re-decides from the evidence, whereas one killed before it would leave it running.
        for deployment in filter(None, [challenger_scale_to_zero, *stale_challengers]):
            await self._scale_to_zero(namespace, deployment)
        self._conditions_and_notifications(state, original, now)
        # Intent before the router: a crash after this write re-asserts the same weights.
        await self._commit(state, original, raw)
        await self._assert_router(state, router, raw, now)
        await self._commit_rest(state, original_proposals)
        self._notify(state)

    # ------------------------------------------------------------------------------------
    # Conditions and notifications

    def _conditions_and_notifications(
        self, state: _Pass, original: AgentRolloutStatus, now: datetime
    ) -> None:
        """Derive every proposal's conditions and the rollout's outcome conditions from the
        statuses about to be written, and put the transitions to announce into the outbox
        (``status.notifications``), which the rollout's intent write then carries."""
        status = state.status
        active = status.canary.proposal if status.canary is not None else None
        challenger_ready = next((c for c in status.conditions if c.type == "ChallengerReady"), None)
        for proposal in state.proposals:
            name = proposal.metadata.name
            current = state.proposal_status.get(name, proposal.status)
            conditions = proposal_conditions(
                current,
                challenger_ready=challenger_ready if name == active else None,
                generation=proposal.metadata.generation,
                now=now,
            )
            if conditions != current.conditions:
                state.proposal_status[name] = current.model_copy(update={"conditions": conditions})
        status.conditions = rollout_conditions(status, now=now)
        sinks = self.notifier.sinks_for(state.rollout.spec.notifications) if self.notifier else []
        if sinks:
            records = notifications.detect(
                rollout_before=original,
                rollout_after=status,
                proposals=state.proposals,
                proposals_after=state.proposal_status,
                sinks=sinks,
                now=now,
            )
            status.notifications = notifications.merge(status.notifications, records)

    def _notify(self, state: _Pass) -> None:
        """Hand the outbox's pending deliveries to the notifier (background: never waits)."""
        if self.notifier is None or not notifications.pending(state.status.notifications):
            return
        self.notifier.schedule(
            state.rollout.metadata.namespace or "default",
            state.rollout.metadata.name,
            state.rollout.spec.notifications,
            state.status.notifications,
        )

    async def record_notification(
        self,
        namespace: str,
        name: str,
        record_id: str,
        sink: str,
        attempts: int,
        sent: bool,
        final: bool,
        error: str | None,
    ) -> None:
        """Write one delivery's outcome into the rollout's outbox.

        Under the rollout's lock, so it never races a pass (a pass writes the whole status it
        read; this write lands between passes, and the next pass reads it).
        """
        async with self.lock(namespace, name):
            try:
                raw = await self.kube.get_rollout(namespace, name)
            except NotFound:
                return
            rollout = AgentRollout.model_validate(raw)
            updated = notifications.record_attempt(
                rollout.status.notifications,
                record_id=record_id,
                sink=sink,
                attempts=attempts,
                sent=sent,
                final=final,
                error=error,
                now=self.clock(),
            )
            if updated == rollout.status.notifications:
                return
            await self.kube.patch_status(
                ROLLOUT_PLURAL,
                namespace,
                name,
                {"notifications": [r.model_dump(mode="json", by_alias=True) for r in updated]},
            )

    # ------------------------------------------------------------------------------------
    # Rollout-level checks

    async def _token(self, rollout: AgentRollout) -> tuple[str | None, str]:
        """The connector token, or None and why not (the caller invalidates the rollout)."""
        agentfield = rollout.spec.router.agentfield
        assert agentfield is not None  # exactly one router, checked at admission
        ref = agentfield.token_secret_ref
        namespace = rollout.metadata.namespace or "default"
        try:
            token = await self.kube.get_secret_value(namespace, ref.name, ref.key)
        except KubeError as error:
            return None, f"cannot read the connector token: {error}"
        if token is None:
            return None, (
                "cannot read the connector token: "
                f"Secret {ref.name} has no key {ref.key} (or does not exist)"
            )
        return token, ""

    def _hold_unstarted_proposals(self, state: _Pass, message: str) -> None:
        """Proposals not yet rendered cannot start while the rollout is invalid: say why."""
        for proposal in state.proposals:
            if proposal.status.phase not in (None, ProposalPhase.PENDING, ProposalPhase.INVALID):
                continue
            text = f"the rollout is invalid: {message}"
            if proposal.status.message == text:
                continue
            updated = proposal.status.model_copy(deep=True)
            updated.phase = ProposalPhase.INVALID
            updated.message = text
            state.proposal_status[proposal.metadata.name] = updated
            state.notices.append(
                (self._proposal_ref(proposal), plan.Notice(True, "Invalid", text, True))
            )

    def _invalidate(self, status: AgentRolloutStatus, message: str, *, reason: str) -> None:
        status.phase = RolloutPhase.INVALID
        status.message = message
        status.conditions = set_condition(
            status.conditions,
            type_="Ready",
            status=False,
            reason=reason,
            message=message,
            now=self.clock(),
        )

    async def _stable_deployment(self, state: _Pass) -> dict[str, Any] | None:
        spec = state.rollout.spec
        namespace = state.rollout.metadata.namespace or "default"
        if state.status.stable_version is None:
            state.status.stable_version = spec.stable.version
        if state.status.stable_deployment is None:
            state.status.stable_deployment = spec.stable.deployment_name
        name = state.status.stable_deployment
        try:
            return await self.kube.get_deployment(namespace, name)
        except NotFound:
            message = f"stable Deployment {name} not found in namespace {namespace}"
        except KubeError as error:
            message = f"cannot read the stable Deployment {name}: {error}"
        self._invalidate(state.status, message, reason="StableDeploymentMissing")
        return None

    async def _stable_prompt(
        self, namespace: str, deployment: dict[str, Any], rollout: AgentRollout
    ) -> str | None:
        source = stable_prompt_source(stable_deployment=deployment, prompt=rollout.spec.prompt)
        if source.literal is not None:
            return source.literal
        if source.config_map is not None and source.key is not None:
            return await self.kube.get_config_map_value(namespace, source.config_map, source.key)
        return None

    # ------------------------------------------------------------------------------------
    # Proposals: validation, queueing, selection

    def _validate(
        self,
        proposal: PromptProposal,
        *,
        stable_version: str,
        stable_prompt: str | None,
        taken_versions: dict[str, str],
    ) -> str | None:
        version = proposal.spec.version
        if version == stable_version:
            return f"version {version} is the stable version; propose a new version"
        if version in taken_versions:
            return f"version {version} is already proposed by {taken_versions[version]}"
        if len(proposal.spec.system_prompt.encode()) > 32 * 1024:
            return "systemPrompt is larger than 32 KiB"
        if stable_prompt is not None and proposal.spec.system_prompt.strip() == (
            stable_prompt.strip()
        ):
            return "systemPrompt is identical to the stable prompt; nothing to canary"
        return None

    def _repair(self, state: _Pass) -> list[str]:
        """Bring proposals in line with the rollout's status after a pass was killed mid-write.

        The rollout's status is written first and is the truth: a proposal it no longer names
        as its canary but that still looks in flight was promoted (it is the stable one) or rolled
        back; the proposal it names but that never recorded its rendering was rendered. Returns
        the Deployments of challengers found rolled back, to be scaled to zero.
        """
        status = state.status
        active = status.canary.proposal if status.canary else None
        in_flight = (ProposalPhase.RENDERED, ProposalPhase.CANARY, ProposalPhase.AWAITING_APPROVAL)
        stale: list[str] = []
        for proposal in state.proposals:
            if proposal.metadata.deletion_timestamp:
                continue
            name = proposal.metadata.name
            current = proposal.status
            updated = current.model_copy(deep=True)
            if name == active and current.phase in (
                None,
                ProposalPhase.PENDING,
                ProposalPhase.INVALID,
            ):
                assert status.canary is not None
                updated.phase = ProposalPhase.RENDERED
                updated.deployment_name = status.canary.deployment
                updated.prompt_digest = status.canary.prompt_digest
                updated.message = "challenger rendered (recorded after a restart)"
            elif (
                name == active
                and current.phase is ProposalPhase.RENDERED
                and status.canary is not None
                and status.canary.weight is not None
            ):
                updated.phase = ProposalPhase.CANARY
                updated.weight = status.canary.weight
                updated.message = f"canary at {status.canary.weight}% (recorded after a restart)"
            elif name != active and current.phase in in_flight:
                if name == status.stable_proposal:
                    updated.phase = proposal_transition(current.phase, ProposalPhase.PROMOTED)
                    updated.message = "promoted to stable (recorded after a restart)"
                else:
                    updated.phase = proposal_transition(current.phase, ProposalPhase.ROLLED_BACK)
                    updated.message = "rolled back (recorded after a restart)"
                    updated.weight = 0
                    if current.deployment_name:
                        stale.append(current.deployment_name)
            else:
                continue
            state.proposal_status[name] = updated
        if state.proposal_status:
            state.proposals = [state.proposal(p.metadata.name) for p in state.proposals]
        return stale

    def _select_active(
        self, state: _Pass, stable_prompt: str | None, now: datetime
    ) -> PromptProposal | None:
        status = state.status
        stable_version = status.stable_version or state.rollout.spec.stable.version
        live = [p for p in state.proposals if not p.metadata.deletion_timestamp]
        names = {p.metadata.name for p in live}
        if status.canary is not None and status.canary.proposal not in names:
            gone = status.canary.proposal
            state.status = status = plan.clear_canary(
                rollout=status,
                reason=f"proposal {gone} was deleted; {stable_version} serves all traffic",
                now=now,
            )
        taken: dict[str, str] = {}
        candidates: list[PromptProposal] = []
        active_name = status.canary.proposal if status.canary else None
        # The active proposal and finished ones claim their versions first: creation times have
        # one-second resolution, so a newer duplicate could otherwise sort ahead of them.
        live.sort(
            key=lambda p: (
                p.metadata.name != active_name,
                p.status.phase not in PROPOSAL_TERMINAL,
            )
        )
        for proposal in live:
            name = proposal.metadata.name
            current = proposal.status
            if current.phase in PROPOSAL_TERMINAL:
                taken.setdefault(proposal.spec.version, name)
                continue
            if proposal.metadata.annotations.get(REJECT_ANNOTATION) == "true" and (
                status.canary is None or status.canary.proposal != name
            ):
                # Rejected before its turn: it never gets children or traffic.
                updated = current.model_copy(deep=True)
                updated.phase = ProposalPhase.REJECTED
                updated.message = "rejected before it started"
                state.proposal_status[name] = updated
                state.notices.append(
                    (self._proposal_ref(proposal), plan.Notice(True, "Rejected", updated.message))
                )
                taken.setdefault(proposal.spec.version, name)
                continue
            problem = self._validate(
                proposal,
                stable_version=stable_version,
                stable_prompt=stable_prompt,
                taken_versions=taken,
            )
            taken.setdefault(proposal.spec.version, name)
            if problem is not None:
                if (status.canary is None or status.canary.proposal != name) and (
                    current.phase != ProposalPhase.INVALID or current.message != problem
                ):
                    updated = current.model_copy(deep=True)
                    updated.phase = ProposalPhase.INVALID
                    updated.message = problem
                    state.proposal_status[name] = updated
                    state.notices.append(
                        (self._proposal_ref(proposal), plan.Notice(True, "Invalid", problem, True))
                    )
                continue
            candidates.append(proposal)

        rolled_back_floor = status.canary is not None and status.canary.rolled_back
        active = next((p for p in candidates if p.metadata.name == active_name), None)
        if active is None or rolled_back_floor:
            waiting = [p for p in candidates if p.metadata.name != active_name]
            if waiting:
                active = waiting[0]
            elif rolled_back_floor:
                active = None
        for proposal in candidates:
            if active is not None and proposal.metadata.name == active.metadata.name:
                continue
            if proposal.metadata.name == active_name:
                continue
            message = f"queued behind {active.metadata.name}" if active else "queued"
            current = state.proposal_status.get(proposal.metadata.name, proposal.status)
            if current.phase != ProposalPhase.PENDING or current.message != message:
                updated = current.model_copy(deep=True)
                updated.phase = ProposalPhase.PENDING
                updated.message = message
                state.proposal_status[proposal.metadata.name] = updated
        if active is not None:
            return state.proposal(active.metadata.name)
        return None

    @staticmethod
    def _proposal_ref(proposal: PromptProposal) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": PROPOSAL_KIND,
            "metadata": {
                "name": proposal.metadata.name,
                "namespace": proposal.metadata.namespace,
                "uid": proposal.metadata.uid,
            },
        }

    # ------------------------------------------------------------------------------------
    # The active proposal

    async def _render(
        self,
        state: _Pass,
        proposal: PromptProposal,
        stable_deployment: dict[str, Any],
        now: datetime,
    ) -> None:
        name = proposal.metadata.name
        try:
            rendered = render_challenger(
                rollout=state.rollout,
                proposal=proposal,
                stable_deployment=stable_deployment,
                owner=OwnerRef(
                    api_version=API_VERSION,
                    kind=PROPOSAL_KIND,
                    name=name,
                    uid=proposal.metadata.uid or "",
                ),
                stable_version=state.status.stable_version,
            )
        except RenderError as error:
            updated = proposal.status.model_copy(deep=True)
            updated.phase = ProposalPhase.INVALID
            updated.message = f"cannot render the challenger: {error}"
            state.proposal_status[name] = updated
            state.notices.append(
                (self._proposal_ref(proposal), plan.Notice(True, "Invalid", updated.message, True))
            )
            return
        # ConfigMap first: the Deployment refers to it.
        await self.kube.apply(rendered.config_map)
        await self.kube.apply(rendered.deployment)
        outcome = plan.begin_canary(
            rollout=state.status,
            proposal=proposal,
            deployment=rendered.names.deployment,
            digest=rendered.digest,
            now=now,
        )
        assert outcome.proposal is not None
        outcome.proposal.config_map_name = rendered.names.config_map
        outcome.proposal.deployment_name = rendered.names.deployment
        outcome.proposal.prompt_digest = rendered.digest
        outcome.proposal.rendered_at = iso(now)
        self._take(state, proposal, outcome)

    def _take(self, state: _Pass, proposal: PromptProposal, outcome: plan.Outcome) -> None:
        state.status = outcome.rollout
        if outcome.proposal is not None:
            state.proposal_status[proposal.metadata.name] = outcome.proposal
        rollout_ref = {
            "apiVersion": API_VERSION,
            "kind": state.rollout.kind,
            "metadata": state.rollout.metadata.model_dump(by_alias=True),
        }
        for notice in outcome.notices:
            target = self._proposal_ref(proposal) if notice.on_proposal else rollout_ref
            state.notices.append((target, notice))

    async def _advance(
        self,
        state: _Pass,
        proposal: PromptProposal,
        router: AgentFieldRouter,
        now: datetime,
        *,
        cause: str,
    ) -> plan.Outcome | None:
        """Move the active proposal on: rejection, approval, readiness, then the evidence."""
        policy = state.rollout.spec.canary
        canary = state.status.canary
        assert canary is not None
        digest = canary.prompt_digest or prompt_digest(proposal.spec.system_prompt)

        rejected = proposal.metadata.annotations.get(REJECT_ANNOTATION) == "true" or (
            proposal.status.approval is not None and proposal.spec.approved is False
        )
        if rejected and proposal.status.phase not in PROPOSAL_TERMINAL:
            outcome = plan.reject(
                rollout=state.status,
                proposal=proposal,
                policy=policy,
                reason="approval withdrawn" if proposal.status.approval else "rejected",
                now=now,
            )
            self._take(state, proposal, outcome)
            return outcome
        if canary.rolled_back:
            return None

        if proposal.spec.approved and (proposal.status.approval is None or not canary.approved):
            outcome = plan.approve(
                rollout=state.status,
                proposal=proposal,
                policy=policy,
                approved_by=_approver(proposal),
                digest=digest,
                now=now,
            )
            self._take(state, proposal, outcome)
            proposal = state.proposal(proposal.metadata.name)
            if outcome.rollout.phase is RolloutPhase.PROMOTING and cause == "approval":
                # The ceiling weight is written by this pass's router step; evidence waits for
                # the next tick.
                return outcome

        ready, why = await self._challenger_ready(state, proposal, router, now)
        state.status.conditions = set_condition(
            state.status.conditions,
            type_="ChallengerReady",
            status=ready,
            reason={True: "Ready", False: "NotReady", None: "Unknown"}[ready],
            message=why,
            now=now,
        )
        canary = state.status.canary
        assert canary is not None
        if ready is None:
            return self._hold(state, proposal, why, now)
        if not ready:
            not_ready_since = _condition_since(state.status, "ChallengerReady") or now
            started = plan.parse_time(canary.started_at) or now
            since = max(not_ready_since, started) if canary.weight is None else not_ready_since
            deadline = parse_duration(policy.progress_deadline)
            if now - since >= deadline:
                outcome = plan.roll_back(
                    rollout=state.status,
                    proposal=proposal,
                    policy=policy,
                    now=now,
                    reason=(
                        "challenger not ready within progressDeadline "
                        f"{policy.progress_deadline}: {why}"
                    ),
                )
                self._take(state, proposal, outcome)
                return outcome
            state.status.message = f"waiting for {proposal.spec.version}: {why}"
            return None
        if canary.weight is None:
            outcome = plan.seed(rollout=state.status, proposal=proposal, policy=policy, now=now)
            self._take(state, proposal, outcome)
            return outcome
        return await self._tick(state, proposal, router, now)

    async def _challenger_ready(
        self, state: _Pass, proposal: PromptProposal, router: AgentFieldRouter, now: datetime
    ) -> tuple[bool | None, str]:
        """True, False, or None when AgentField cannot be asked (missing data: hold, no clock)."""
        canary = state.status.canary
        assert canary is not None and canary.deployment
        namespace = state.rollout.metadata.namespace or "default"
        deployment_read, versions_read = await asyncio.gather(
            self.kube.get_deployment(namespace, canary.deployment),
            router.list_versions(state.rollout.spec.agent.node_id),
            return_exceptions=True,
        )
        if isinstance(versions_read, list):
            state.versions = versions_read
        if isinstance(deployment_read, NotFound):
            return False, f"Deployment {canary.deployment} not found"
        if isinstance(deployment_read, BaseException):
            raise deployment_read
        deployment = deployment_read
        spec_replicas = deployment.get("spec", {}).get("replicas", 1)
        dstatus = deployment.get("status", {})
        available = dstatus.get("availableReplicas", 0) or 0
        if dstatus.get("observedGeneration", 0) < deployment["metadata"].get("generation", 0):
            return False, f"Deployment {canary.deployment} not yet observed"
        if available < max(spec_replicas, 1):
            return (
                False,
                f"Deployment {canary.deployment} has {available}/{spec_replicas} available",
            )
        if isinstance(versions_read, RouterError):
            return None, f"cannot list versions in AgentField: {versions_read}"
        if isinstance(versions_read, BaseException):
            raise versions_read
        versions = versions_read
        match = next((v for v in versions if v.version == proposal.spec.version), None)
        if match is None:
            return False, f"version {proposal.spec.version} is not registered in AgentField"
        if match.last_heartbeat is None or now - match.last_heartbeat > HEARTBEAT_FRESH:
            return False, f"version {proposal.spec.version} has no fresh heartbeat in AgentField"
        return True, f"Deployment available and {proposal.spec.version} registered"

    async def _tick(
        self, state: _Pass, proposal: PromptProposal, router: AgentFieldRouter, now: datetime
    ) -> plan.Outcome | None:
        """Read the evidence and act on the decision."""
        rollout = state.rollout
        policy = rollout.spec.canary
        status = state.status
        canary = status.canary
        assert canary is not None and canary.weight is not None and canary.version
        stable_version = status.stable_version or rollout.spec.stable.version
        try:
            provider = await self._metrics_provider(rollout)
            stable_raw, canary_raw = await asyncio.gather(
                provider.read(stable_version), provider.read(canary.version)
            )
        except MetricsUnavailable as error:
            status.conditions = set_condition(
                status.conditions,
                type_="MetricsAvailable",
                status=False,
                reason="Unavailable",
                message=str(error),
                now=now,
            )
            return self._hold(state, proposal, f"metrics unavailable: {error}", now)
        status.conditions = set_condition(
            status.conditions,
            type_="MetricsAvailable",
            status=True,
            reason="Read",
            message="read both versions' counters",
            now=now,
        )
        stable_now = Cumulative(stable_raw.total, stable_raw.failed)
        canary_now = Cumulative(canary_raw.total, canary_raw.failed)
        window = window_counts(
            baseline=status.window, stable=stable_now, canary=canary_now, now=now
        )
        status.window = window.baseline
        status.counts = VersionCounts(
            stable=_counts(stable_version, window.stable_samples, window.stable_failures),
            canary=_counts(canary.version, window.canary_samples, window.canary_failures),
        )
        if canary.step_canary_total is None or canary.step_stable_total is None or window.reset:
            canary.step_canary_total = canary_now.total
            canary.step_stable_total = stable_now.total
        traffic = verify_traffic(
            canary_requests=canary_now.total - canary.step_canary_total,
            stable_requests=stable_now.total - canary.step_stable_total,
            weight=canary.weight,
        )
        verified = {
            TrafficVerdict.VERIFIED: True,
            TrafficVerdict.NOT_HONOURED: False,
            TrafficVerdict.TOO_LITTLE: None,
        }[traffic.verdict]
        status.conditions = set_condition(
            status.conditions,
            type_="TrafficVerified",
            status=verified,
            reason=traffic.verdict.value,
            message=traffic.message,
            now=now,
        )
        self.metrics.observe_counts(rollout, status)
        if window.reset:
            return self._hold(state, proposal, "a counter went backwards; window re-opened", now)
        if traffic.verdict is TrafficVerdict.NOT_HONOURED:
            return self._hold(state, proposal, traffic.message, now)
        if (
            window.stable_failures > window.stable_samples
            or window.canary_failures > window.canary_samples
        ):
            # Counters read at slightly different moments can disagree for a tick; that is
            # missing data, not evidence.
            return self._hold(
                state, proposal, "inconsistent counters (more failures than requests)", now
            )

        decision = decide(
            stable=Counts(window.stable_samples, window.stable_failures),
            canary=Counts(window.canary_samples, window.canary_failures),
            policy=Policy(
                alpha=policy.alpha,
                min_samples=policy.min_samples,
                max_failure_rate=policy.max_failure_rate,
                margin=policy.non_inferiority_margin,
                max_step=policy.max_step,
                floor=policy.floor,
                ceiling=policy.ceiling,
            ),
            weight=canary.weight,
            approved=canary.approved,
        )
        self.metrics.count_decision(decision.verdict.value)
        moves = decision.verdict in (Verdict.STEP, Verdict.PROMOTE) and (
            decision.next_weight != canary.weight or decision.verdict is Verdict.PROMOTE
        )
        if moves and not plan.is_due(canary, policy, now):
            return self._hold(
                state,
                proposal,
                f"evidence supports {decision.verdict.value}; waiting for the interval since the "
                "last step",
                now,
            )
        outcome = plan.apply_verdict(
            rollout=status,
            proposal=proposal,
            policy=policy,
            decision=decision,
            namespace=rollout.metadata.namespace or "default",
            now=now,
        )
        self._take(state, proposal, outcome)
        return outcome

    async def _metrics_provider(self, rollout: AgentRollout) -> MetricsProvider:
        """The rollout's metrics provider, its backend's headers and credentials read from their
        Secrets (:class:`MetricsUnavailable` naming a missing one: the rollout holds)."""
        spec = rollout.spec.metrics
        options = spec.prometheus or spec.http
        endpoint = None
        if options is not None:
            endpoint = await resolve_endpoint(
                options,
                namespace=rollout.metadata.namespace or "default",
                read_secret=self.kube.get_secret_value,
                pool=self.clients,
            )
        return metrics_provider_for(
            spec,
            node_id=rollout.spec.agent.node_id,
            router_url=rollout.spec.router.agentfield.url if rollout.spec.router.agentfield else "",
            client=endpoint.client if endpoint else self.http,
            api_key=await self._metrics_api_key(rollout),
            timeout=endpoint.timeout if endpoint else 5.0,
            headers=endpoint.headers if endpoint else None,
            auth=endpoint.auth if endpoint else None,
        )

    async def _metrics_api_key(self, rollout: AgentRollout) -> str | None:
        """AgentField's API key for the memory provider, when the rollout names one."""
        memory = rollout.spec.metrics.agentfield_memory
        if memory is None or memory.api_key_secret_ref is None:
            return None
        ref = memory.api_key_secret_ref
        try:
            return await self.kube.get_secret_value(
                rollout.metadata.namespace or "default", ref.name, ref.key
            )
        except KubeError:
            # The provider then answers 401/403 as MetricsUnavailable: the rollout holds.
            return None

    def _hold(
        self, state: _Pass, proposal: PromptProposal, reason: str, now: datetime
    ) -> plan.Outcome | None:
        canary = state.status.canary
        weight = canary.weight if canary else None
        state.status.decision = DecisionStatus(
            verdict=Verdict.HOLD.value, reason=reason, decided_at=iso(now)
        )
        state.status.message = f"holding {proposal.spec.version} at {weight}%: {reason}"
        return None

    # ------------------------------------------------------------------------------------
    # Router, retirement, writes

    def _router(self, rollout: AgentRollout, token: str) -> AgentFieldRouter:
        agentfield = rollout.spec.router.agentfield
        assert agentfield is not None
        return AgentFieldRouter(
            agentfield.url,
            token,
            client=self.http,
            retry=RetryPolicy(
                attempts=len(self.router_retry_delays) + 1, backoff=self.router_retry_delays
            ),
        )

    async def _assert_router(
        self, state: _Pass, router: AgentFieldRouter, raw: dict[str, Any], now: datetime
    ) -> None:
        """Re-assert the weights status says, read them back, record what was read."""
        status = state.status
        stable = status.stable_version or state.rollout.spec.stable.version
        canary = status.canary
        canary_version = canary.version if canary and canary.weight is not None else None
        canary_percent = canary.weight if canary and canary.weight is not None else 0
        namespace = state.rollout.metadata.namespace or "default"
        before = status.model_copy(deep=True)
        try:
            versions = state.versions
            if versions is None:
                versions = await router.list_versions(state.rollout.spec.agent.node_id)
            known = {v.version for v in versions}
            others = sorted(known - {stable} - ({canary_version} if canary_version else set()))
            if canary_version and canary_percent > 0 and canary_version in known:
                readback = await router.apply_weights(
                    state.rollout.spec.agent.node_id,
                    stable=stable,
                    canary=canary_version,
                    canary_percent=canary_percent,
                    others=others,
                )
            elif stable in known:
                readback = await router.apply_weights(
                    state.rollout.spec.agent.node_id,
                    stable=stable,
                    canary=None,
                    canary_percent=0,
                    others=others,
                )
            else:
                readback = []
        except RouterForbidden as error:
            status.conditions = set_condition(
                status.conditions,
                type_="RouterReachable",
                status=False,
                reason="Forbidden",
                message=str(error),
                now=now,
            )
        except RouterError as error:
            status.conditions = set_condition(
                status.conditions,
                type_="RouterReachable",
                status=False,
                reason="Unavailable",
                message=str(error),
                now=now,
            )
        else:
            roles = {stable: "stable"}
            if canary_version:
                roles[canary_version] = "canary"
            status.weights = [
                VersionWeight(
                    version=w.version,
                    percent=round(w.percent, 3),
                    raw=w.raw,
                    role=roles.get(w.version, "other"),
                )
                for w in readback
            ]
            status.other_versions = others
            status.conditions = set_condition(
                status.conditions,
                type_="RouterReachable",
                status=True,
                reason="Reachable",
                message=f"weights written and read back for {len(readback)} versions",
                now=now,
            )
            self.metrics.observe_weights(state.rollout, status)
        # Ready depends on RouterReachable, known only now.
        status.conditions = rollout_conditions(status, now=now)
        if status.model_dump() != before.model_dump():
            await self._write_rollout_status(namespace, state.rollout.metadata.name, status)

    async def _retire(self, state: _Pass, now: datetime) -> None:
        status = state.status
        if not status.retiring:
            return
        window = parse_duration(state.rollout.spec.canary.retire_after)
        namespace = state.rollout.metadata.namespace or "default"
        keep = []
        for entry in status.retiring:
            since = plan.parse_time(entry.since) or now
            if now - since < window:
                keep.append(entry)
                continue
            await self._scale_to_zero(namespace, entry.deployment)
            proposal = next((p for p in state.proposals if p.metadata.name == entry.proposal), None)
            if proposal is not None and proposal.status.phase is ProposalPhase.PROMOTED:
                updated = proposal.status.model_copy(deep=True)
                updated.phase = ProposalPhase.SUPERSEDED
                updated.weight = 0
                updated.message = (
                    f"superseded by {status.stable_version}; Deployment {entry.deployment} "
                    "scaled to zero"
                )
                state.proposal_status[entry.proposal] = updated
        status.retiring = keep

    async def _scale_to_zero(self, namespace: str, deployment: str) -> None:
        with contextlib.suppress(NotFound):
            await self.kube.scale_deployment(namespace, deployment, 0)

    async def _commit(
        self, state: _Pass, original: AgentRolloutStatus, raw: dict[str, Any]
    ) -> None:
        """The rollout's status: the intent, written before the router is told anything."""
        namespace = state.rollout.metadata.namespace or "default"
        name = state.rollout.metadata.name
        if state.status.model_dump() != original.model_dump():
            await self._write_rollout_status(namespace, name, state.status)
            # Phases the plan functions do not announce themselves.
            if (
                state.status.phase != original.phase
                and state.status.phase
                in (
                    RolloutPhase.INVALID,
                    RolloutPhase.STABLE,
                )
                and original.phase in (None, RolloutPhase.PENDING, RolloutPhase.INVALID)
            ):
                state.notices.append(
                    (
                        raw,
                        plan.Notice(
                            False,
                            str(state.status.phase),
                            state.status.message or "",
                            state.status.phase is RolloutPhase.INVALID,
                        ),
                    )
                )

    async def _commit_rest(
        self,
        state: _Pass,
        original_proposals: dict[str, PromptProposalStatus],
    ) -> None:
        """Proposal statuses and Events: after the router, off the approval's critical path.

        A pass killed before these writes is repaired by the next one (:meth:`_repair`): the
        rollout's status, written first, is the truth.
        """
        namespace = state.rollout.metadata.namespace or "default"
        for proposal_name, proposal_status in state.proposal_status.items():
            if proposal_status.model_dump() == original_proposals[proposal_name].model_dump():
                continue
            proposal_status.observed_generation = next(
                p.metadata.generation for p in state.proposals if p.metadata.name == proposal_name
            )
            await self._write_proposal_status(namespace, proposal_name, proposal_status)
        await asyncio.gather(
            *(
                self.kube.post_event(
                    involved=involved,
                    reason=notice.reason,
                    message=notice.message,
                    warning=notice.warning,
                )
                for involved, notice in state.notices
            )
        )
        state.notices.clear()
        self.metrics.observe_phase(state.rollout, state.status)

    async def _write_rollout_status(
        self, namespace: str, name: str, status: AgentRolloutStatus
    ) -> None:
        await self.kube.patch_status(ROLLOUT_PLURAL, namespace, name, _status_patch(status))

    async def _write_proposal_status(
        self, namespace: str, name: str, status: PromptProposalStatus
    ) -> None:
        await self.kube.patch_status(PROPOSAL_PLURAL, namespace, name, _status_patch(status))


def _status_patch(status: AgentRolloutStatus | PromptProposalStatus) -> dict[str, Any]:
    """A merge patch that sets every field, clearing those now unset (null deletes in merge)."""
    full = status.model_dump(mode="json", by_alias=True)
    return full


def _counts(version: str, total: int, failed: int) -> WindowCounts:
    return WindowCounts(
        version=version,
        total=total,
        failed=failed,
        rate=round(failed / total, 4) if total else None,
    )


def _condition_since(status: AgentRolloutStatus, type_: str) -> datetime | None:
    condition = next((c for c in status.conditions if c.type == type_), None)
    return plan.parse_time(condition.last_transition_time) if condition else None


def _approver(proposal: PromptProposal) -> str | None:
    """Who set spec.approved: the person, when the shipped approval policy stamped
    ``promptloop.dev/approved-by`` at admission; otherwise the client that wrote the field (its
    managedFields manager, e.g. kubectl-patch), which is all the API server itself records."""
    stamped = proposal.metadata.annotations.get(APPROVED_BY_ANNOTATION)
    if stamped:
        return stamped
    managers = (
        proposal.metadata.model_extra.get("managedFields", [])
        if proposal.metadata.model_extra
        else []
    )
    best: tuple[str, str] | None = None
    for entry in managers or []:
        fields = entry.get("fieldsV1", {}).get("f:spec", {})
        if "f:approved" in fields:
            candidate = (entry.get("time", ""), entry.get("manager", ""))
            if best is None or candidate > best:
                best = candidate
    return best[1] if best else None
