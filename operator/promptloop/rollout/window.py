"""Window arithmetic: evidence since the canary began, from cumulative per-version counters.

Providers report cumulative counters (a Prometheus counter, a running total in AgentField memory).
The rollout records both versions' counters when the canary begins (``status.window``) and the
evidence for the decision is the difference, so that both versions are compared over the same
period. A counter that went backwards was reset (an agent restarted with counters in memory): the
window is re-opened at the current values rather than fed negative counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from promptloop.api import CounterReading, EvidenceStratum, EvidenceWindow, WindowBaseline
from promptloop.api.agentrollout import EVIDENCE_STRATA_LIMIT
from promptloop.rollout.decision import EMPTY_STRATUM, Stratum, add_tick
from promptloop.rollout.phases import iso

__all__ = [
    "Cumulative",
    "Ledger",
    "LedgerRead",
    "LedgerStratum",
    "WindowResult",
    "ledger_from_status",
    "ledger_strata",
    "ledger_to_status",
    "ledger_totals",
    "open_ledger",
    "open_window",
    "record_read",
    "window_counts",
]


@dataclass(frozen=True)
class Cumulative:
    """One version's cumulative counters as a provider reports them."""

    total: int
    failed: int


@dataclass(frozen=True)
class WindowResult:
    """Counts in the window, or the reason there are none."""

    stable_samples: int
    stable_failures: int
    canary_samples: int
    canary_failures: int
    baseline: WindowBaseline
    reset: bool


def open_window(*, stable: Cumulative, canary: Cumulative, now: datetime) -> WindowBaseline:
    """A window that begins now, at the given counters."""
    return WindowBaseline(
        started_at=iso(now),
        stable_total=stable.total,
        stable_failed=stable.failed,
        canary_total=canary.total,
        canary_failed=canary.failed,
    )


def window_counts(
    *, baseline: WindowBaseline | None, stable: Cumulative, canary: Cumulative, now: datetime
) -> WindowResult:
    """Counts since ``baseline``; re-opens the window when there is none or a counter went back.

    Parameters
    ----------
    baseline
        The counters recorded when the window opened (``status.window``), or None.
    stable, canary
        The counters read now.
    now
        The current time, recorded when a window is (re-)opened.

    Returns
    -------
    WindowResult
        The window's counts (zero when it was just opened) and the baseline to persist.
    """
    went_back = baseline is not None and (
        stable.total < baseline.stable_total
        or stable.failed < baseline.stable_failed
        or canary.total < baseline.canary_total
        or canary.failed < baseline.canary_failed
    )
    if baseline is None or went_back:
        fresh = open_window(stable=stable, canary=canary, now=now)
        return WindowResult(0, 0, 0, 0, fresh, reset=went_back)
    return WindowResult(
        stable_samples=stable.total - baseline.stable_total,
        stable_failures=stable.failed - baseline.stable_failed,
        canary_samples=canary.total - baseline.canary_total,
        canary_failures=canary.failed - baseline.canary_failed,
        baseline=baseline,
        reset=False,
    )


# ------------------------------------------------------------------------------------------
# The evidence ledger: increments between consecutive reads, one stratum per weight.


class LedgerStratum(NamedTuple):
    """A stratum of the ledger: the weight in force, since when (seconds), and its evidence."""

    weight: int
    since: float
    evidence: Stratum


class Ledger(NamedTuple):
    """The current canary's evidence, as plain tuples (the bench builds millions of them).

    ``status.evidence`` is its persisted form (:func:`ledger_from_status`,
    :func:`ledger_to_status`); times are seconds since the epoch.
    """

    started_at: float
    read_at: float
    stable_last: Cumulative
    canary_last: Cumulative
    strata: tuple[LedgerStratum, ...] = ()
    stable_resets: int = 0
    canary_resets: int = 0
    skipped_reads: int = 0


class LedgerRead(NamedTuple):
    """What one read did to the ledger."""

    ledger: Ledger
    #: Versions whose counters went back at this read ("stable", "canary").
    resets: tuple[str, ...]
    #: The read fell within the outcome lag after a weight change and is not evidence.
    skipped: bool


def open_ledger(*, stable: Cumulative, canary: Cumulative, at: float) -> Ledger:
    """A ledger that begins at these counters, with no evidence yet."""
    return Ledger(at, at, stable, canary)


def _increment(last: Cumulative, now: Cumulative) -> tuple[int, int] | None:
    """``now - last``, or ``None`` when either counter went back (a reset)."""
    total = now.total - last.total
    failed = now.failed - last.failed
    if total < 0 or failed < 0:
        return None
    return total, failed


