"""``promptloop operator``: run the operator against the current kubeconfig or in-cluster config."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

__all__ = ["register", "run"]


def run(args: argparse.Namespace) -> int:
    """Start kopf with promptloop's handlers; returns when the operator stops."""
    import kopf

    import promptloop.handlers  # noqa: F401  (registers the handlers)
    from promptloop.handlers.startup import OPTIONS
    from promptloop.observability import configure_logging

    OPTIONS.metrics_port = args.metrics_port
    OPTIONS.metrics_address = args.metrics_address
    if args.fast_router_retries:
        OPTIONS.router_retry_delays = (0.05, 0.1)
    configure_logging(args.log_format, verbose=args.verbose)
    namespaces = args.namespace or []
    liveness = f"http://{args.liveness_address}:{args.liveness_port}/healthz"
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness if args.liveness_port else None,
        )
    )
    return 0


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
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object per line, with the Kubernetes object it is about",
    )
    parser.add_argument("--fast-router-retries", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)
