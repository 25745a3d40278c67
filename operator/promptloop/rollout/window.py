"""Window arithmetic: evidence since the canary began, from cumulative per-version counters.

Providers report cumulative counters (a Prometheus counter, a running total in AgentField memory).
The rollout records both versions' counters when the canary begins (``status.window``) and the
evidence for the decision is the difference, so that both versions are compared over the same
period. A counter that went backwards was reset (an agent restarted with counters in memory): the
window is re-opened at the current values rather than fed negative counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from promptloop.api import WindowBaseline
from promptloop.rollout.phases import iso

__all__ = ["Cumulative", "WindowResult", "open_window", "window_counts"]


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