def record_read(
    ledger: Ledger,
    *,
    stable: Cumulative,
    canary: Cumulative,
    weight: int,
    at: float,
    outcome_lag: float = 0.0,
) -> LedgerRead:
    """Add one read of both versions' cumulative counters to the ledger.

    Parameters
    ----------
    ledger
        The ledger so far.
    stable, canary
        The counters read now.
    weight
        The canary weight in force since the previous read (the one last written).
    at
        When the counters were read, seconds since the epoch.
    outcome_lag
        ``spec.metrics.outcomeLag`` in seconds: reads within this long of the weight's coming
        into force are not evidence (they may still carry requests served under the previous
        weight); ``0`` when the provider follows the counter contract.

    Returns
    -------
    LedgerRead
        The new ledger, the versions whose counters went back (their increment at this read is
        lost; everything before stays), and whether the read was skipped.
    """
    strata = ledger.strata
    if strata and strata[-1].weight == weight:
        current = strata[-1]
        kept = strata[:-1]
    else:
        # The weight written at the previous read has been in force since then.
        current = LedgerStratum(weight, ledger.read_at, EMPTY_STRATUM)
        kept = strata
    stable_step = _increment(ledger.stable_last, stable)
    canary_step = _increment(ledger.canary_last, canary)
    resets = tuple(
        name for name, step in (("stable", stable_step), ("canary", canary_step)) if step is None
    )
    skipped = outcome_lag > 0.0 and at - current.since <= outcome_lag
    evidence = current.evidence
    if not skipped:
        ds, fs = stable_step or (0, 0)
        dc, fc = canary_step or (0, 0)
        evidence = add_tick(evidence, ds, fs, dc, fc)
    strata = _compact((*kept, LedgerStratum(current.weight, current.since, evidence)))
    return LedgerRead(
        Ledger(
            ledger.started_at,
            at,
            stable,
            canary,
            strata,
            ledger.stable_resets + (stable_step is None),
            ledger.canary_resets + (canary_step is None),
            ledger.skipped_reads + skipped,
        ),
        resets,
        skipped,
    )


def _compact(strata: tuple[LedgerStratum, ...]) -> tuple[LedgerStratum, ...]:
    """At most ``EVIDENCE_STRATA_LIMIT`` strata: the two oldest merge (evidence kept, split lost)."""
    while len(strata) > EVIDENCE_STRATA_LIMIT:
        first, second = strata[0], strata[1]
        merged = Stratum(*(a + b for a, b in zip(first.evidence, second.evidence, strict=True)))
        strata = (LedgerStratum(second.weight, first.since, merged), *strata[2:])
    return strata


def ledger_strata(ledger: Ledger) -> tuple[Stratum, ...]:
    """The evidence per stratum, for :func:`promptloop.rollout.decision.decide`."""
    return tuple(s.evidence for s in ledger.strata)


def ledger_totals(ledger: Ledger) -> tuple[int, int, int, int]:
    """``(stable samples, stable failures, canary samples, canary failures)`` over the window."""
    ns = fs = nc = fc = 0
    for s in ledger.strata:
        e = s.evidence
        ns += e.stable_samples
        fs += e.stable_failures
        nc += e.canary_samples
        fc += e.canary_failures
    return ns, fs, nc, fc


def _seconds(moment: str) -> float:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def _moment(seconds: float) -> str:
    return iso(datetime.fromtimestamp(seconds, tz=UTC))


def ledger_from_status(window: EvidenceWindow) -> Ledger:
    """The ledger ``status.evidence`` holds."""
    strata = []
    for s in window.strata:
        sums = (list(s.dispersion) + [0.0] * 5)[:5]
        strata.append(
            LedgerStratum(
                s.weight,
                _seconds(s.since),
                Stratum(
                    s.stable_total,
                    s.stable_failed,
                    s.canary_total,
                    s.canary_failed,
                    s.ticks,
                    *sums,
                ),
            )
        )
    started = _seconds(window.started_at)
    return Ledger(
        started,
        _seconds(window.read_at) if window.read_at else started,
        Cumulative(window.stable_last.total, window.stable_last.failed),
        Cumulative(window.canary_last.total, window.canary_last.failed),
        tuple(strata),
        window.stable_resets,
        window.canary_resets,
        window.skipped_reads,
    )


def ledger_to_status(ledger: Ledger) -> EvidenceWindow:
    """``status.evidence`` for the ledger; reading it back gives the same ledger exactly."""
    return EvidenceWindow(
        started_at=_moment(ledger.started_at),
        read_at=_moment(ledger.read_at),
        stable_last=CounterReading(
            total=ledger.stable_last.total, failed=ledger.stable_last.failed
        ),
        canary_last=CounterReading(
            total=ledger.canary_last.total, failed=ledger.canary_last.failed
        ),
        strata=[
            EvidenceStratum(
                weight=s.weight,
                since=_moment(s.since),
                stable_total=s.evidence.stable_samples,
                stable_failed=s.evidence.stable_failures,
                canary_total=s.evidence.canary_samples,
                canary_failed=s.evidence.canary_failures,
                ticks=s.evidence.ticks,
                dispersion=list(s.evidence[5:]) if s.evidence.ticks else [],
            )
            for s in ledger.strata
        ],
        stable_resets=ledger.stable_resets,
        canary_resets=ledger.canary_resets,
        skipped_reads=ledger.skipped_reads,
    )
