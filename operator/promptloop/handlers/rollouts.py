"""AgentRollout handlers: a periodic pass per rollout, and an immediate one when its spec changes.

The periodic pass is a kopf daemon rather than a timer because the interval is per object
(``spec.canary.interval``) and may change while it runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from promptloop.api.common import parse_duration
from promptloop.constants import GROUP, ROLLOUT_PLURAL, VERSION
from promptloop.k8s.cached import observe
from promptloop.reconciler import Reconciler
from promptloop.rollout.canary_request import APPROVE_CANARY_ANNOTATION, REJECT_CANARY_ANNOTATION

__all__ = [
    "WEIGHT_GUARD_SECONDS",
    "canary_request_changed",
    "periodic_pass",
    "rollout_deleted",
    "spec_changed",
]

# How often, between passes, AgentField's weights are compared with status (one GET).
WEIGHT_GUARD_SECONDS = 3.0


@kopf.daemon(GROUP, VERSION, ROLLOUT_PLURAL, cancellation_timeout=10)
async def periodic_pass(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    status: kopf.Status,
    stopped: kopf.DaemonStopped,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Re-read the evidence and act on it every ``spec.canary.interval``, until stopped."""
    reconciler: Reconciler = memo.reconciler
    loop = asyncio.get_running_loop()
    due = loop.time()
    while not stopped:
        started = loop.time()
        try:
            observe(reconciler.kube, ROLLOUT_PLURAL, body)
            # Lateness and duration are observed by the reconciler once the pass has its turn.
            started = await reconciler.reconcile(
                namespace or "default", name, cause="tick", due=due
            )
        except Exception:  # a pass that fails must not end the rollout's ticking
            logger.exception("reconciliation pass failed; retrying at the next interval")
        # `spec` is kopf's live view of the object, so an interval change applies at once.
        interval = parse_duration(spec.get("canary", {}).get("interval", "30s")).total_seconds()
        due = started + interval
        # Between passes, a read-only guard: a version that re-registered in AgentField has its
        # weight reset to 100, which a pass must re-assert now, not at the next interval.
        while not stopped and loop.time() < due:
            await stopped.wait(max(0.0, min(WEIGHT_GUARD_SECONDS, due - loop.time())))
            if stopped or loop.time() >= due:
                break
            drifted = await reconciler.weights_drifted(
                namespace or "default",
                name,
                node_id=spec.get("agent", {}).get("nodeId", ""),
                status=status,
            )
            if drifted:
                logger.info("weights changed in AgentField (a version re-registered): re-asserting")
                break


@kopf.on.update(GROUP, VERSION, ROLLOUT_PLURAL, field="spec")
async def spec_changed(
    body: kopf.Body, name: str, namespace: str | None, memo: Any, **_: Any
) -> None:
    """Act on a spec change now rather than at the next interval."""
    observe(memo.kube, ROLLOUT_PLURAL, body)
    await memo.reconciler.reconcile(namespace or "default", name, cause="spec")


@kopf.on.field(
    GROUP, VERSION, ROLLOUT_PLURAL, field=("metadata", "annotations", APPROVE_CANARY_ANNOTATION)
)
@kopf.on.field(
    GROUP, VERSION, ROLLOUT_PLURAL, field=("metadata", "annotations", REJECT_CANARY_ANNOTATION)
)
async def canary_request_changed(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """The rollout's Argo CD approve/reject action ran: act on it now, as on spec.approved."""
    await memo.reconciler.reconcile(namespace or "default", name, cause="approval")


@kopf.on.delete(GROUP, VERSION, ROLLOUT_PLURAL, optional=True)
async def rollout_deleted(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """Forget the rollout and its metric series; the user's Deployment is never touched."""
    memo.reconciler.forget(namespace or "default", name)
    memo.metrics.forget(namespace or "default", name)
    await memo.reconciler.mark_orphans(namespace or "default", name)
