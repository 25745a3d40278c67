"""Table-driven tests of every branch of the canary decision, and of the numbers behind it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from promptloop.rollout.decision import (
    Counts,
    Decision,
    Evidence,
    Policy,
    Verdict,
    _score_bounds,
    assess,
    confidence_sequence,
    critical_value,
    decide,
)

DEFAULT = Policy()

# Counts that decide each way under the default policy (alpha 0.05, margin 0, min_samples 50).
STABLE = Counts(9000, 900)  # 10 %
CANARY_BETTER = Counts(1000, 50)  # 5 %: far below
CANARY_WORSE = Counts(1000, 200)  # 20 %: far above
CANARY_CLOSE = Counts(1000, 95)  # 9.5 %: inconclusive


def run(
    stable: Counts | None = STABLE,
    canary: Counts | None = CANARY_BETTER,
    *,
    policy: Policy = DEFAULT,
    weight: int = 10,
    approved: bool = False,
) -> Decision:
    return decide(stable=stable, canary=canary, policy=policy, weight=weight, approved=approved)


@dataclass(frozen=True)
class Case:
    name: str
    stable: Counts | None
    canary: Counts | None
    weight: int
    approved: bool
    policy: Policy
    verdict: Verdict
    next_weight: int
    reason_has: tuple[str, ...]


CASES = [
    # --- missing data: hold where we are, never act -------------------------------------------
    Case("stable metrics missing", None, CANARY_WORSE, 20, False, DEFAULT, Verdict.HOLD, 20,
         ("No data", "stable", "unavailable", "holding at 20%")),
    Case("canary metrics missing", STABLE, None, 20, False, DEFAULT, Verdict.HOLD, 20,
         ("No data", "canary", "unavailable")),
    Case("both missing", None, None, 20, True, DEFAULT, Verdict.HOLD, 20,
         ("stable version are unavailable and metrics for the canary",)),
    Case("canary has served nothing", STABLE, Counts(0, 0), 5, False, DEFAULT, Verdict.HOLD, 5,
         ("No data", "canary version has served no requests")),
    Case("stable has served nothing", Counts(0, 0), CANARY_WORSE, 5, False, DEFAULT,
         Verdict.HOLD, 5, ("No data", "stable version has served no requests")),
    # --- below min_samples: always hold, whatever the counts say ------------------------------
    Case("canary below min_samples", STABLE, Counts(12, 0), 10, False, DEFAULT, Verdict.HOLD,
         10, ("Need about 38 more samples", "canary 12", "of the 50")),
    Case("stable below min_samples", Counts(49, 0), Counts(500, 0), 10, False, DEFAULT,
         Verdict.HOLD, 10, ("Need about 1 more samples",)),
    Case("below min_samples beats the guard", STABLE, Counts(49, 49), 10, False,
         Policy(max_failure_rate=0.1), Verdict.HOLD, 10, ("Need about 1 more samples",)),
    # --- the absolute guard -------------------------------------------------------------------
    Case("guard surely exceeded rolls back", Counts(1000, 300), Counts(100, 45), 30, False,
         Policy(max_failure_rate=0.2, floor=5), Verdict.ROLLBACK, 5,
         ("45.0% (45/100) is surely above the 20.0% guard", "lower confidence bound",
          "rolling back to 5%")),
    # The guard acts on the canary's confidence bound, not its raw rate: 21/100 is above 20 %
    # but could well be a 20 % rate (issue 12: a raw-rate guard rolled back 16 % of canaries
    # whose true rate was 5 % under an 8 % guard).
    Case("a rate above the guard by chance holds", Counts(1000, 300), Counts(100, 21), 30,
         False, Policy(max_failure_rate=0.2, floor=5), Verdict.HOLD, 30, ("Inconclusive",)),
    Case("guard trumps better evidence", Counts(10000, 5000), Counts(1000, 300), 30, True,
         Policy(max_failure_rate=0.2), Verdict.ROLLBACK, 0, ("guard",)),
    Case("rate equal to the guard is not above it", STABLE, Counts(1000, 100), 30, False,
         Policy(max_failure_rate=0.1), Verdict.HOLD, 30, ("Inconclusive",)),
    # --- the sequential test ------------------------------------------------------------------
    Case("worse rolls back to the floor", STABLE, CANARY_WORSE, 40, False, Policy(floor=2),
         Verdict.ROLLBACK, 2, ("Canary is worse", "20.0% (200/1000)", "10.0% (900/9000)",
                               "entirely above the margin", "rolling back to 2%")),
    Case("a rollback never raises the weight", STABLE, CANARY_WORSE, 1, False, Policy(floor=5),
         Verdict.ROLLBACK, 1, ("rolling back to 1%",)),
    Case("inconclusive holds", STABLE, CANARY_CLOSE, 10, True, DEFAULT, Verdict.HOLD, 10,
         ("Inconclusive", "contains the margin", "need about", "more canary samples")),
    Case("better steps by max_step", STABLE, CANARY_BETTER, 10, False, DEFAULT, Verdict.STEP,
         20, ("at least as good", "entirely below the margin", "stepping to 20%")),
    Case("better steps by a custom max_step", STABLE, CANARY_BETTER, 10, False,
         Policy(max_step=25), Verdict.STEP, 35, ("stepping to 35%",)),
    Case("better at the ceiling's doorstep awaits approval", STABLE, CANARY_BETTER, 40, False,
         DEFAULT, Verdict.AWAIT_APPROVAL, 40,
         ("reaches the 50% ceiling", "needs approval", "holding at 40%")),
    Case("a step that would jump past the ceiling awaits approval", STABLE, CANARY_BETTER, 45,
         False, DEFAULT, Verdict.AWAIT_APPROVAL, 45, ("next step (55%)",)),
    Case("approved at the doorstep steps to the ceiling", STABLE, CANARY_BETTER, 40, True,
         DEFAULT, Verdict.STEP, 50, ("approved, stepping to 50%",)),
    Case("approved past the doorstep steps by max_step", STABLE, CANARY_BETTER, 45, True,
         DEFAULT, Verdict.STEP, 55, ("stepping to 55%",)),
    Case("approved early steps by max_step, skipping no evidence", STABLE, CANARY_BETTER, 10,
         True, DEFAULT, Verdict.STEP, 20, ("approved, stepping to 20%",)),
    Case("below the doorstep no approval is needed", STABLE, CANARY_BETTER, 30, False, DEFAULT,
         Verdict.STEP, 40, ("stepping to 40%",)),
    Case("past the ceiling steps without approval", STABLE, CANARY_BETTER, 60, False, DEFAULT,
         Verdict.STEP, 70, ("stepping to 70%",)),
    Case("the last step is capped at 100", STABLE, CANARY_BETTER, 95, False, DEFAULT,
         Verdict.STEP, 100, ("stepping to 100%",)),
    Case("at 100 better promotes", STABLE, CANARY_BETTER, 100, False, DEFAULT, Verdict.PROMOTE,
         100, ("promoting",)),
    Case("at 100 inconclusive holds", STABLE, CANARY_CLOSE, 100, True, DEFAULT, Verdict.HOLD,
         100, ("Inconclusive",)),
    Case("at 100 worse rolls back", STABLE, CANARY_WORSE, 100, True, DEFAULT, Verdict.ROLLBACK,
         0, ("Canary is worse",)),
    Case("ceiling 100 needs approval for full traffic", STABLE, CANARY_BETTER, 90, False,
         Policy(ceiling=100), Verdict.AWAIT_APPROVAL, 90, ("100% ceiling",)),
    Case("ceiling 100 approved goes to 100", STABLE, CANARY_BETTER, 90, True,
         Policy(ceiling=100), Verdict.STEP, 100, ("stepping to 100%",)),
    # --- the non-inferiority margin -----------------------------------------------------------
    Case("equal rates hold at margin 0", Counts(20000, 2000), Counts(20000, 2000), 10, False,
         DEFAULT, Verdict.HOLD, 10, ("Inconclusive", "at (or too close to) the margin")),
    Case("equal rates are non-inferior with a margin", Counts(20000, 2000),
         Counts(20000, 2000), 10, False, Policy(margin=0.02), Verdict.STEP, 20,
         ("at least as good", "margin +2.00")),
    Case("worse within the margin does not roll back", STABLE, Counts(5000, 550), 10, False,
         Policy(margin=0.03), Verdict.STEP, 20, ("at least as good",)),
    Case("worse beyond the margin rolls back", STABLE, Counts(5000, 1000), 10, False,
         Policy(margin=0.03), Verdict.ROLLBACK, 0, ("entirely above the margin +3.00",)),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_branches(case: Case) -> None:
    d = run(case.stable, case.canary, policy=case.policy, weight=case.weight,
            approved=case.approved)  # fmt: skip
    assert (d.verdict, d.next_weight) == (case.verdict, case.next_weight), d.reason
    for fragment in case.reason_has:
        assert fragment in d.reason


def test_no_data_carries_no_numbers() -> None:
    d = run(None, CANARY_WORSE)
    assert d.statistic is None
    assert d.samples_needed is None


def test_below_min_samples_counts_the_version_most_behind() -> None:
    d = run(Counts(30, 0), Counts(10, 0), policy=Policy(min_samples=100))
    assert d.verdict is Verdict.HOLD
    assert d.samples_needed == 90
    assert d.statistic is None


def test_statistic_sign_and_critical_value() -> None:
    better, worse, close = (
        run(canary=CANARY_BETTER),
        run(canary=CANARY_WORSE),
        run(canary=CANARY_CLOSE),
    )
    assert better.statistic is not None and worse.statistic is not None
    assert close.statistic is not None
    c = confidence_sequence(STABLE, CANARY_BETTER, DEFAULT.alpha).critical
    assert better.statistic < -c
    assert worse.statistic > c
    assert -c <= close.statistic <= c
    assert close.statistic < 0  # 9.5 % vs 10 %: the estimate favours the canary
    assert better.samples_needed is None and worse.samples_needed is None


def test_claim_exactly_when_statistic_beyond_critical() -> None:
    """``|z| > c`` and "the interval excludes the margin" are the same condition."""
    for failures in range(0, 300, 7):
        for margin in (0.0, 0.01, 0.05):
            policy = Policy(margin=margin)
            a = assess(STABLE, Counts(1000, failures), policy)
            assert a.sequence is not None and a.statistic is not None
            claim = a.evidence in (Evidence.BETTER, Evidence.WORSE)
            assert claim == (abs(a.statistic) > a.sequence.critical)


def test_samples_needed_predicts_when_the_verdict_comes() -> None:
    """Scaling every count by the predicted factor turns the hold into a claim, roughly."""
    stable, canary = Counts(4000, 400), Counts(1000, 80)  # 8 % vs 10 %: inconclusive
    d = run(stable, canary)
    assert d.verdict is Verdict.HOLD and d.samples_needed is not None
    scale = 1.0 + d.samples_needed / canary.samples

    def scaled(counts: Counts, factor: float) -> Counts:
        n = round(counts.samples * factor)
        return Counts(n, round(n * counts.failures / counts.samples))

    late = run(scaled(stable, scale * 1.15), scaled(canary, scale * 1.15))
    early = run(scaled(stable, scale * 0.85), scaled(canary, scale * 0.85))
    assert late.verdict is Verdict.STEP
    assert early.verdict is Verdict.HOLD


def test_samples_needed_is_larger_for_a_smaller_difference() -> None:
    small = run(canary=Counts(1000, 95)).samples_needed
    large = run(canary=Counts(1000, 85)).samples_needed
    assert small is not None and large is not None
    assert small > large > 0


def test_reason_reports_the_interval_in_points() -> None:
    d = run(canary=CANARY_BETTER)
    cs = confidence_sequence(STABLE, CANARY_BETTER, DEFAULT.alpha)
    assert f"[{100 * cs.lower:+.2f}, {100 * cs.upper:+.2f}] points" in d.reason
    assert "95% confidence sequence" in d.reason
    assert f"critical |z| {cs.critical:.2f}" in d.reason


# --- the confidence sequence and its critical value ---------------------------------------------


def test_critical_value_is_the_mixture_boundary() -> None:
    # Spot values at alpha = 0.05 (module docstring) and the shape: tightest near 250
    # effective samples, growing slowly (like sqrt(log m)) on either side.
    assert critical_value(250, 0.05) == pytest.approx(3.036, abs=1e-3)
    assert critical_value(50, 0.05) == pytest.approx(3.366, abs=1e-3)
    assert critical_value(100_000, 0.05) == pytest.approx(3.750, abs=1e-3)
    values = [critical_value(m, 0.05) for m in (25, 100, 250, 1000, 10_000, 10**6)]
    assert values[0] > values[1] > values[2] < values[3] < values[4] < values[5]
    # Always wider than a single one-sided look at alpha / 2 (z = 1.96).
    assert min(values) > 1.96
    # A smaller alpha needs stronger evidence.
    assert critical_value(1000, 0.01) > critical_value(1000, 0.05) > critical_value(1000, 0.2)


def test_sequence_contains_the_estimate_and_mirrors() -> None:
    cs = confidence_sequence(STABLE, CANARY_CLOSE, 0.05)
    assert cs.estimate == pytest.approx(0.095 - 0.1)
    assert cs.lower < cs.estimate < cs.upper
    swapped = confidence_sequence(CANARY_CLOSE, STABLE, 0.05)
    assert swapped.estimate == -cs.estimate
    assert (swapped.lower, swapped.upper) == (-cs.upper, -cs.lower)
    assert cs.effective_samples == pytest.approx(1000 * 9000 / 10000)


def _binomial_tail_at_least(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


def _clopper_pearson_lower(k: int, n: int, tail: float) -> float:
    lo, hi = 0.0, k / n
    for _ in range(60):
        mid = (lo + hi) / 2
        if _binomial_tail_at_least(k, n, mid) < tail:
            lo = mid
        else:
            hi = mid
    return lo


@pytest.mark.parametrize(("failures", "samples"), [(4, 50), (8, 50), (5, 200), (20, 200)])
def test_per_version_bounds_track_the_exact_ones_at_few_failures(
    failures: int, samples: int
) -> None:
    """The skew-corrected score bound is close to Clopper-Pearson where Wilson is far off.

    Against a huge stable version whose own bounds are negligible, the sequence's lower bound
    is the canary's lower bound minus the stable's rate.
    """
    z = 3.3
    tail = 0.5 * math.erfc(z / math.sqrt(2))
    exact = _clopper_pearson_lower(failures, samples, tail)
    wilson_centre = (failures / samples + z * z / (2 * samples)) / (1 + z * z / samples)
    wilson_half = (
        z
        * math.sqrt(
            failures / samples * (1 - failures / samples) / samples
            + z * z / (4 * samples * samples)
        )
        / (1 + z * z / samples)
    )
    wilson = wilson_centre - wilson_half
    _, lower, upper = _score_bounds(failures, samples, z)
    assert abs(lower - exact) < 0.25 * exact  # within a quarter of the exact bound
    assert abs(wilson - exact) > abs(lower - exact)  # and closer than Wilson
    assert lower < failures / samples < upper


def test_zero_failures_have_a_real_upper_bound() -> None:
    """A young canary with no failures cannot look arbitrarily good (the Wald trap)."""
    cs = confidence_sequence(Counts(5000, 50), Counts(300, 0), 0.05)
    # 0/300 against 1 %: zero failures in 300 happens 5 % of the time at a 1 % rate.
    assert cs.upper > 0
    assert assess(Counts(5000, 50), Counts(300, 0), DEFAULT).evidence is Evidence.INCONCLUSIVE


def test_assess_insufficient_without_data_or_samples() -> None:
    assert assess(None, CANARY_BETTER, DEFAULT).evidence is Evidence.INSUFFICIENT
    assert assess(STABLE, Counts(10, 0), DEFAULT).evidence is Evidence.INSUFFICIENT
    a = assess(STABLE, CANARY_BETTER, DEFAULT)
    assert a.evidence is Evidence.BETTER and a.sequence is not None


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "failures"), [(-1, 0), (10, -1), (10, 11)], ids=["neg-n", "neg-f", "f>n"]
)
def test_counts_reject_impossible_values(samples: int, failures: int) -> None:
    with pytest.raises(ValueError):
        Counts(samples, failures)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": 0.0},
        {"alpha": 0.5},
        {"min_samples": 0},
        {"max_failure_rate": 1.5},
        {"margin": -0.01},
        {"margin": 1.0},
        {"max_step": 0},
        {"floor": 101},
        {"ceiling": 0},
    ],
    ids=lambda kw: next(iter(kw)),
)
def test_policy_rejects_out_of_range(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Policy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("weight", [-1, 101])
def test_decide_rejects_a_weight_out_of_range(weight: int) -> None:
    with pytest.raises(ValueError):
        run(weight=weight)


def test_confidence_sequence_needs_samples() -> None:
    with pytest.raises(ValueError):
        confidence_sequence(Counts(0, 0), CANARY_BETTER, 0.05)


def test_verdict_values_are_the_api_strings() -> None:
    assert [v.value for v in Verdict] == ["step", "hold", "rollback", "await-approval", "promote"]
    assert isinstance(Verdict.AWAIT_APPROVAL, str)
    assert f"{Verdict.AWAIT_APPROVAL}" == "await-approval"
