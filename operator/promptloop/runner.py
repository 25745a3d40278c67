"""``promptloop operator``: run the operator against the current kubeconfig or in-cluster config.

Two things happen before kopf starts:

1. the watch caches (:mod:`promptloop.k8s.cache`) list and start watching what passes read, so
   that a pass makes no Kubernetes request for reads;
2. with ``--leader-election`` the process waits, caches warm, until it holds the Lease
   (:mod:`promptloop.k8s.lease`); only then does kopf start. If the Lease cannot be renewed in
   time the process exits at once (the Deployment restarts it as a standby): two replicas never
   act together. On SIGTERM kopf stops and the Lease is released for the standby.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import uuid
from typing import Any

__all__ = ["register", "run"]

log = logging.getLogger("promptloop.runner")


def run(args: argparse.Namespace) -> int:
    """Start kopf with promptloop's handlers; returns when the operator stops."""
    import promptloop.handlers  # noqa: F401  (registers the handlers)
    from promptloop.handlers.startup import OPTIONS
    from promptloop.observability import configure_logging

    OPTIONS.metrics_port = args.metrics_port
    OPTIONS.metrics_address = args.metrics_address
    if args.fast_router_retries:
        OPTIONS.router_retry_delays = (0.05, 0.1)
    configure_logging(args.log_format, verbose=args.verbose)
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    import kopf

    from promptloop.handlers.startup import OPTIONS
    from promptloop.heap import trim_forever
    from promptloop.k8s.cache import Caches
    from promptloop.k8s.client import connect
    from promptloop.k8s.lease import ElectionConfig, LeaderElector, LeadershipLost

    namespaces: list[str] = args.namespace or []
    liveness = f"http://{args.liveness_address}:{args.liveness_port}/healthz"
    # The caches' own connection pool: each watch holds a connection for minutes.
    cache_kube = await connect()
    caches = Caches(cache_kube.api_client, namespaces)
    caches.start()
    OPTIONS.caches = caches
    # Bursts (the start-up listing, a relist) leave freed memory resident: see promptloop.heap.
    trimming = asyncio.create_task(trim_forever(), name="heap-trim")

    def operator(liveness_endpoint: str | None) -> Any:
        return kopf.operator(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness_endpoint,
        )

    try:
        if not args.leader_election:
            await operator(liveness if args.liveness_port else None)
            return 0
        # A standby must answer its liveness probe too: one endpoint for the process's life.
        health = await _serve_health(args.liveness_address, args.liveness_port)
        identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        elector = LeaderElector(
            cache_kube,
            ElectionConfig(
                namespace=args.lease_namespace or _own_namespace() or "default",
                name=args.lease_name,
                identity=identity,
                lease_duration=args.lease_duration,
                renew_deadline=args.renew_deadline,
                retry_period=args.retry_period,
            ),
        )
        try:
            await elector.acquire()
            running = asyncio.create_task(operator(None), name="kopf")
            holding = asyncio.create_task(elector.hold(), name="lease")
            done, _ = await asyncio.wait({running, holding}, return_when=asyncio.FIRST_COMPLETED)
            if holding in done:
                error = holding.exception()
                if isinstance(error, LeadershipLost):
                    # client-go's OnStoppedLeading: stop acting now, not after a graceful
                    # shutdown during which another leader may already be stepping rollouts.
                    log.critical("leadership lost (%s): exiting", error)
                    logging.shutdown()
                    os._exit(1)
            holding.cancel()
            await elector.release()
            await running
        finally:
            if health is not None:
                await health.cleanup()
        return 0
    finally:
        trimming.cancel()
        await caches.stop()
        await cache_kube.close()


def _own_namespace() -> str | None:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path) as handle:
            return handle.read().strip() or None
    except OSError:
        return os.environ.get("POD_NAMESPACE")


async def _serve_health(address: str, port: int) -> Any:
    """``/healthz`` answering 200 while the event loop runs (standby and leader alike)."""
    if not port:
        return None
    from aiohttp import web

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address, port).start()
    return runner


def register(subparsers: Any) -> None:
    """Add ``promptloop operator``."""
    parser = subparsers.add_parser(
        "operator", help="run the operator (all namespaces unless --namespace is given)"
    )
    parser.add_argument("--namespace", "-n", action="append", help="watch only this namespace")
    parser.add_argument("--liveness-port", type=int, default=8080, help="0 disables the probe")
    parser.add_argument("--liveness-address", default="0.0.0.0")
    parser.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics")
    parser.add_argument("--metrics-address", default="0.0.0.0")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument(
        "--leader-election",
        action="store_true",
        help="act only while holding a coordination.k8s.io Lease (run 2+ replicas for a standby)",
    )
    parser.add_argument(
        "--lease-name", default="promptloop-operator", help="one per operator release (shard)"
    )
    parser.add_argument("--lease-namespace", default=None, help="default: the pod's namespace")
    parser.add_argument("--lease-duration", type=float, default=15.0, help="seconds")
    parser.add_argument("--renew-deadline", type=float, default=10.0, help="seconds")
    parser.add_argument("--retry-period", type=float, default=2.0, help="seconds")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object per line, with the Kubernetes object it is about",
    )
    parser.add_argument("--fast-router-retries", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)
