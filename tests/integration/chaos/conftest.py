"""The chaos suite prints its table at the end of the session; ``make chaos`` writes it to
``bench/results/chaos.json`` (the CI subset never overwrites the recorded full run)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.chaos.ledger import BUDGET, LEDGER, RESULTS, SEED

_STARTED = time.monotonic()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One table: fault class | injected | recovered | invariant violations | requests."""
    if not LEDGER.rows:
        return
    terminalreporter.section(f"chaos (budget {BUDGET.name}, seed {SEED})")
    terminalreporter.write_line(LEDGER.table())
    # PROMPTLOOP_CHAOS_RESULTS writes a run anywhere (a CI subset, say); make chaos writes the
    # recorded full run.
    target = os.environ.get("PROMPTLOOP_CHAOS_RESULTS") or (
        str(RESULTS) if os.environ.get("PROMPTLOOP_CHAOS") == "full" else ""
    )
    if target:
        LEDGER.write(Path(target), duration_seconds=time.monotonic() - _STARTED)
        terminalreporter.write_line(f"written to {target}")


@pytest.fixture
def chaos_seed() -> int:
    """The run's seed (printed in the table's title)."""
    return SEED
