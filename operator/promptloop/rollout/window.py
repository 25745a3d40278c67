"""Window arithmetic: the canary's evidence from cumulative per-version counters.

Providers report cumulative counters (a Prometheus counter, a running total in AgentField memory)
that follow the counter contract (``metrics/base.py``: counted when the outcome is recorded,
once per task). The rollout keeps a **ledger** of them in ``status.evidence``:

* the evidence is the sum of the non-negative **increments** between consecutive reads, per
  version, like Prometheus ``increase()``; a counter that went back (a restarted agent) loses
  only the increment in which it happened, is counted (``stableResets``/``canaryResets``), and
  everything before it stays;
* increments are grouped in one **stratum per weight**: from the read that wrote a weight to the
  read that changed it, both versions saw the same conditions, which is what the stratified test
  (``rollout/decision.py``) compares within;
* with ``spec.metrics.outcomeLag`` (a provider that counts arrivals and failures later), reads
  within the lag after a weight change are not evidence (``skippedReads``): they may still carry
  requests served under the previous weight;
* each stratum also keeps five per-read sums from which the dispersion (clustered failures) is
  estimated; at most ``EVIDENCE_STRATA_LIMIT`` strata are kept (the oldest two merge).

The core works on plain named tuples (:class:`Ledger`, :func:`record_read`) so the simulation
bench can run millions of reads; :func:`read_evidence` is the operator's one call per tick,
from ``status.evidence`` to the decision's inputs and back. Nothing here does I/O.

The older baseline form (``status.window``: counters when the window opened, re-opened on any
reset) is read only to start the ledger of a canary an older operator began.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from promptloop.api import CounterReading, EvidenceStratum, EvidenceWindow, WindowBaseline
from promptloop.api.agentrollout import EVIDENCE_STRATA_LIMIT
from promptloop.rollout.decision import EMPTY_STRATUM, Counts, Stratum, add_tick
from promptloop.rollout.phases import iso

__all__ = [
    "Cumulative",
    "EvidenceRead",
    "Ledger",
    "LedgerRead",
    "LedgerStratum",
    "ledger_from_status",
    "ledger_strata",
    "ledger_to_status",
    "ledger_totals",
    "open_ledger",
    "read_evidence",
    "record_read",
]


class Cumulative(NamedTuple):
    """One version's cumulative counters as a provider reports them."""

    total: int
    failed: int


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
    #: ``(stable samples, stable failures, canary samples, canary failures)``: the strata's
    #: sums, kept as they grow so that no tick has to add them up again.
    totals: tuple[int, int, int, int] = (0, 0, 0, 0)


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
    last_s, last_c = ledger.stable_last, ledger.canary_last
    ds, fs = stable.total - last_s.total, stable.failed - last_s.failed
    dc, fc = canary.total - last_c.total, canary.failed - last_c.failed
    stable_reset = ds < 0 or fs < 0
    canary_reset = dc < 0 or fc < 0
    if stable_reset:
        ds = fs = 0  # a reset loses the increment in which it happened, nothing else
    if canary_reset:
        dc = fc = 0
    skipped = outcome_lag > 0.0 and at - current.since <= outcome_lag
    totals = ledger.totals
    if skipped:
        evidence = current.evidence
    else:
        evidence = add_tick(current.evidence, ds, fs, dc, fc)
        ts, tfs, tc, tfc = totals
        totals = (ts + ds, tfs + fs, tc + dc, tfc + fc)
    strata = (*kept, LedgerStratum(current.weight, current.since, evidence))
    if len(strata) > EVIDENCE_STRATA_LIMIT:
        strata = _compact(strata)
    resets: tuple[str, ...] = ()
    if stable_reset or canary_reset:
        resets = ("stable",) * stable_reset + ("canary",) * canary_reset
    return LedgerRead(
        Ledger(
            ledger.started_at,
            at,
            stable,
            canary,
            strata,
            ledger.stable_resets + stable_reset,
            ledger.canary_resets + canary_reset,
            ledger.skipped_reads + skipped,
            totals,
        ),
        resets,
        skipped,
    )


