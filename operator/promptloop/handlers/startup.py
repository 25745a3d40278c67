"""Operator start-up: settings under promptloop.dev, the shared clients, the metrics server."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
import kopf

from promptloop.constants import DOMAIN, FINALIZER
from promptloop.k8s.cache import Caches
from promptloop.k8s.cached import CachedKube
from promptloop.k8s.client import Kube, connect
from promptloop.notify.dispatch import DEFAULT_BACKOFF, Notifier, OperatorSinks
from promptloop.observability import OperatorMetrics
from promptloop.reconciler import Reconciler
from promptloop.routers.transport import connector_client

__all__ = ["OPTIONS", "RuntimeOptions", "cleanup", "configure"]


@dataclass
class RuntimeOptions:
    """Options the command line sets before kopf starts (kopf's settings cannot carry them)."""

    metrics_port: int | None = None
    metrics_address: str = "0.0.0.0"
    router_retry_delays: tuple[float, ...] = (0.2, 0.5, 1.0)
    # The watch caches the runner started before kopf (None: reads go to the API server).
    caches: Caches | None = None
    notify_backoff: tuple[float, ...] = DEFAULT_BACKOFF


OPTIONS = RuntimeOptions()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Own every persisted name, tune kopf, and create the clients the handlers share."""
    # All persisted names live under our domain from the first release: no migration, ever.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=DOMAIN)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=DOMAIN, key="last-handled-configuration"
    )
    # The operator posts its own Events with reasons people can filter on; kopf's own postings
    # are kept for handler failures only.
    settings.posting.level = logging.WARNING
    # Resources are known in advance; scanning CRDs and namespaces would need list/watch on both,
    # which the least-privilege ClusterRole does not grant.
    settings.scanning.disabled = True
    # Handlers are async; a small thread pool is enough for kopf's own sync work.
    settings.execution.max_workers = 4
    metrics = OperatorMetrics()
    if OPTIONS.metrics_port is not None:
        metrics.serve(OPTIONS.metrics_port, OPTIONS.metrics_address)
    kube: Kube = await connect()
    if OPTIONS.caches is not None:
        # No pass before every cache has listed once: a pass must not see "not found" for an
        # object that merely has not arrived yet.
        await OPTIONS.caches.wait_synced()
        kube = CachedKube(kube, OPTIONS.caches)
    # Enough kept-alive connections for the concurrent ticks and guard reads (the reconciler
    # bounds them at 32 and 16): reconnecting per request would cost more than the request.
    # This client serves notifications and metrics backends; AgentField gets its own, over
    # aiohttp, because it carries nearly all of the operator's requests (routers/transport.py).
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(5.0, connect=2.0),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
    )
    router_http = connector_client(max_connections=64)
    memo.kube = kube
    memo.http = http
    memo.router_http = router_http
    memo.metrics = metrics
    reconciler = Reconciler(
        kube,
        http,
        router_http=router_http,
        metrics=metrics,
        router_retry_delays=OPTIONS.router_retry_delays,
    )
    # Operator-wide sinks from the environment (the chart's `notifications` values); a bad
    # PROMPTLOOP_NOTIFY_EVENTS stops the start-up with its message.
    reconciler.notifier = Notifier(
        http,
        operator=OperatorSinks.from_env(),
        read_secret=kube.get_secret_value,
        record=reconciler.record_notification,
        backoff=OPTIONS.notify_backoff,
    )
    memo.reconciler = reconciler


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop deliveries in flight (they stay Pending in status), close the shared clients."""
    if memo.reconciler.notifier is not None:
        await memo.reconciler.notifier.close()
    await memo.reconciler.clients.close()
    await memo.http.aclose()
    await memo.router_http.aclose()
    await memo.kube.close()
