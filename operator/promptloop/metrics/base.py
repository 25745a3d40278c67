"""What every evidence provider shares: cumulative counters, the error that means "no data" and
the ``{{ version }}`` placeholder. (The factory that picks a provider from the spec is
:func:`promptloop.metrics.providers.provider_for`: the providers import this module, so it
imports none of them.)

A provider answers one question: how many requests has this version served, and how many of
them failed, since it started counting? The counters are cumulative; the rollout logic takes
differences between ticks. A provider never answers zeros when it cannot tell: it raises
:class:`MetricsUnavailable`, so "no data" and "no traffic" stay distinguishable.

The counter contract (every provider; README "Evidence under real-world data")
-------------------------------------------------------------------------------
* **Outcomes, not arrivals.** A request is counted in ``total`` when its outcome is recorded,
  in the same update as ``failed`` (or in the same scrape), never when it arrives. Counting
  arrivals and failures later makes the version with more recent traffic (a canary that just
  stepped up) look better than it is: in simulation a 30 %-worse challenger whose failures
  arrived 5 ticks late was promoted every time. A source that cannot promise it is declared
  with ``spec.metrics.outcomeLag``, the longest such delay; reads within it after a weight
  change are then not evidence (``rollout/window.py``).
* **Tasks, not attempts.** A task that is retried records one outcome, when its last attempt
  is known. Where the source counts attempts, the decision estimates the extra variance from
  the data (``rollout/decision.py``, :func:`~promptloop.rollout.decision.dispersion`).
* **Cumulative, resets allowed.** A counter may restart from zero (a pod restart); the rollout
  keeps the sum of non-negative increments between reads and loses only the increment in which
  the reset happened.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "VERSION_PLACEHOLDER",
    "Counters",
    "MetricsProvider",
    "MetricsUnavailable",
    "counters_from_json",
    "render_version",
]

# ``{{ version }}`` with any spacing, as users write jinja-style placeholders.
VERSION_PLACEHOLDER = re.compile(r"\{\{\s*version\s*\}\}")


class MetricsUnavailable(Exception):
    """The provider could not give trustworthy counts for a version (never a silent zero)."""


@dataclass(frozen=True)
class Counters:
    """Cumulative requests and failures of one version.

    Raises
    ------
    ValueError
        When a count is not a non-negative integer or ``failed`` exceeds ``total``.
    """

    total: int
    failed: int

    def __post_init__(self) -> None:
        for name in ("total", "failed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.failed > self.total:
            raise ValueError(f"failed ({self.failed}) exceeds total ({self.total})")


class MetricsProvider(Protocol):
    """Reads one version's cumulative counters."""

    async def read(self, version: str) -> Counters:
        """The version's counters; :class:`MetricsUnavailable` when they cannot be read."""
        ...


def render_version(template: str, version: str, *, escape: Callable[[str], str]) -> str:
    """Replace every ``{{ version }}`` in ``template`` with ``escape(version)``.

    Parameters
    ----------
    template
        A URL or a query holding the placeholder.
    version
        The version to put in.
    escape
        How the version must be escaped where it lands (URL-encoding, a PromQL string...).

    Returns
    -------
    str
        The rendered text.
    """
    escaped = escape(version)
    # A function replacement, so backslashes in the version are not read as group references.
    return VERSION_PLACEHOLDER.sub(lambda _match: escaped, template)


def counters_from_json(body: Any, where: str) -> Counters:
    """Validate a ``{"total": int, "failed": int}`` object.

    Parameters
    ----------
    body
        The decoded JSON.
    where
        Names the source in the error message.

    Returns
    -------
    Counters
        The validated counters.

    Raises
    ------
    MetricsUnavailable
        When the shape or the numbers are wrong (floats, negatives, failed above total...).
    """
    if not isinstance(body, dict) or "total" not in body or "failed" not in body:
        raise MetricsUnavailable(f"{where} did not answer an object with total and failed")
    try:
        return Counters(total=body["total"], failed=body["failed"])
    except ValueError as error:
        raise MetricsUnavailable(f"{where} answered bad counters: {error}") from None
