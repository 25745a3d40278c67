"""The canary decision: a peeking-safe test of the challenger's failure rate against the stable's.

The operator calls :func:`decide` on every tick with both versions' *cumulative* counts in the
current window (since the canary started) and writes back the weight it returns. Because the
same growing data are looked at again and again, a fixed-sample test (``z > 1.96``) would be
wrong: checked every 30 s for an hour, it "finds" a difference between two identical prompts far
more often than 5 % of the time (``shared/notes/anchors.md`` §3-4). This module uses a
*confidence sequence* instead: a sequence of intervals that contains the true difference at every
tick simultaneously with probability at least ``1 - alpha``, so a claim made at whatever tick the
interval first excludes the margin keeps its error rate.

The mathematics
---------------
Let ``n_s, f_s`` and ``n_c, f_c`` be the stable and canary samples and failures, ``p_s`` and
``p_c`` the true failure rates, and ``D = p_c - p_s`` the difference (positive = canary worse).

* Estimate: ``d = f_c / n_c - f_s / n_s``; effective sample size ``m = n_c n_s / (n_c + n_s)``
  (the variance of ``d`` is ``~ sigma^2 / m`` when both versions fail alike).
* Critical value ``c(m)``: the one-sided normal-mixture boundary (Robbins 1970, *Statistical
  methods related to the law of the iterated logarithm*, Ann. Math. Statist. 41; Howard, Ramdas,
  McAuliffe & Sekhon 2021, *Time-uniform, nonparametric, nonasymptotic confidence sequences*,
  Ann. Statist. 49(2), arXiv:1810.08240) in its asymptotic-confidence-sequence form
  (Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas, *Time-uniform central limit theory and
  asymptotic confidence sequences*, arXiv:2103.06476). In information time ``I = 1/V`` the score
  ``S = (delta - d) I`` behaves like a Brownian motion with drift ``delta - D``; the mixture of
  ``exp(theta S - theta^2 I / 2)`` over ``theta ~ |N(0, tau^2)|``,

      M = 2 (1 + x)^(-1/2) exp(z^2 x / (2 (1 + x))) Phi(z sqrt(x / (1 + x))),
      z = S / sqrt(I),  x = tau^2 I,

  is a non-negative supermartingale whenever ``D >= delta``, so by Ville's inequality it
  *ever* reaches ``2 / alpha`` with probability at most ``alpha / 2``, however often it is
  looked at. ``M >= 2 / alpha`` is ``z >= c`` with

      c^2 = (1 + 1/x) (2 log(1/alpha) + log(1 + x) - 2 log Phi(c sqrt(x / (1 + x)))).

  The mixture scale is expressed per effective sample, ``x = rho^2 m`` with
  ``rho^2 = (2L + log(1 + 2L)) / TUNED_EFFECTIVE_SAMPLES`` and ``L = log(1/alpha)``, the
  Waudby-Smith et al. choice that makes the boundary tightest around ``m = 250``; any fixed
  ``rho`` is valid, it only moves where the sequence is narrowest. At ``alpha = 0.05``:
  ``c = 3.37`` at ``m = 50``, ``3.04`` at 250, ``3.13`` at 1,000, ``3.34`` at 5,000, ``3.75`` at
  100,000, against 1.96 for a single look at ``alpha / 2``. The mirror-image boundary serves
  the opposite claim.
* Interval: not ``d +/- c sqrt(V)`` with a plug-in ``V`` (the Wald form: at 1 % failure rates a
  young canary often has no failures yet, its plug-in variance is near zero, and in simulation
  that let false "better" claims through at twice the budget). Each bound is Newcombe's hybrid
  score interval (Newcombe 1998, *Interval estimation for the difference between independent
  proportions: comparison of eleven methods*, Stat. Med. 17, method 10) evaluated at
  ``z = c(m)``:

      lower = d - sqrt((p_c - l_c)^2 + (u_s - p_s)^2)
      upper = d + sqrt((u_c - p_c)^2 + (p_s - l_s)^2)

  where ``[l_v, u_v]`` is version ``v``'s score interval at ``c`` with a Cornish-Fisher skewness
  term (:func:`_score_bounds`). Newcombe uses Wilson's interval; at ``z ~ 3`` and a handful of
  failures Wilson's lower bound sits far above the exact (Clopper-Pearson) one, which in
  simulation let wrong rollbacks through above budget at 1 %; the skew term brings it to within
  about 5 % of exact from four failures up (and below it, i.e. more cautious, at one or two).
  Each side uses the variance at the rate being tested rather than at the observed one, which
  keeps the skewed low-count case honest. Swapping the versions negates the interval exactly,
  and both bounds are non-decreasing in the canary's failures (the per-version bounds are, and
  the square root is 1-Lipschitz), which makes the verdicts monotone.
* The guarantee is asymptotic (a central-limit approximation, like mSPRT: Johari, Koomen,
  Pekelis & Walsh 2022, *Always valid inference: continuous monitoring of A/B tests*, Oper. Res.
  70(3)); ``bench/decision.py`` measures it by simulation at 1 %, 10 % and 30 % failure rates,
  with weights that change as the decisions say.

Real-world data (issue 12)
--------------------------
The test above is sound on clean counts; production counts are not clean, and every large
error the simulation found came from how the counts reach the test, not from the interval:

* **Strata.** The operator keeps the window as increments between reads, one stratum per weight
  (``rollout/window.py``). Within a stratum the traffic split is constant, so an incident or
  daily drift moves both versions' failure rates alike and cancels in the stratum's difference
  ``d_k``; pooled over a canary whose weight rose with the incident it would not.
  :func:`stratified_sequence` combines the strata Mantel-Haenszel-style, ``d = sum w_k d_k / W``
  with ``w_k`` the stratum's effective samples, and each bound from the strata's Newcombe score
  half-widths as independent variances add, at the critical value for the total information
  ``W`` (one stratum gives exactly the sequence above). Still score-based, never Wald.
* **Dispersion.** Retries make one failed task several failed requests, and the binomial
  variance then understates the truth by about the cluster size. Per read, given both
  versions' requests and the failures in all, the canary's failures are hypergeometric for
  independent requests; :func:`dispersion` compares the residuals with that variance (after
  regressing out a real difference per stratum) and returns ``phi >= 1``; the bounds are taken
  at ``z = c(W / phi) sqrt(phi)``. The estimate needs ``MIN_DISPERSION_TICKS`` informative reads
  (both versions served, some request failed); until then no claim is made, because that early
  stretch is where clusters produced most wrong claims in simulation.
* **The guard** (``max_failure_rate``) acts on the canary's own time-uniform lower score bound
  (:func:`guard_bound`, ``alpha / 2``), not on the raw rate: it rolls back when the rate is
  surely above the guard.
* **The deadline** (``decision_deadline``): a canary still holding then rolls back, saying so.

``bench/decision.py`` measures each hazard (late outcomes, resets, incidents and drift,
clusters, the guard, low traffic) beside a naive comparator and the unstratified test.

The claims and how alpha is split
---------------------------------
With ``delta = policy.margin`` (the non-inferiority margin, absolute failure-rate units; the
API's ``spec.canary.nonInferiorityMargin``: how much worse the challenger may be and still count
as at least as good):

* **WORSE** (roll back) when ``lower > delta``: worse by more than the margin. Wrong when
  ``D <= delta``; probability at most ``alpha / 2`` over the whole canary.
* **BETTER** (may step up) when ``upper < delta``: at least as good up to the margin; with
  ``margin = 0`` this means *significantly better*. Wrong when ``D >= delta``; probability at most
  ``alpha / 2`` over the whole canary.

``alpha`` is split evenly: each one-sided claim gets ``alpha / 2``, ``[lower, upper]`` is a
two-sided ``1 - alpha`` confidence sequence, and the chance of *any* wrong claim during a canary
is at most ``alpha`` (up to the approximation above). False promotions are therefore at most
``alpha / 2``, inside the API's promise of ``alpha`` (and rarer still, since a promotion needs
a "better" claim at every step of the ladder). Both claims use the same dividing line
``delta``: a challenger exactly ``delta`` worse is neither promoted nor rolled back except by
one of those rare errors. Because the line is at ``+delta`` (not ``-delta``), swapping the
versions mirrors the evidence exactly only for ``margin = 0``; with a margin, an equal
challenger is "at least as good" in both directions, as non-inferiority means.

With a margin of 0 an equally good challenger is held (inconclusive) indefinitely, with a
``samples_needed`` that grows without bound; set a margin to accept "as good as".

Statistic and samples still needed
----------------------------------
:attr:`Decision.statistic` is ``z = c (d - delta) / h``, where ``h`` is the interval's
half-width on the side facing ``delta`` (``upper - d`` when ``d < delta``, else ``d - lower``):
a score-based standardised distance from the margin. Negative favours the challenger; a claim is
made exactly when ``|z| > c``, and the reason states ``c``. When inconclusive,
:attr:`Decision.samples_needed` takes the observed rates as true and the traffic split as fixed,
treats ``h / c`` as a standard error shrinking like ``1 / sqrt(s)`` when every count is scaled
by ``s``, and solves ``c(s m) (h / c) / sqrt(s) = |d - delta|`` for ``s`` (dropping the small
``Phi`` term); it reports the further samples of the version with fewer samples (normally the
canary), ``ceil((s - 1) min(n_c, n_s))``, or ``None`` when ``d == delta`` or the estimate
passes 10^9 (no useful finite estimate).

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

__all__ = [
    "TUNED_EFFECTIVE_SAMPLES",
    "Assessment",
    "ConfidenceSequence",
    "Counts",
    "Decision",
    "Evidence",
    "Policy",
    "Ruling",
    "Stratum",
    "Verdict",
    "add_tick",
    "assess",
    "below_ceiling",
    "confidence_sequence",
    "critical_value",
    "decide",
    "dispersion",
    "dispersion_ticks",
    "guard_bound",
    "needs_approval",
    "rule",
    "stratified_sequence",
]

#: The effective sample size ``n_c n_s / (n_c + n_s)`` at which the boundary is tightest.
TUNED_EFFECTIVE_SAMPLES = 250

# Past this many further samples an estimate is meaningless; report None instead.
_MAX_SAMPLES_NEEDED = 10**9


class Verdict(enum.StrEnum):
    """What the rollout should do next."""

    STEP = "step"
    HOLD = "hold"
    ROLLBACK = "rollback"
    AWAIT_APPROVAL = "await-approval"
    PROMOTE = "promote"


class Evidence(enum.StrEnum):
    """What the counts say about the challenger, before weights and approval are considered."""

    #: At least as good as the incumbent up to the margin (significantly better at margin 0).
    BETTER = "better"
    #: Worse than the incumbent by more than the margin.
    WORSE = "worse"
    #: Enough samples, but the confidence sequence still contains the margin.
    INCONCLUSIVE = "inconclusive"
    #: Metrics missing, or a version below ``min_samples``.
    INSUFFICIENT = "insufficient"


@dataclass(frozen=True)
class Counts:
    """One version's counts in the current window (since the canary started).

    Parameters
    ----------
    samples
        Requests served, ``>= 0``.
    failures
        Requests that failed, ``0 <= failures <= samples``.
    """

    samples: int
    failures: int

    def __post_init__(self) -> None:
        if self.samples < 0:
            raise ValueError(f"samples must be >= 0, got {self.samples}")
        if not 0 <= self.failures <= self.samples:
            raise ValueError(
                f"failures must be between 0 and samples ({self.samples}), got {self.failures}"
            )

    @property
    def rate(self) -> float | None:
        """The observed failure rate, or ``None`` without samples."""
        return self.failures / self.samples if self.samples else None


@dataclass(frozen=True)
class Policy:
    """How a challenger earns traffic.

    Parameters
    ----------
    alpha
        Error budget of the sequential test, ``0 < alpha < 0.5``: each one-sided claim (better,
        worse) is wrong with probability at most ``alpha / 2`` over the whole canary.
    min_samples
        Samples each version needs in the window before any verdict other than hold.
    max_failure_rate
        Absolute guard: a canary whose observed failure rate exceeds it rolls back.
    margin
        Non-inferiority margin in absolute failure-rate units (``0.01`` = one point): how much
        worse the challenger may be and still count as at least as good.
    max_step
        The most the weight rises in one step, in percent.
    floor
        Where a worse challenger drops to, in percent.
    ceiling
        The majority step, in percent: reaching it from below needs approval.
    decision_deadline
        Seconds after the canary began by which it must have been decided: a canary still
        holding then (inconclusive, too few samples, no data) is rolled back. ``None``: none.
    """

    alpha: float = 0.05
    min_samples: int = 50
    max_failure_rate: float | None = None
    margin: float = 0.0
    max_step: int = 10
    floor: int = 0
    ceiling: int = 50
    decision_deadline: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        if self.max_failure_rate is not None and not 0.0 <= self.max_failure_rate <= 1.0:
            raise ValueError(f"max_failure_rate must be in [0, 1], got {self.max_failure_rate}")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")
        if not 1 <= self.max_step <= 100:
            raise ValueError(f"max_step must be in [1, 100], got {self.max_step}")
        if not 0 <= self.floor <= 100:
            raise ValueError(f"floor must be in [0, 100], got {self.floor}")
        if not 1 <= self.ceiling <= 100:
            raise ValueError(f"ceiling must be in [1, 100], got {self.ceiling}")
        if self.decision_deadline is not None and not self.decision_deadline > 0.0:
            raise ValueError(f"decision_deadline must be > 0 s, got {self.decision_deadline}")


@dataclass(frozen=True)
class Decision:
    """A verdict with the numbers a person needs to judge it.

    Attributes
    ----------
    verdict
        What to do.
    reason
        One or two sentences with the numbers behind the verdict.
    statistic
        ``z = (d - margin) / sqrt(V)`` (see the module docstring): negative favours the
        challenger; a claim needs ``|z|`` above the critical value in the reason. ``None`` when
        the test did not run (no data, too few samples).
    samples_needed
        Estimated further samples of the version with fewer samples before a verdict other than
        hold, at the current split; ``None`` when not applicable or not estimable.
    next_weight
        The canary weight to write next, in percent.
    interval
        The confidence sequence for the difference in failure rates (canary minus stable) at
        this tick, when the test ran.
    strata
        How many strata (weights) with samples from both versions the comparison combined.
    dispersion
        The extra-binomial variance factor the interval was widened by (1 = none).
    cause
        Which rule gave the verdict: ``no-data``, ``min-samples``, ``dispersion``, ``guard``,
        ``worse``, ``inconclusive``, ``better`` or ``deadline`` (a rollback's Event reason).
    """

    verdict: Verdict
    reason: str
    statistic: float | None
    samples_needed: int | None
    next_weight: int
    interval: tuple[float, float] | None = None
    strata: int | None = None
    dispersion: float | None = None
    cause: str | None = None


class ConfidenceSequence(NamedTuple):
    """The time-uniform confidence sequence for ``p_c - p_s`` at one tick.

    A named tuple rather than a dataclass only because it is built on every tick of every
    rollout (and millions of times by the simulation bench).

    Attributes
    ----------
    estimate
        ``d = f_c / n_c - f_s / n_s``.
    lower, upper
        Newcombe's hybrid score bounds at ``critical`` (module docstring).
    critical
        ``c(x)``, the boundary's multiple of a standard error at this effective sample size.
    effective_samples
        ``n_c n_s / (n_c + n_s)``.
    """

    estimate: float
    lower: float
    upper: float
    critical: float
    effective_samples: float


@dataclass(frozen=True)
class Assessment:
    """The direction of the evidence, with the sequence behind it (``None`` if insufficient).

    ``statistic`` is the standardised distance of the estimate from the margin,
    ``z = c (d - margin) / h`` with ``h`` the half-width on the margin's side; a claim is made
    exactly when ``|z| > c``.
    """

    evidence: Evidence
    sequence: ConfidenceSequence | None
    statistic: float | None


@functools.lru_cache(maxsize=64)
def _constants(alpha: float) -> tuple[float, float]:
    """``(2 log(1/alpha), rho^2)`` for the one-sided boundaries of a ``1 - alpha`` sequence."""
    two_l = 2.0 * math.log(1.0 / alpha)
    return two_l, (two_l + math.log1p(two_l)) / TUNED_EFFECTIVE_SAMPLES


def critical_value(effective_samples: float, alpha: float) -> float:
    """The boundary's multiple of a standard error at ``m`` effective samples.

    Parameters
    ----------
    effective_samples
        ``m = n_c n_s / (n_c + n_s)``, ``> 0``.
    alpha
        The two-sided error budget; each one-sided boundary spends ``alpha / 2``.

    Returns
    -------
    float
        ``c`` with ``c^2 = (1 + 1/x) (2 log(1/alpha) + log(1 + x) - 2 log Phi(c0 k))``,
        ``x = rho^2 m``, ``k = sqrt(x / (1 + x))`` and ``c0`` the value without the ``Phi``
        term (module docstring). Using ``c0`` inside ``Phi`` errs on the safe side.
    """
    two_l, rho2 = _constants(alpha)
    x = rho2 * effective_samples
    inflation = 1.0 + 1.0 / x
    base = inflation * (two_l + math.log1p(x))
    tail = 0.5 * math.erfc(-math.sqrt(0.5 * base * x / (1.0 + x)))
    return math.sqrt(base - 2.0 * inflation * math.log(tail))


def _score_bounds(failures: int, samples: int, z: float) -> tuple[float, float, float]:
    """``(rate, lower, upper)``: the observed rate and its skew-corrected score bounds at ``z``.

    ``lower`` is the smallest ``p`` under which ``failures`` is not above the Cornish-Fisher
    upper ``z``-quantile of ``Binomial(samples, p)``,
    ``n p + z sqrt(n p (1 - p)) + k (1 - 2 p)`` with ``k = (z^2 - 1) / 6``; ``upper`` the
    largest ``p`` under which it is not below the lower quantile. Both solve the same quadratic
    (Wilson's, with ``f - k`` and ``n - 2k`` for ``f`` and ``n``); ``k = 0`` gives the Wilson
    interval. The skewness term is what makes the bounds track the exact (Clopper-Pearson)
    ones at the few-failure counts of a young canary, where Wilson's lower bound is far too high.
    """
    rate = failures / samples
    z2 = z * z
    k = (z2 - 1.0) / 6.0
    a = samples - 2.0 * k
    if a <= 0.0:  # too few samples for the correction: no information
        return rate, 0.0, 1.0
    b = failures - k
    zn = z2 * samples
    # 4 b (a - b) + z^2 n > 0 for every 0 <= f <= n (its minimum, at f = 0 or n, is
    # n (z^2 + 2) / 3 + 4 k^2), so the roots are real.
    root = math.sqrt(zn * (4.0 * b * (a - b) + zn))
    centre = 2.0 * a * b + zn
    denominator = 2.0 * (a * a + zn)
    lower = (centre - root) / denominator if b > 0.0 else 0.0
    upper = (centre + root) / denominator if a > b else 1.0
    # Never let the interval exclude the observed rate (it cannot, up to rounding).
    return rate, lower if lower < rate else rate, upper if upper > rate else rate


def confidence_sequence(stable: Counts, canary: Counts, alpha: float) -> ConfidenceSequence:
    """The ``1 - alpha`` time-uniform confidence sequence for ``p_c - p_s`` at these counts.

    Swapping ``stable`` and ``canary`` negates the interval exactly; each bound is
    non-decreasing in the canary's failures and non-increasing in the stable's.

    Parameters
    ----------
    stable, canary
        Cumulative counts in the window; both need ``samples > 0``.
    alpha
        The two-sided error budget; each side gets ``alpha / 2``.

    Returns
    -------
    ConfidenceSequence
        The interval at this tick.
    """
    if stable.samples <= 0 or canary.samples <= 0:
        raise ValueError("a confidence sequence needs samples from both versions")
    return _sequence(stable.samples, stable.failures, canary.samples, canary.failures, alpha)


def _sequence(n_s: int, f_s: int, n_c: int, f_c: int, alpha: float) -> ConfidenceSequence:
    effective = n_c * n_s / (n_c + n_s)
    critical = critical_value(effective, alpha)
    p_c, lo_c, hi_c = _score_bounds(f_c, n_c, critical)
    p_s, lo_s, hi_s = _score_bounds(f_s, n_s, critical)
    estimate = p_c - p_s
    return ConfidenceSequence(
        estimate,
        estimate - math.hypot(p_c - lo_c, hi_s - p_s),
        estimate + math.hypot(hi_c - p_c, p_s - lo_s),
        critical,
        effective,
    )


class Stratum(NamedTuple):
    """Both versions' evidence from a stretch of time in which they saw the same conditions.

    The operator opens a stratum whenever the canary's weight changes (``rollout.window``), so
    within one the traffic split is constant and whatever moves the base rate (an incident,
    daily drift) moves both versions alike. The first four fields are counts; the rest are the
    per-tick sums :func:`dispersion` needs, accumulated by :func:`add_tick` (zero when the
    counts did not come tick by tick).

    A named tuple because the simulation bench builds millions of them.
    """

    stable_samples: int
    stable_failures: int
    canary_samples: int
    canary_failures: int
    #: Ticks that carried information about the split of failures (both versions served,
    #: at least one failure).
    ticks: int = 0
    #: ``sum r_t^2`` with ``r_t = f_c,t - q_t F_t`` (canary failures minus their share under
    #: equal rates; ``q_t`` the canary's share of the tick's requests, ``F_t`` its failures).
    residual_squares: float = 0.0
    #: ``sum r_t F_t``.
    residual_by_failures: float = 0.0
    #: ``sum F_t^2``.
    failures_squared: float = 0.0
    #: ``sum v_t``, ``v_t = F_t q_t (1 - q_t) (N_t - F_t) / (N_t - 1)``: the hypergeometric
    #: variance of ``f_c,t`` given the tick's totals, when every request is independent.
    variance: float = 0.0
    #: ``sum F_t^2 v_t``.
    variance_by_failures_squared: float = 0.0


#: An empty stratum, the start of every accumulation.
EMPTY_STRATUM = Stratum(0, 0, 0, 0)

#: Informative ticks needed before the dispersion estimate replaces the binomial assumption.
MIN_DISPERSION_TICKS = 10


def add_tick(
    stratum: Stratum,
    stable_samples: int,
    stable_failures: int,
    canary_samples: int,
    canary_failures: int,
) -> Stratum:
    """``stratum`` with one tick's increments of both versions added (counts and dispersion sums).

    Parameters
    ----------
    stratum
        The stratum so far.
    stable_samples, stable_failures, canary_samples, canary_failures
        What each version's counters rose by since the previous read (non-negative).
    """
    n_c = canary_samples
    total = stable_samples + n_c
    failures = stable_failures + canary_failures
    if n_c <= 0 or stable_samples <= 0 or failures <= 0 or total < 2:
        return Stratum(
            stratum.stable_samples + stable_samples,
            stratum.stable_failures + stable_failures,
            stratum.canary_samples + n_c,
            stratum.canary_failures + canary_failures,
            *stratum[4:],
        )
    share = n_c / total
    residual = canary_failures - share * failures
    # Failures can exceed requests within one tick when counters are read a moment apart;
    # the variance is then taken as zero (the tick still adds its residual).
    spread = max(total - failures, 0) / (total - 1)
    variance = failures * share * (1.0 - share) * spread
    failures_squared = float(failures * failures)
    return Stratum(
        stratum.stable_samples + stable_samples,
        stratum.stable_failures + stable_failures,
        stratum.canary_samples + n_c,
        stratum.canary_failures + canary_failures,
        stratum.ticks + 1,
        stratum.residual_squares + residual * residual,
        stratum.residual_by_failures + residual * failures,
        stratum.failures_squared + failures_squared,
        stratum.variance + variance,
        stratum.variance_by_failures_squared + failures_squared * variance,
    )


def dispersion(strata: Sequence[Stratum]) -> float:
    """The extra-binomial variance factor ``phi >= 1`` of the canary's share of failures.

    Within a tick, given how many requests each version served and how many failed in all,
    the canary's failures are hypergeometric when requests fail independently; retries and
    other clusters of correlated failures (one failed task counted as 3 attempts) multiply
    that variance by about the cluster size. Per stratum the residuals ``r_t`` are regressed
    on ``F_t`` (which absorbs a real difference between the versions, so a better or worse
    challenger does not look overdispersed), and

        phi = sum RSS_k / sum (V_k - sum F_t^2 v_t / sum F_t^2),

    the Pearson estimate with its degrees of freedom accounted for. Below
    ``MIN_DISPERSION_TICKS`` informative ticks (:func:`dispersion_ticks`), or when the data
    show less variance than the binomial, ``phi = 1``.
    """
    return _dispersion(strata)[0]


def dispersion_ticks(strata: Sequence[Stratum]) -> int:
    """The degrees of freedom behind :func:`dispersion`: informative ticks less one per stratum."""
    return _dispersion(strata)[1]


def _dispersion(strata: Sequence[Stratum]) -> tuple[float, int]:
    squares = expected = 0.0
    ticks = 0
    for s in strata:
        if s.ticks < 2 or s.failures_squared <= 0.0:
            continue
        squares += s.residual_squares - s.residual_by_failures**2 / s.failures_squared
        expected += s.variance - s.variance_by_failures_squared / s.failures_squared
        ticks += s.ticks - 1
    if ticks < MIN_DISPERSION_TICKS or expected <= 0.0 or squares <= expected:
        return 1.0, ticks
    return squares / expected, ticks


def stratified_sequence(
    strata: Sequence[Stratum], alpha: float, phi: float = 1.0
) -> ConfidenceSequence:
    """The time-uniform confidence sequence for the difference combined over strata.

    Each stratum's difference ``d_k`` is weighted Mantel-Haenszel-style by its effective
    samples ``w_k = n_c,k n_s,k / (n_c,k + n_s,k)``: ``d = sum w_k d_k / W`` with
    ``W = sum w_k``. Each bound combines the strata's Newcombe score half-widths (module
    docstring) the way independent variances add,

        lower = d - sqrt(sum w_k^2 ((p_c,k - l_c,k)^2 + (u_s,k - p_s,k)^2)) / W,

    all evaluated at ``z = c(W / phi) sqrt(phi)``: the boundary for the information actually
    gathered, widened by the dispersion. With one stratum and ``phi = 1`` this is exactly
    :func:`confidence_sequence`. A shift of the base rate between strata moves ``p_c,k`` and
    ``p_s,k`` alike and cancels in ``d_k``, where pooled counts would carry it into the
    difference whenever the split changed with it.

    Parameters
    ----------
    strata
        The strata; those without samples from both versions carry no comparison and are
        skipped.
    alpha
        The two-sided error budget.
    phi
        The dispersion factor (:func:`dispersion`).

    Raises
    ------
    ValueError
        When no stratum has samples from both versions.
    """
    usable = [s for s in strata if s.stable_samples > 0 and s.canary_samples > 0]
    if not usable:
        raise ValueError("a confidence sequence needs a stratum with samples from both versions")
    if len(usable) == 1 and phi == 1.0:
        s = usable[0]
        return _sequence(
            s.stable_samples,
            min(s.stable_failures, s.stable_samples),
            s.canary_samples,
            min(s.canary_failures, s.canary_samples),
            alpha,
        )
    total_weight = 0.0
    for s in usable:
        total_weight += s.canary_samples * s.stable_samples / (s.canary_samples + s.stable_samples)
    critical = critical_value(total_weight / phi, alpha)
    z = critical * math.sqrt(phi)
    difference = low = high = 0.0
    for s in usable:
        n_c, n_s = s.canary_samples, s.stable_samples
        w = n_c * n_s / (n_c + n_s)
        p_c, lo_c, hi_c = _score_bounds(min(s.canary_failures, n_c), n_c, z)
        p_s, lo_s, hi_s = _score_bounds(min(s.stable_failures, n_s), n_s, z)
        difference += w * (p_c - p_s)
        w2 = w * w
        low += w2 * ((p_c - lo_c) ** 2 + (hi_s - p_s) ** 2)
        high += w2 * ((hi_c - p_c) ** 2 + (p_s - lo_s) ** 2)
    estimate = difference / total_weight
    return ConfidenceSequence(
        estimate,
        estimate - math.sqrt(low) / total_weight,
        estimate + math.sqrt(high) / total_weight,
        critical,
        total_weight,
    )


def guard_bound(canary: Counts, alpha: float, phi: float = 1.0) -> float:
    """The canary's time-uniform lower confidence bound on its own failure rate.

    The one-sample version of the sequence above (score bound with skew term at
    ``z = c(n / phi) sqrt(phi)``, spending ``alpha / 2``): ``maxFailureRate`` rolls back only
    when this bound is above it, i.e. when the rate is surely above the guard, however often
    it is checked.
    """
    if canary.samples <= 0:
        return 0.0
    critical = critical_value(canary.samples / phi, alpha)
    return _score_bounds(canary.failures, canary.samples, critical * math.sqrt(phi))[1]


def _side(cs: ConfidenceSequence, margin: float) -> tuple[float, float]:
    """``(d - margin, h)``: the signed distance to the margin and the half-width facing it."""
    distance = cs.estimate - margin
    half = cs.upper - cs.estimate if distance < 0.0 else cs.estimate - cs.lower
    return distance, half


def assess(stable: Counts | None, canary: Counts | None, policy: Policy) -> Assessment:
    """Which way the evidence points, ignoring weights, approval and the absolute guard.

    Parameters
    ----------
    stable, canary
        Cumulative counts in the window, or ``None`` when metrics are unavailable.
    policy
        Supplies ``alpha``, ``min_samples`` and ``margin``.

    Returns
    -------
    Assessment
        ``INSUFFICIENT`` without data or below ``min_samples``; otherwise ``WORSE`` when the
        sequence lies above the margin, ``BETTER`` when it lies below, else ``INCONCLUSIVE``.
        With ``margin = 0`` swapping the versions swaps ``BETTER`` and ``WORSE``.
    """
    if (
        stable is None
        or canary is None
        or stable.samples < policy.min_samples
        or canary.samples < policy.min_samples
    ):
        return Assessment(Evidence.INSUFFICIENT, None, None)
    return Assessment(*_classify(stable, canary, policy))


def _classify(
    stable: Counts,
    canary: Counts,
    policy: Policy,
    strata: Sequence[Stratum] | None = None,
    phi: float = 1.0,
) -> tuple[Evidence, ConfidenceSequence, float]:
    """The evidence, the sequence and the statistic, for counts with samples on both sides."""
    if strata is None:
        cs = confidence_sequence(stable, canary, policy.alpha)
    else:
        cs = stratified_sequence(strata, policy.alpha, phi)
    distance, half = _side(cs, policy.margin)
    statistic = cs.critical * distance / half if half > 0.0 else 0.0
    if cs.lower > policy.margin:
        return Evidence.WORSE, cs, statistic
    if cs.upper < policy.margin:
        return Evidence.BETTER, cs, statistic
    return Evidence.INCONCLUSIVE, cs, statistic


def _samples_needed(
    cs: ConfidenceSequence, margin: float, alpha: float, smaller: int
) -> int | None:
    """Further samples of the smaller version until the sequence excludes the margin.

    With ``se = h / c`` (the half-width facing the margin over the critical value) and the
    observed rates and split held, solves ``c(s m) se / sqrt(s) = |d - margin|`` for ``s >= 1``
    by Newton's method on ``log s`` (the left side is strictly decreasing in ``s``), with ``c``
    taken without its small ``Phi`` term: an estimate, not a promise.
    """
    distance, half = _side(cs, margin)
    if distance == 0.0 or half <= 0.0:
        return None
    two_l, rho2 = _constants(alpha)
    x0 = rho2 * cs.effective_samples
    # log((d - margin)^2 / se^2)
    target = 2.0 * math.log(abs(distance) * cs.critical / half)

    # Start where the solution would be if c did not depend on s; c varies slowly, so a few
    # Newton steps on f(u) = log(se^2 e^-u c(x0 e^u)^2 / (d - margin)^2) finish the job.
    u = max(0.0, math.log(cs.critical * cs.critical) - target)
    for _ in range(50):
        y = x0 * math.exp(u)
        bracket = two_l + math.log1p(y)
        value = math.log1p(1.0 / y) + math.log(bracket) - u - target
        if value <= 0.0 and u == 0.0:
            break
        slope = -1.0 / (1.0 + y) + y / ((1.0 + y) * bracket) - 1.0
        step = value / slope
        u = max(0.0, u - step)
        if abs(step) < 1e-3 or u > 50.0:  # 0.1 % is plenty for "about k"
            break
    further = (math.exp(u) - 1.0) * smaller
    if not math.isfinite(further) or further > _MAX_SAMPLES_NEEDED:
        return None
    return max(1, math.ceil(further))


def _describe(stable: Counts, canary: Counts) -> str:
    return (
        f"canary {canary.failures / canary.samples:.1%} ({canary.failures}/{canary.samples})"
        f" vs stable {stable.failures / stable.samples:.1%} ({stable.failures}/{stable.samples})"
    )


def _interval(cs: ConfidenceSequence, alpha: float) -> str:
    return (
        f"the {100.0 * (1.0 - alpha):g}% confidence sequence for the difference is"
        f" [{100.0 * cs.lower:+.2f}, {100.0 * cs.upper:+.2f}] points"
        f" (critical |z| {cs.critical:.2f})"
    )


def needs_approval(weight: int, *, ceiling: int, approved: bool) -> bool:
    """The human gate, written once: without approval, no weight at or above the ceiling.

    :func:`decide` asks it of the next step, :func:`promptloop.rollout.plan.apply_verdict` of
    the verdict it is handed and of the current weight (the ceiling may have been lowered
    mid-canary), and :func:`promptloop.rollout.plan.seed` of the initial weight.
    """
    return not approved and weight >= ceiling


def below_ceiling(ceiling: int) -> int:
    """The weight an unapproved challenger is held at when it may not keep the one it has."""
    return max(ceiling - 1, 1)


class Ruling(NamedTuple):
    """The verdict and the numbers behind it, before they are put in words (:func:`decide`).

    :func:`rule` is the decision; :func:`decide` adds the sentence a person reads and the
    samples-still-needed estimate. Both give the same verdict and weight for the same input
    (a property test holds them to it); the simulation bench calls :func:`rule` on its
    millions of ticks, the operator calls :func:`decide` once per tick.
    """

    verdict: Verdict
    next_weight: int
    #: no-data, min-samples, dispersion, guard, worse, inconclusive, better, deadline
    kind: str
    sequence: ConfidenceSequence | None = None
    statistic: float | None = None
    phi: float = 1.0
    #: The guard's bound for kind guard; the held ruling for kind deadline is in ``held``.
    bound: float | None = None
    held: Ruling | None = None


def rule(
    *,
    stable: Counts | None,
    canary: Counts | None,
    policy: Policy,
    weight: int,
    approved: bool,
    strata: Sequence[Stratum] | None = None,
    canary_age: float | None = None,
) -> Ruling:
    """The verdict of :func:`decide` without its explanation (same parameters)."""
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be in [0, 100], got {weight}")
    ruling = _rule(stable, canary, policy, weight, approved, strata)
    if (
        ruling.verdict is Verdict.HOLD
        and policy.decision_deadline is not None
        and canary_age is not None
        and canary_age >= policy.decision_deadline
    ):
        return Ruling(
            Verdict.ROLLBACK,
            min(policy.floor, weight),
            "deadline",
            ruling.sequence,
            ruling.statistic,
            ruling.phi,
            None,
            ruling,
        )
    return ruling


def _rule(
    stable: Counts | None,
    canary: Counts | None,
    policy: Policy,
    weight: int,
    approved: bool,
    strata: Sequence[Stratum] | None,
) -> Ruling:
    if stable is None or canary is None or stable.samples == 0 or canary.samples == 0:
        return Ruling(Verdict.HOLD, weight, "no-data")
    if stable.samples < policy.min_samples or canary.samples < policy.min_samples:
        return Ruling(Verdict.HOLD, weight, "min-samples")

    phi = 1.0
    if strata is not None:
        phi, ticks = _dispersion(strata)
        if ticks < MIN_DISPERSION_TICKS:
            # Until the dispersion can be estimated, clustered failures (retries) would pass
            # for evidence: in simulation most wrong claims under clusters came this early.
            return Ruling(Verdict.HOLD, weight, "dispersion")
    evidence, cs, statistic = _classify(stable, canary, policy, strata, phi)
    rollback_to = min(policy.floor, weight)
    guard = policy.max_failure_rate
    if guard is not None and canary.failures > guard * canary.samples:
        bound = guard_bound(canary, policy.alpha, phi)
        if bound > guard:
            return Ruling(Verdict.ROLLBACK, rollback_to, "guard", cs, statistic, phi, bound)
    if evidence is Evidence.WORSE:
        return Ruling(Verdict.ROLLBACK, rollback_to, "worse", cs, statistic, phi)
    if evidence is Evidence.INCONCLUSIVE:
        return Ruling(Verdict.HOLD, weight, "inconclusive", cs, statistic, phi)
    # Evidence.BETTER: at least as good up to the margin.
    candidate = min(weight + policy.max_step, 100)
    # Reaching the ceiling from below is the gate; a weight already past it was approved
    # (plan.apply_verdict re-checks, for a ceiling lowered mid-canary).
    if weight < policy.ceiling and needs_approval(
        candidate, ceiling=policy.ceiling, approved=approved
    ):
        return Ruling(Verdict.AWAIT_APPROVAL, weight, "better", cs, statistic, phi)
    if approved and weight < policy.ceiling:
        # Approval lets the canary pass the ceiling; it skips no evidence, so the step is an
        # ordinary one (the jump to the ceiling is for approval given while it waits there).
        return Ruling(Verdict.STEP, candidate, "better", cs, statistic, phi)
    if weight == 100:
        return Ruling(Verdict.PROMOTE, 100, "better", cs, statistic, phi)
    return Ruling(Verdict.STEP, candidate, "better", cs, statistic, phi)


def _strata_note(strata: Sequence[Stratum] | None, phi: float) -> str:
    if strata is None:
        return ""
    used = sum(1 for s in strata if s.stable_samples > 0 and s.canary_samples > 0)
    note = f"; {used} {'stratum' if used == 1 else 'strata'} (one per weight)"
    if phi > 1.0:
        note += f"; failures {phi:.2f}x as variable as independent requests (interval widened)"
    return note


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60.0)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes / 60.0:.1f} h"


def decide(
    *,
    stable: Counts | None,
    canary: Counts | None,
    policy: Policy,
    weight: int,
    approved: bool,
    strata: Sequence[Stratum] | None = None,
    canary_age: float | None = None,
) -> Decision:
    """Decide the canary's next weight from both versions' counts in the window.

    Safe to call on every tick with growing counts: claims come from a time-uniform confidence
    sequence (module docstring), so checking often does not inflate the error rate.

    Parameters
    ----------
    stable, canary
        Each version's counts summed over the window, or ``None`` when metrics are unavailable.
    policy
        The canary policy.
    weight
        The canary's current weight, in percent (0-100).
    approved
        Whether a person approved the proposal (needed to reach the ceiling from below).
    strata
        The same evidence split where the traffic split changed (:class:`Stratum`); the
        versions are compared within each and the comparisons combined
        (:func:`stratified_sequence`), with the dispersion estimated from the per-tick sums
        (:func:`dispersion`). ``None``: one stratum, the sums, independent requests.
    canary_age
        Seconds since the canary began, for ``policy.decision_deadline``.

    Returns
    -------
    Decision
        In order: no data -> hold; a version below ``min_samples`` -> hold; canary rate surely
        above ``max_failure_rate`` -> rollback; evidence worse -> rollback; evidence better ->
        step, await-approval or promote; otherwise hold. A hold at or past the decision
        deadline becomes a rollback that says so. Rollbacks go to ``min(floor, weight)``: a
        rollback never raises the weight.
    """
    ruling = rule(
        stable=stable,
        canary=canary,
        policy=policy,
        weight=weight,
        approved=approved,
        strata=strata,
        canary_age=canary_age,
    )
    decision = replace(
        _explain(ruling, stable, canary, policy, weight, approved, strata, canary_age),
        cause=ruling.kind,
    )
    cs = ruling.sequence
    if cs is None:
        return decision
    used = (
        1
        if strata is None
        else sum(1 for s in strata if s.stable_samples > 0 and s.canary_samples > 0)
    )
    return replace(decision, interval=(cs.lower, cs.upper), strata=used, dispersion=ruling.phi)


def _explain(
    ruling: Ruling,
    stable: Counts | None,
    canary: Counts | None,
    policy: Policy,
    weight: int,
    approved: bool,
    strata: Sequence[Stratum] | None,
    canary_age: float | None,
) -> Decision:
    """The ruling in words, with the samples still needed when it holds."""
    verdict, next_weight, kind = ruling.verdict, ruling.next_weight, ruling.kind
    if kind == "deadline":
        assert ruling.held is not None and canary_age is not None
        assert policy.decision_deadline is not None
        held = _explain(ruling.held, stable, canary, policy, weight, approved, strata, None)
        return Decision(
            verdict,
            f"Decision deadline passed: the canary is still undecided after"
            f" {_duration(canary_age)} (deadline {_duration(policy.decision_deadline)});"
            f" rolling back to {next_weight}%. Last evidence: {held.reason}",
            held.statistic,
            held.samples_needed,
            next_weight,
        )
    if kind == "no-data":
        missing = []
        for name, counts in (("stable", stable), ("canary", canary)):
            if counts is None:
                missing.append(f"metrics for the {name} version are unavailable")
            elif counts.samples == 0:
                missing.append(f"the {name} version has served no requests in the window")
        return Decision(
            verdict,
            f"No data: {' and '.join(missing)}; holding at {weight}%.",
            None,
            None,
            weight,
        )
    assert stable is not None and canary is not None
    if kind == "min-samples":
        needed = policy.min_samples - min(stable.samples, canary.samples)
        return Decision(
            verdict,
            f"Need about {needed} more samples: stable has {stable.samples} and canary"
            f" {canary.samples} of the {policy.min_samples} each needs before any verdict;"
            f" holding at {weight}%.",
            None,
            needed,
            weight,
        )
    if kind == "dispersion":
        assert strata is not None
        have = dispersion_ticks(strata)
        return Decision(
            verdict,
            f"Need about {MIN_DISPERSION_TICKS - have} more reads in which both versions"
            f" served and some request failed ({have} of {MIN_DISPERSION_TICKS}), to estimate"
            f" how clustered the failures are (retries) before any verdict:"
            f" {_describe(stable, canary)}; holding at {weight}%.",
            None,
            None,
            weight,
        )
    cs = ruling.sequence
    assert cs is not None
    statistic = ruling.statistic
    observed = _describe(stable, canary) + _strata_note(strata, ruling.phi)
    margin = f"{100.0 * policy.margin:+.2f}"
    if kind == "guard":
        assert policy.max_failure_rate is not None and ruling.bound is not None
        return Decision(
            verdict,
            f"Canary failure rate {canary.failures / canary.samples:.1%}"
            f" ({canary.failures}/{canary.samples}) is surely above the"
            f" {policy.max_failure_rate:.1%} guard: its"
            f" {100.0 * (1.0 - policy.alpha / 2.0):g}% lower confidence bound is"
            f" {ruling.bound:.2%}; rolling back to {next_weight}%.",
            statistic,
            None,
            next_weight,
        )
    if kind == "worse":
        return Decision(
            verdict,
            f"Canary is worse: {observed}; {_interval(cs, policy.alpha)}, entirely above the"
            f" margin {margin}; rolling back to {next_weight}%.",
            statistic,
            None,
            next_weight,
        )
    if kind == "inconclusive":
        smaller = min(stable.samples, canary.samples)
        further = _samples_needed(cs, policy.margin, policy.alpha, smaller)
        which = "canary" if canary.samples <= stable.samples else "stable"
        estimate = (
            f"need about {further} more {which} samples at this split"
            if further is not None
            else "the observed difference is at (or too close to) the margin to estimate the"
            " samples still needed"
        )
        return Decision(
            verdict,
            f"Inconclusive: {observed}; {_interval(cs, policy.alpha)}, which contains the"
            f" margin {margin}; {estimate}; holding at {weight}%.",
            statistic,
            further,
            weight,
        )
    because = (
        f"Canary is at least as good: {observed}; {_interval(cs, policy.alpha)},"
        f" entirely below the margin {margin}"
    )
    if verdict is Verdict.AWAIT_APPROVAL:
        candidate = min(weight + policy.max_step, 100)
        text = (
            f"{because}; the next step ({candidate}%) reaches the {policy.ceiling}% ceiling,"
            f" which needs approval; holding at {weight}% until the proposal is approved."
        )
    elif verdict is Verdict.PROMOTE:
        text = f"{because}; the canary serves all traffic: promoting."
    elif approved and weight < policy.ceiling:
        text = f"{because}; approved, stepping to {next_weight}%."
    else:
        text = f"{because}; stepping to {next_weight}%."
    return Decision(verdict, text, statistic, None, next_weight)
