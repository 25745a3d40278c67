"""The evidence ledger (rollout/window.py): increments between reads like Prometheus
``increase()``, one stratum per weight, resets that lose only their own increment, the outcome
lag after a weight change, and a status form that survives an operator restart exactly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from promptloop.api import AgentRolloutStatus
from promptloop.api.agentrollout import EVIDENCE_STRATA_LIMIT
from promptloop.rollout.window import (
    Cumulative,
    Ledger,
    ledger_from_status,
    ledger_strata,
    ledger_to_status,
    ledger_totals,
    open_ledger,
    record_read,
)

T0 = 1_764_633_600.0  # 2025-12-02T00:00:00Z


def _reads(
    ledger: Ledger,
    readings: list[tuple[int, int, int, int]],
    *,
    weight: int = 5,
    start: int = 1,
    lag: float = 0.0,
) -> Ledger:
    for i, (ts, fs, tc, fc) in enumerate(readings, start=start):
        ledger = record_read(
            ledger,
            stable=Cumulative(ts, fs),
            canary=Cumulative(tc, fc),
            weight=weight,
            at=T0 + 30.0 * i,
            outcome_lag=lag,
        ).ledger
    return ledger


def test_evidence_is_the_sum_of_increments_since_the_window_opened() -> None:
    ledger = open_ledger(stable=Cumulative(1000, 100), canary=Cumulative(40, 2), at=T0)
    ledger = _reads(ledger, [(1100, 110, 45, 3), (1250, 121, 52, 3), (1300, 130, 60, 5)])
    assert ledger_totals(ledger) == (300, 30, 20, 3)
    assert len(ledger.strata) == 1 and ledger.strata[0].weight == 5
    assert ledger.strata[0].since == T0
    assert ledger.stable_resets == ledger.canary_resets == 0


def test_a_reset_loses_only_its_own_increment_and_is_counted() -> None:
    ledger = open_ledger(stable=Cumulative(1000, 100), canary=Cumulative(40, 2), at=T0)
    ledger = _reads(ledger, [(1100, 110, 50, 4)])
    # The canary's pod restarted: its counters start again from zero.
    read = record_read(
        ledger,
        stable=Cumulative(1200, 120),
        canary=Cumulative(7, 1),
        weight=5,
        at=T0 + 60.0,
    )
    assert read.resets == ("canary",)
    ledger = read.ledger
    # The stable's increment of that read counts; the canary's is lost; earlier evidence stays.
    assert ledger_totals(ledger) == (200, 20, 10, 2)
    assert (ledger.stable_resets, ledger.canary_resets) == (0, 1)
    # And the next read continues from the post-reset counters.
    ledger = _reads(ledger, [(1300, 130, 17, 2)], start=3)
    assert ledger_totals(ledger) == (300, 30, 20, 3)


def test_a_failed_counter_going_back_alone_is_a_reset_too() -> None:
    ledger = open_ledger(stable=Cumulative(100, 10), canary=Cumulative(40, 2), at=T0)
    read = record_read(
        ledger, stable=Cumulative(110, 9), canary=Cumulative(45, 2), weight=5, at=T0 + 30.0
    )
    assert read.resets == ("stable",)
    assert ledger_totals(read.ledger) == (0, 0, 5, 0)


def test_each_weight_opens_a_stratum_from_the_read_that_wrote_it() -> None:
    ledger = open_ledger(stable=Cumulative(0, 0), canary=Cumulative(0, 0), at=T0)
    ledger = _reads(ledger, [(95, 5, 5, 0), (190, 10, 10, 1)], weight=5)
    ledger = _reads(ledger, [(275, 14, 25, 2)], weight=15, start=3)
    assert [s.weight for s in ledger.strata] == [5, 15]
    # Weight 15 was written at the second read (T0 + 60) and is in force from then on.
    assert ledger.strata[1].since == T0 + 60.0
    assert tuple(ledger_strata(ledger)[1][:4]) == (85, 4, 15, 1)
    assert ledger_totals(ledger) == (275, 14, 25, 2)


def test_reads_within_the_outcome_lag_after_a_weight_change_are_not_evidence() -> None:
    ledger = open_ledger(stable=Cumulative(0, 0), canary=Cumulative(0, 0), at=T0)
    # outcomeLag 60 s: the reads 30 s and 60 s after the weight came in force are skipped.
    ledger = _reads(ledger, [(100, 5, 10, 1), (200, 10, 20, 2), (300, 15, 30, 3)], lag=60.0)
    assert ledger.skipped_reads == 2
    assert ledger_totals(ledger) == (100, 5, 10, 1)
    ledger = _reads(ledger, [(400, 20, 45, 4), (500, 25, 60, 5)], weight=15, start=4, lag=60.0)
    assert ledger.skipped_reads == 4
    assert ledger_totals(ledger) == (100, 5, 10, 1)
    ledger = _reads(ledger, [(600, 30, 75, 6)], weight=15, start=6, lag=60.0)
    assert ledger_totals(ledger) == (200, 10, 25, 2)


def test_the_status_form_survives_a_restart_exactly() -> None:
    ledger = open_ledger(stable=Cumulative(0, 0), canary=Cumulative(0, 0), at=T0)
    ledger = _reads(ledger, [(95 * i, 5 * i + i % 3, 5 * i, i // 2) for i in range(1, 9)])
    ledger = _reads(ledger, [(900, 47, 60, 5)], weight=15, start=9)
    wire = AgentRolloutStatus(evidence=ledger_to_status(ledger)).to_wire()
    # What a restarted operator reads back from the API server.
    restored = AgentRolloutStatus.model_validate(wire).evidence
    assert restored is not None
    assert ledger_from_status(restored) == ledger
    assert set(wire["evidence"]) >= {"strata", "stableLast", "canaryLast", "canaryResets"}


def test_strata_beyond_the_limit_merge_the_oldest_keeping_the_evidence() -> None:
    ledger = open_ledger(stable=Cumulative(0, 0), canary=Cumulative(0, 0), at=T0)
    for i in range(1, EVIDENCE_STRATA_LIMIT + 4):
        ledger = _reads(ledger, [(100 * i, 10 * i, 10 * i, i)], weight=i % 100, start=i)
    assert len(ledger.strata) == EVIDENCE_STRATA_LIMIT
    n = EVIDENCE_STRATA_LIMIT + 3
    assert ledger_totals(ledger) == (100 * n, 10 * n, 10 * n, n)
    assert ledger_to_status(ledger).strata[0].since == "2025-12-02T00:00:00Z"


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[int, int, int, int, bool, bool]]:
    """Per read: increments of both versions, and whether each version reset before it."""
    return draw(
        st.lists(
            st.tuples(
                st.integers(0, 50),
                st.integers(0, 50),
                st.integers(0, 50),
                st.integers(0, 50),
                st.booleans(),
                st.booleans(),
            ),
            max_size=30,
        )
    )


@given(histories())
@settings(max_examples=200, deadline=None)
def test_evidence_is_every_increment_except_those_a_reset_hid(
    history: list[tuple[int, int, int, int, bool, bool]],
) -> None:
    ts = fs = tc = fc = 0
    ledger = open_ledger(stable=Cumulative(0, 0), canary=Cumulative(0, 0), at=T0)
    expected = [0, 0, 0, 0]
    resets = [0, 0]
    for i, (ds, dfs, dc, dfc, reset_s, reset_c) in enumerate(history, start=1):
        dfs, dfc = min(dfs, ds), min(dfc, dc)
        # A reset before the read: the counter restarted from zero and counted only the new.
        if reset_s and ts > 0:
            ts, fs = ds, dfs
            resets[0] += 1
        else:
            ts, fs = ts + ds, fs + dfs
            expected[0] += ds
            expected[1] += dfs
        if reset_c and tc > 0:
            tc, fc = dc, dfc
            resets[1] += 1
        else:
            tc, fc = tc + dc, fc + dfc
            expected[2] += dc
            expected[3] += dfc
        read = record_read(
            ledger,
            stable=Cumulative(ts, fs),
            canary=Cumulative(tc, fc),
            weight=5 + 10 * (i // 7),
            at=T0 + 30.0 * i,
        )
        ledger = read.ledger
    # A reset is detected exactly when a counter went back; one that happened to land at or
    # above the last value (the new counts outran the old) is an ordinary increment there.
    got = ledger_totals(ledger)
    assert ledger.stable_resets <= resets[0] and ledger.canary_resets <= resets[1]
    assert all(g >= 0 for g in got)
    if ledger.stable_resets == resets[0] and ledger.canary_resets == resets[1]:
        assert list(got) == expected


def test_read_evidence_opens_then_accumulates_through_the_status_form() -> None:
    from datetime import UTC, datetime, timedelta

    from promptloop.rollout.window import read_evidence

    began = datetime(2025, 12, 2, tzinfo=UTC)
    first = read_evidence(
        window=None,
        stable=Cumulative(1000, 50),
        canary=Cumulative(0, 0),
        weight=5,
        now=began + timedelta(seconds=30),
        started_at=began,
    )
    assert first.opened and first.stable.samples == 0 and first.age == 30.0
    window = first.window
    for i in range(1, 4):
        # Each tick the status is written and read back, as across an operator restart.
        window = AgentRolloutStatus.model_validate(
            AgentRolloutStatus(evidence=window).to_wire()
        ).evidence
        read = read_evidence(
            window=window,
            stable=Cumulative(1000 + 95 * i, 50 + 5 * i),
            canary=Cumulative(5 * i, i // 2),
            weight=5,
            now=began + timedelta(seconds=30 + 30 * i),
        )
        window = read.window
    assert not read.opened and not read.inconsistent
    assert (read.stable.samples, read.stable.failures) == (285, 15)
    assert (read.canary.samples, read.canary.failures) == (15, 1)
    assert len(read.strata) == 1 and read.age == 120.0


def test_read_evidence_flags_more_failures_than_requests() -> None:
    from datetime import UTC, datetime

    from promptloop.rollout.window import read_evidence

    now = datetime(2025, 12, 2, tzinfo=UTC)
    window = read_evidence(
        window=None, stable=Cumulative(10, 0), canary=Cumulative(10, 0), weight=5, now=now
    ).window
    read = read_evidence(
        window=window, stable=Cumulative(12, 5), canary=Cumulative(11, 0), weight=5, now=now
    )
    assert read.inconsistent and read.stable.failures == read.stable.samples == 2


def test_a_canary_an_older_operator_began_keeps_its_evidence() -> None:
    from datetime import UTC, datetime

    from promptloop.api import WindowBaseline
    from promptloop.rollout.window import read_evidence

    baseline = WindowBaseline(
        started_at="2025-12-02T00:00:00Z",
        stable_total=1000,
        stable_failed=100,
        canary_total=40,
        canary_failed=2,
    )
    read = read_evidence(
        window=None,
        stable=Cumulative(1900, 190),
        canary=Cumulative(140, 7),
        weight=10,
        now=datetime(2025, 12, 2, 0, 10, tzinfo=UTC),
        baseline=baseline,
    )
    assert not read.opened
    assert (read.stable.samples, read.stable.failures) == (900, 90)
    assert (read.canary.samples, read.canary.failures) == (100, 5)
    assert read.age == 600.0 and read.window.strata[0].weight == 10
