"""Machine-readable output of the CLI (``-o json|yaml``) and the ``list`` table: pure functions.

JSON and YAML carry the objects as the API server returned them, so a field this CLI does not
know (a newer CRD) is printed, not dropped. The table reads the objects through the models'
lenient cluster reading (:func:`promptloop.api.common.from_cluster`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import yaml

from promptloop.api.agentrollout import AgentRollout

__all__ = ["OUTPUT_FORMATS", "age", "dump_document", "rollout_table"]

OUTPUT_FORMATS = ("json", "yaml")


def dump_document(document: Any, output: str) -> str:
    """``document`` as indented JSON or block YAML (keys in the API server's order)."""
    if output == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output == "yaml":
        return str(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    raise ValueError(f"unknown output format {output!r}; choose one of {OUTPUT_FORMATS}")


def age(created: str | None, now: datetime) -> str:
    """kubectl's short age: 45s, 12m, 5h, 3d ("<unknown>" without a timestamp)."""
    if not created:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def rollout_table(
    rollouts: list[AgentRollout], *, all_namespaces: bool, now: datetime | None = None
) -> str:
    """The ``promptloop list`` table: one line per rollout, columns padded like kubectl's."""
    now = now or datetime.now(UTC)
    header = ["NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "PROPOSAL", "AGE"]
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    rows = [header]
    for rollout in rollouts:
        status = rollout.status
        canary = status.canary
        row = [
            rollout.metadata.name,
            status.phase.value if status.phase else "<pending>",
            status.stable_version or rollout.spec.stable.version,
            (canary.version if canary else None) or "-",
            f"{canary.weight}%" if canary and canary.weight is not None else "-",
            (canary.proposal if canary else None) or "-",
            age(rollout.metadata.creation_timestamp, now),
        ]
        if all_namespaces:
            row.insert(0, rollout.metadata.namespace or "")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"