def _compact(strata: tuple[LedgerStratum, ...]) -> tuple[LedgerStratum, ...]:
    """At most ``EVIDENCE_STRATA_LIMIT`` strata: the two oldest merge (evidence kept)."""
    while len(strata) > EVIDENCE_STRATA_LIMIT:
        first, second = strata[0], strata[1]
        a, b = first.evidence, second.evidence
        merged = Stratum(
            a.stable_samples + b.stable_samples,
            a.stable_failures + b.stable_failures,
            a.canary_samples + b.canary_samples,
            a.canary_failures + b.canary_failures,
            a.ticks + b.ticks,
            a.residual_squares + b.residual_squares,
            a.residual_by_failures + b.residual_by_failures,
            a.failures_squared + b.failures_squared,
            a.variance + b.variance,
            a.variance_by_failures_squared + b.variance_by_failures_squared,
        )
        strata = (LedgerStratum(second.weight, first.since, merged), *strata[2:])
    return strata


def ledger_strata(ledger: Ledger) -> tuple[Stratum, ...]:
    """The evidence per stratum, for :func:`promptloop.rollout.decision.decide`."""
    return tuple(s.evidence for s in ledger.strata)


def ledger_totals(ledger: Ledger) -> tuple[int, int, int, int]:
    """``(stable samples, stable failures, canary samples, canary failures)`` over the window."""
    return ledger.totals


def _sum_strata(strata: tuple[LedgerStratum, ...]) -> tuple[int, int, int, int]:
    ns = fs = nc = fc = 0
    for s in strata:
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
        _sum_strata(tuple(strata)),
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


@dataclass(frozen=True)
class EvidenceRead:
    """One tick's evidence for the decision, and the ledger to persist in ``status.evidence``."""

    window: EvidenceWindow
    #: Each version's counts summed over the window.
    stable: Counts
    canary: Counts
    #: The same evidence per weight, for ``decide(strata=...)``.
    strata: tuple[Stratum, ...]
    #: Versions whose counter went back at this read.
    resets: tuple[str, ...]
    #: The read fell within the outcome lag after a weight change.
    skipped: bool
    #: Seconds since the window (the canary) began, for the decision deadline.
    age: float
    #: True when the window was opened at this read (no evidence yet).
    opened: bool
    #: More failures than requests summed over the window (counters read a moment apart):
    #: missing data, not evidence; ``stable``/``canary`` are clamped.
    inconsistent: bool = False


def read_evidence(
    *,
    window: EvidenceWindow | None,
    stable: Cumulative,
    canary: Cumulative,
    weight: int,
    now: datetime,
    outcome_lag: float = 0.0,
    started_at: datetime | None = None,
    baseline: WindowBaseline | None = None,
) -> EvidenceRead:
    """Add this tick's counters to ``status.evidence`` (opening it on the canary's first read).

    Parameters
    ----------
    window
        ``status.evidence``, or ``None`` when the canary has none yet.
    stable, canary
        The cumulative counters read now.
    weight
        The canary weight in force since the previous read.
    now
        The time of the read.
    outcome_lag
        ``spec.metrics.outcomeLag`` in seconds (0 when unset).
    started_at
        When the canary began, for the deadline clock of a newly opened window (default now).
    baseline
        ``status.window`` as an operator before the ledger wrote it: with no ledger yet, the
        ledger starts from it (one stratum since then), so an upgrade mid-canary keeps the
        evidence.
    """
    at = now.timestamp()
    if window is None and baseline is not None and baseline.started_at:
        began = _seconds(baseline.started_at)
        window = ledger_to_status(
            Ledger(
                began,
                began,
                Cumulative(baseline.stable_total, baseline.stable_failed),
                Cumulative(baseline.canary_total, baseline.canary_failed),
            )
        )
    if window is None:
        begun = started_at.timestamp() if started_at is not None else at
        ledger = open_ledger(stable=stable, canary=canary, at=at)._replace(started_at=begun)
        return EvidenceRead(
            ledger_to_status(ledger),
            Counts(0, 0),
            Counts(0, 0),
            (),
            (),
            False,
            at - begun,
            True,
        )
    read = record_read(
        ledger_from_status(window),
        stable=stable,
        canary=canary,
        weight=weight,
        at=at,
        outcome_lag=outcome_lag,
    )
    ledger = read.ledger
    ns, fs, nc, fc = ledger_totals(ledger)
    return EvidenceRead(
        ledger_to_status(ledger),
        Counts(ns, min(fs, ns)),
        Counts(nc, min(fc, nc)),
        ledger_strata(ledger),
        read.resets,
        read.skipped,
        at - ledger.started_at,
        False,
        fs > ns or fc > nc,
    )
