"""``promptloop list [-A] [-o json|yaml]``: the AgentRollouts of a namespace, or of all of them.

Usage::

    promptloop list                  # the context's namespace (or -n)
    promptloop list -A               # every namespace the credentials may list
    promptloop list -A -o yaml       # a kubectl-style List of the objects as stored

The table shows phase, stable version, the canary's version, weight and proposal, and age. One
object the CLI cannot read (a malformed one) is skipped with a note on stderr rather than hiding
the others. Exit codes as for ``status``: 0 done (an empty list included), 1 the cluster could
not be reached or refused, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import pydantic

from promptloop.api.agentrollout import AgentRollout
from promptloop.api.common import from_cluster
from promptloop.output import OUTPUT_FORMATS, dump_document, rollout_table
from promptloop.userops import EXIT_OK, Cluster, _common, _guarded, _note

__all__ = ["register"]


def _list(args: argparse.Namespace) -> int:
    cluster = Cluster.connect(args)
    where = "all namespaces" if args.all_namespaces else f"namespace {cluster.namespace}"
    items = cluster.rollouts(all_namespaces=args.all_namespaces)
    items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
    if args.output:
        document = {"apiVersion": "v1", "kind": "List", "items": items}
        sys.stdout.write(dump_document(document, args.output))
        return EXIT_OK
    rollouts: list[AgentRollout] = []
    for item in items:
        try:
            rollouts.append(from_cluster(AgentRollout, item))
        except pydantic.ValidationError as error:
            meta = item.get("metadata", {})
            _note(
                f"skipped AgentRollout {meta.get('namespace')}/{meta.get('name')}: "
                f"{error.error_count()} invalid field(s)"
            )
    if not rollouts:
        _note(f"no AgentRollouts in {where}")
        return EXIT_OK
    sys.stdout.write(rollout_table(rollouts, all_namespaces=args.all_namespaces))
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add the ``list`` subcommand."""
    parser = subparsers.add_parser(
        "list",
        parents=[_common()],
        help="the AgentRollouts of a namespace (-A: of every namespace)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-A", "--all-namespaces", action="store_true", help="list across every namespace"
    )
    parser.add_argument(
        "-o", "--output", choices=OUTPUT_FORMATS, help="print the objects instead of the table"
    )
    parser.set_defaults(func=_guarded(_list))
