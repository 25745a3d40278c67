"""One reconciliation pass: gather, decide, carry out.

1. **Gather** (:mod:`promptloop.observe`): every read the pass needs, frozen into one
   :class:`~promptloop.rollout.observations.Observations`.
2. **Decide** (:func:`promptloop.rollout.advance.advance`, pure): the new statuses and the
   effects, in the crash-safe order.
3. **Carry out** (:meth:`Reconciler.execute`): each effect in turn; this module decides nothing.

The order keeps the system crash-safe: challengers are rendered or taken out first, the
rollout's status (the intent) is written before the router is told anything, the router is told
idempotently and read back, and proposal statuses and Events come last. A pass killed at any
point leaves status as the truth; the next pass re-asserts the router from it and repairs the
proposals. Passes of one rollout never run concurrently (a lock per rollout), and the weight
changes at most once per interval however often passes run (``plan.is_due``), so a restart
cannot double-step.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from promptloop.api import AgentRollout, PromptProposal, VersionWeight
from promptloop.api.common import from_cluster
from promptloop.constants import PROPOSAL_PLURAL, ROLLOUT_PLURAL
from promptloop.crashpoints import CrashPoint
from promptloop.k8s.client import Kube, NotFound
from promptloop.metrics.endpoint import ClientPool
from promptloop.notify.dispatch import Notifier
from promptloop.observability import OperatorMetrics
from promptloop.observe import Gatherer
from promptloop.rollout import notifications
from promptloop.rollout.advance import (
    RouterResult,
    advance,
    after_router,
    guard_worthwhile,
    orphaned,
)
from promptloop.rollout.effects import (
    ApplyManifests,
    AssertWeights,
    CountDecision,
    Notify,
    PostEvent,
    ScaleToZero,
    Step,
    WriteProposalStatus,
    WriteRolloutStatus,
)
from promptloop.routers.base import (
    RouterError,
    RouterForbidden,
    Split,
    TrafficRouter,
    weights_drifted,
)

__all__ = ["Reconciler"]

log = logging.getLogger("promptloop.reconciler")


def _now() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    """Reconciles rollouts; one instance per operator process."""

    def __init__(
        self,
        kube: Kube,
        http: httpx.AsyncClient,
        *,
        router_http: httpx.AsyncClient | None = None,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], datetime] = _now,
        router_retry_delays: tuple[float, ...] = (0.2, 0.5, 1.0),
        gatherer: Gatherer | None = None,
        max_concurrent_ticks: int = 32,
        notifier: Notifier | None = None,
        crash_point: CrashPoint | None = None,
    ) -> None:
        self.kube = kube
        self.http = http
        self.metrics = metrics or OperatorMetrics()
        self.clock = clock
        # Clients for metrics backends with their own CA bundle (closed at shutdown).
        self.clients = ClientPool(http)
        self.gatherer = gatherer or Gatherer(
            kube,
            http,
            router_http=router_http,
            clock=clock,
            router_retry_delays=router_retry_delays,
            clients=self.clients,
        )
        self.notifier = notifier
        # Off unless PROMPTLOOP_CRASH_AFTER arms it (the chaos suite's exact kill points).
        self.crash_point = crash_point or CrashPoint.from_environment()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Periodic passes and weight-guard reads run at most this many at a time. Without a
        # bound, 1,000 daemons starting together open 1,000 connections to AgentField at once
        # (connect and pool timeouts, every pass failing); with it they queue, and because the
        # next tick is scheduled from when a pass really began, they stay spread out afterwards.
        # Event-driven passes (approval, proposal, spec) never queue behind ticks.
        self._ticks = asyncio.Semaphore(max_concurrent_ticks)
        self._guards = asyncio.Semaphore(max(1, max_concurrent_ticks // 2))
        # The router each rollout's last pass used, for the weight guard.
        self._routers: dict[tuple[str, str], TrafficRouter] = {}

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
        """Whether the router's weights differ from what the last pass read back.

        AgentField resets a version's weight to 100 on every (re-)registration; a GitOps sync
        can put an HTTPRoute's weights back. This read-only check (one GET of the router, no
        write) runs between passes so that drift is re-asserted within seconds rather than an
        interval. Unreachable or unknown: no drift (the pass reports it).
        """
        router = self._routers.get((namespace, name))
        weights = [VersionWeight.model_validate(w) for w in status.get("weights") or []]
        if router is None or not guard_worthwhile(
            weights, canary_in_progress=bool(status.get("canary"))
        ):
            return False
        try:
            async with self._guards:
                actual = await router.read()
        except RouterError:
            return False
        return weights_drifted(weights, actual)

    # ------------------------------------------------------------------------------------------
    # Entry points

    async def reconcile(
        self, namespace: str, name: str, *, cause: str, due: float | None = None
    ) -> float:
        """One pass over rollout ``namespace/name`` and its proposals.

        ``due`` (loop time) marks a periodic pass: it waits its turn among the ticks, and its
        lateness and duration go to the metrics. Returns the loop time the pass began.
        """
        loop = asyncio.get_running_loop()
        gate: contextlib.AbstractAsyncContextManager[Any] = (
            self._ticks if due is not None else contextlib.nullcontext()
        )
        async with gate, self.lock(namespace, name):
            began = loop.time()
            if due is not None:
                self.metrics.tick_lateness.observe(max(0.0, began - due))
            try:
                await self._pass(namespace, name, cause=cause)
            finally:
                if due is not None:
                    self.metrics.pass_seconds.observe(loop.time() - began)
            return began

    async def _pass(self, namespace: str, name: str, *, cause: str) -> None:
        try:
            raw = await self.kube.get_rollout(namespace, name)
        except NotFound:
            return
        gathered = await self.gatherer.gather(raw, cause=cause)
        rollout = gathered.observations.rollout
        if gathered.router is not None:
            self._routers[(namespace, name)] = gathered.router
        observations = gathered.observations
        if self.notifier is not None:
            sinks = self.notifier.sinks_for(rollout.spec.notifications)
            observations = dataclasses.replace(observations, notification_sinks=tuple(sinks))
        step = advance(observations)
        await self.execute(step, rollout=rollout, router=gathered.router, now=observations.now)

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
        """Write one delivery's outcome into the rollout's outbox (``status.notifications``).

        Under the rollout's lock, so it never races a pass (a pass writes the whole status it
        read; this write lands between passes, and the next pass reads it).
        """
        async with self.lock(namespace, name):
            try:
                raw = await self.kube.get_rollout(namespace, name)
            except NotFound:
                return
            rollout = from_cluster(AgentRollout, raw)
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

    async def mark_orphans(self, namespace: str, rollout_name: str) -> None:
        """Proposals that reference a rollout which does not exist become Invalid."""
        raw = await self.kube.list_proposals(namespace, rollout_name)
        proposals = [from_cluster(PromptProposal, p) for p in raw]
        step = orphaned(namespace, rollout_name, proposals)
        await self.execute(step, namespace=namespace)

    # ------------------------------------------------------------------------------------------
    # Carrying out

    async def execute(
        self,
        step: Step,
        *,
        rollout: AgentRollout | None = None,
        router: TrafficRouter | None = None,
        now: datetime | None = None,
        namespace: str | None = None,
    ) -> None:
        """Carry out the step's effects in order; Events that follow each other go out together.

        An effect that fails raises and ends the pass: what was done stays done (each effect is
        idempotent), and the next pass decides again from what it then observes.
        """
        if rollout is not None:
            namespace = rollout.metadata.namespace or "default"
        assert namespace is not None
        status = rollout.status if rollout is not None else None
        events: list[PostEvent] = []
        for effect in step.effects:
            if isinstance(effect, PostEvent):
                events.append(effect)
                continue
            await self._post(events)
            match effect:
                case ApplyManifests(manifests=manifests):
                    for manifest in manifests:
                        await self.kube.apply(dict(manifest))
                case ScaleToZero(deployment=deployment):
                    with contextlib.suppress(NotFound):
                        await self.kube.scale_deployment(namespace, deployment, 0)
                case WriteRolloutStatus(status=new):
                    assert rollout is not None
                    await self._patch_status(ROLLOUT_PLURAL, namespace, rollout.metadata.name, new)
                    status = new
                case AssertWeights():
                    assert rollout is not None and status is not None and now is not None
                    result = await self._assert_weights(router, effect)
                    recorded = after_router(status, effect, result, now)
                    if recorded.model_dump() != status.model_dump():
                        await self._patch_status(
                            ROLLOUT_PLURAL, namespace, rollout.metadata.name, recorded
                        )
                    status = recorded
                case WriteProposalStatus(name=name, status=proposal_status):
                    await self._patch_status(PROPOSAL_PLURAL, namespace, name, proposal_status)
                case CountDecision(verdict=verdict):
                    assert rollout is not None
                    self.metrics.count_decision(rollout, verdict)
                case Notify(records=records, spec=spec):
                    assert rollout is not None
                    if self.notifier is not None:
                        self.notifier.schedule(namespace, rollout.metadata.name, spec, records)
            self.crash_point.after(type(effect).__name__)
        await self._post(events)
        if rollout is not None and status is not None:
            # Also removes the series of versions the status no longer names.
            self.metrics.observe(rollout, status)

    async def _assert_weights(
        self,
        router: TrafficRouter | None,
        weights: AssertWeights,
    ) -> RouterResult:
        """Write the split and read it back; a router error is a result, not a failure.

        The router object is this pass's own: it reuses the read the pass observed with, so an
        unchanged split is neither written nor read again (one router read per pass).
        """
        assert router is not None
        try:
            readback = await router.apply(
                Split(
                    stable=weights.stable,
                    canary=weights.canary,
                    canary_percent=weights.canary_percent,
                    others=tuple(weights.others),
                )
            )
        except RouterForbidden as error:
            return RouterResult(error=str(error), forbidden=True)
        except RouterError as error:
            return RouterResult(error=str(error))
        return RouterResult(readback=tuple(readback))

    async def _post(self, events: list[PostEvent]) -> None:
        """Post Events concurrently (best effort: the client never raises for them)."""
        if events:
            await asyncio.gather(
                *(
                    self.kube.post_event(
                        involved=dict(e.involved),
                        reason=e.reason,
                        message=e.message,
                        warning=e.warning,
                    )
                    for e in events
                )
            )
            events.clear()

    async def _patch_status(self, plural: str, namespace: str, name: str, status: Any) -> None:
        """A merge patch that sets every field (null deletes those now unset)."""
        patch: dict[str, Any] = status.model_dump(mode="json", by_alias=True)
        await self.kube.patch_status(plural, namespace, name, patch)
