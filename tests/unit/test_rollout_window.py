"""Window arithmetic: evidence is the difference of cumulative counters from the window's
baseline, and a counter that went backwards re-opens the window instead of going negative."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptloop.api import WindowBaseline
from promptloop.rollout.phases import iso
from promptloop.rollout.window import Cumulative, open_window, window_counts

OPENED = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW = OPENED + timedelta(minutes=3)
BASE = WindowBaseline(
    started_at=iso(OPENED), stable_total=1000, stable_failed=100, canary_total=40, canary_failed=2
)


def test_open_window_records_both_versions_counters_and_the_time() -> None:
    baseline = open_window(stable=Cumulative(7, 3), canary=Cumulative(5, 1), now=NOW)
    assert baseline == WindowBaseline(
        started_at="2025-03-01T12:03:00Z",
        stable_total=7,
        stable_failed=3,
        canary_total=5,
        canary_failed=1,
    )


def test_no_baseline_opens_a_window_at_the_current_counters() -> None:
    result = window_counts(
        baseline=None, stable=Cumulative(500, 50), canary=Cumulative(9, 4), now=NOW
    )
    assert (result.stable_samples, result.stable_failures) == (0, 0)
    assert (result.canary_samples, result.canary_failures) == (0, 0)
    assert result.reset is False  # nothing went back: this is the first look
    assert result.baseline == open_window(
        stable=Cumulative(500, 50), canary=Cumulative(9, 4), now=NOW
    )


@dataclass(frozen=True)
class Case:
    name: str
    stable: Cumulative
    canary: Cumulative
    expected: tuple[int, int, int, int]  # stable samples, failures; canary samples, failures


CASES = [
    Case("nothing new", Cumulative(1000, 100), Cumulative(40, 2), (0, 0, 0, 0)),
    Case("both served", Cumulative(1300, 130), Cumulative(90, 3), (300, 30, 50, 1)),
    Case("only stable served", Cumulative(1010, 100), Cumulative(40, 2), (10, 0, 0, 0)),
    Case("only canary served", Cumulative(1000, 100), Cumulative(41, 3), (0, 0, 1, 1)),
    Case("every new request failed", Cumulative(1005, 105), Cumulative(45, 7), (5, 5, 5, 5)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_counts_are_the_difference_from_the_baseline(case: Case) -> None:
    result = window_counts(baseline=BASE, stable=case.stable, canary=case.canary, now=NOW)
    got = (
        result.stable_samples,
        result.stable_failures,
        result.canary_samples,
        result.canary_failures,
    )
    assert got == case.expected
    assert result.reset is False
    assert result.baseline == BASE  # the window keeps its start


@pytest.mark.parametrize(
    ("which", "stable", "canary"),
    [
        ("stable total", Cumulative(999, 100), Cumulative(60, 2)),
        ("stable failed", Cumulative(2000, 99), Cumulative(60, 2)),
        ("canary total", Cumulative(2000, 150), Cumulative(39, 2)),
        ("canary failed", Cumulative(2000, 150), Cumulative(60, 1)),
        ("canary restarted from zero", Cumulative(2000, 150), Cumulative(0, 0)),
        ("stable restarted", Cumulative(3, 0), Cumulative(60, 2)),
    ],
)
def test_a_counter_going_backwards_reopens_the_window(
    which: str, stable: Cumulative, canary: Cumulative
) -> None:
    result = window_counts(baseline=BASE, stable=stable, canary=canary, now=NOW)
    assert result.reset is True, which
    assert (
        result.stable_samples,
        result.stable_failures,
        result.canary_samples,
        result.canary_failures,
    ) == (0, 0, 0, 0)
    assert result.baseline == open_window(stable=stable, canary=canary, now=NOW)
    assert result.baseline.started_at == iso(NOW) != BASE.started_at


def test_the_window_after_a_reset_counts_from_the_new_baseline() -> None:
    reset = window_counts(
        baseline=BASE, stable=Cumulative(1200, 120), canary=Cumulative(5, 0), now=NOW
    )
    assert reset.reset
    later = window_counts(
        baseline=reset.baseline,
        stable=Cumulative(1260, 121),
        canary=Cumulative(12, 2),
        now=NOW + timedelta(seconds=30),
    )
    assert not later.reset
    assert (later.stable_samples, later.stable_failures) == (60, 1)
    assert (later.canary_samples, later.canary_failures) == (7, 2)


@st.composite
def cumulative(draw: st.DrawFn) -> Cumulative:
    total = draw(st.integers(0, 10**9))
    return Cumulative(total, draw(st.integers(0, total)))


@st.composite
def baselines(draw: st.DrawFn) -> WindowBaseline:
    stable, canary = draw(cumulative()), draw(cumulative())
    return open_window(stable=stable, canary=canary, now=OPENED)


growth = st.integers(0, 10**6)


@settings(max_examples=100, deadline=None)
@given(baselines(), growth, growth, growth, growth)
def test_counters_that_only_grow_give_exactly_their_growth(
    base: WindowBaseline, ds: int, fs: int, dc: int, fc: int
) -> None:
    # Failures can grow by at most the requests that grew with them.
    fs, fc = min(fs, ds), min(fc, dc)
    stable = Cumulative(base.stable_total + ds, base.stable_failed + fs)
    canary = Cumulative(base.canary_total + dc, base.canary_failed + fc)
    result = window_counts(baseline=base, stable=stable, canary=canary, now=NOW)
    assert not result.reset
    assert result.baseline == base
    assert (result.stable_samples, result.stable_failures) == (ds, fs)
    assert (result.canary_samples, result.canary_failures) == (dc, fc)


signed = st.integers(-3, 3)


@settings(max_examples=100, deadline=None)
@given(baselines(), signed, signed, signed, signed)
def test_counts_are_never_negative_and_any_decrease_reopens(
    base: WindowBaseline, ds: int, fs: int, dc: int, fc: int
) -> None:
    stable = Cumulative(max(0, base.stable_total + ds), max(0, base.stable_failed + fs))
    canary = Cumulative(max(0, base.canary_total + dc), max(0, base.canary_failed + fc))
    result = window_counts(baseline=base, stable=stable, canary=canary, now=NOW)
    counts = (
        result.stable_samples,
        result.stable_failures,
        result.canary_samples,
        result.canary_failures,
    )
    assert min(counts) >= 0
    went_back = (
        stable.total < base.stable_total
        or stable.failed < base.stable_failed
        or canary.total < base.canary_total
        or canary.failed < base.canary_failed
    )
    assert result.reset is went_back
    if went_back:
        assert counts == (0, 0, 0, 0)
        assert result.baseline == open_window(stable=stable, canary=canary, now=NOW)
    else:
        assert result.baseline == base
