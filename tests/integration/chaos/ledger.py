"""The chaos suite's ledger: one row per fault class, printed as one table and written as JSON.

Every chaos test records what it injected, how many of those injections the system recovered
from, the invariant violations it found (each with a line saying what broke) and the requests
the operator sent to the faulty dependency while the fault lasted. The session prints the table
at the end; ``make chaos`` (``PROMPTLOOP_CHAOS=full``) also writes ``bench/results/chaos.json``.

The budget decides how much is injected: ``full`` (``make chaos``) meets the issue's numbers
(30+ kill points, 1,000+ fuzzed objects), the default CI budget runs a small subset of the same
code. The seed makes a run repeatable: the same seed draws the same kill points and examples.
"""

from __future__ import annotations

import json
import os
import platform
import random
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["BUDGET", "LEDGER", "SEED", "Budget", "FaultRow", "Ledger", "rng"]

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "bench" / "results" / "chaos.json"


@dataclass(frozen=True)
class Budget:
    """How much of each fault class one run injects."""

    name: str
    fuzz_proposals: int
    fuzz_rollouts: int
    fuzz_rendered_prompts: int
    kill_points: int
    load_proposals: int
    proxy_fault_seconds: float


CI = Budget(
    name="ci",
    fuzz_proposals=120,
    fuzz_rollouts=80,
    fuzz_rendered_prompts=6,
    kill_points=4,
    load_proposals=6,
    proxy_fault_seconds=4.0,
)
FULL = Budget(
    name="full",
    fuzz_proposals=650,
    fuzz_rollouts=400,
    fuzz_rendered_prompts=40,
    kill_points=32,
    load_proposals=50,
    proxy_fault_seconds=8.0,
)

BUDGET = FULL if os.environ.get("PROMPTLOOP_CHAOS") == "full" else CI
SEED = int(os.environ.get("PROMPTLOOP_CHAOS_SEED", "15"))


def rng(purpose: str) -> random.Random:
    """A generator seeded by the run's seed and what it is for (independent streams)."""
    return random.Random(f"{SEED}:{purpose}")


@dataclass
class FaultRow:
    """One fault class's line of the table."""

    fault_class: str
    injected: int = 0
    recovered: int = 0
    violations: list[str] = field(default_factory=list)
    requests_during_fault: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


class Ledger:
    """Rows by fault class, in the order they were first recorded."""

    def __init__(self) -> None:
        self.rows: dict[str, FaultRow] = {}
        self._lock = threading.Lock()

    def row(self, fault_class: str) -> FaultRow:
        """The row of a fault class (created on first use)."""
        with self._lock:
            return self.rows.setdefault(fault_class, FaultRow(fault_class))

    def table(self) -> str:
        """The table a person reads."""
        header = ("fault class", "injected", "recovered", "invariant violations", "requests")
        lines = [
            (
                row.fault_class,
                str(row.injected),
                str(row.recovered),
                str(len(row.violations)),
                "-" if row.requests_during_fault is None else str(row.requests_during_fault),
            )
            for row in self.rows.values()
        ]
        widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]

        def fmt(cells: tuple[str, ...]) -> str:
            return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

        out = [fmt(header), "-+-".join("-" * w for w in widths), *map(fmt, lines)]
        for row in self.rows.values():
            out.extend(f"  ! {row.fault_class}: {v}" for v in row.violations[:10])
        return "\n".join(out)

    def as_json(self, *, duration_seconds: float) -> dict[str, Any]:
        """The whole run, for bench/results/chaos.json."""
        load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
        return {
            "budget": BUDGET.name,
            "seed": SEED,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_seconds": round(duration_seconds, 1),
            "machine": {
                "cpus": os.cpu_count(),
                "loadavg": load,
                "python": platform.python_version(),
            },
            "rows": [asdict(row) for row in self.rows.values()],
        }

    def write(self, path: Path, *, duration_seconds: float) -> None:
        """Write the JSON results."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(self.as_json(duration_seconds=duration_seconds), indent=2) + "\n"
        )


LEDGER = Ledger()
