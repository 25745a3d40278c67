"""The decision under real-world data (issue 12): strata, dispersion, the guard on the
confidence bound, the decision deadline, and ``rule`` agreeing with ``decide``."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptloop.rollout.decision import (
    EMPTY_STRATUM,
    MIN_DISPERSION_TICKS,
    Counts,
    Policy,
    Stratum,
    Verdict,
    add_tick,
    confidence_sequence,
    decide,
    dispersion,
    guard_bound,
    rule,
    stratified_sequence,
)


def _ticks(
    rng: random.Random,
    ticks: int,
    *,
    stable: int,
    canary: int,
    rate: float,
    canary_rate: float | None = None,
    cluster: int = 1,
    stratum: Stratum = EMPTY_STRATUM,
) -> Stratum:
    """Simulated per-tick increments (tasks fail with ``rate``; a failure counts ``cluster``)."""
    canary_rate = rate if canary_rate is None else canary_rate
    for _ in range(ticks):
        bad_s = sum(rng.random() < rate for _ in range(stable))
        bad_c = sum(rng.random() < canary_rate for _ in range(canary))
        stratum = add_tick(
            stratum,
            stable + (cluster - 1) * bad_s,
            cluster * bad_s,
            canary + (cluster - 1) * bad_c,
            cluster * bad_c,
        )
    return stratum


def _known(n_s: int, f_s: int, n_c: int, f_c: int) -> Stratum:
    """Counts with per-tick sums that show independent failures (dispersion 1)."""
    return Stratum(n_s, f_s, n_c, f_c, MIN_DISPERSION_TICKS + 1, 9.0, 0.0, 100.0, 10.0, 100.0)


def _sums(strata: list[Stratum]) -> tuple[Counts, Counts]:
    return (
        Counts(sum(s.stable_samples for s in strata), sum(s.stable_failures for s in strata)),
        Counts(sum(s.canary_samples for s in strata), sum(s.canary_failures for s in strata)),
    )


def test_one_stratum_is_the_unstratified_sequence() -> None:
    stratum = Stratum(9000, 900, 1000, 130)
    assert stratified_sequence([stratum], 0.05) == confidence_sequence(
        Counts(9000, 900), Counts(1000, 130), 0.05
    )


def test_a_base_rate_shift_shared_by_both_versions_does_not_move_the_verdict() -> None:
    # At 5 % weight both versions fail 5 %; at 50 % weight (after an incident began) both 20 %.
    quiet = _known(9500, 475, 500, 25)
    incident = _known(5000, 1000, 5000, 1000)
    stable, canary = _sums([quiet, incident])
    policy = Policy()
    # Pooled, the canary looks far worse (18.6 % vs 10.2 %): it served more of the incident.
    pooled = decide(stable=stable, canary=canary, policy=policy, weight=50, approved=True)
    assert pooled.verdict is Verdict.ROLLBACK
    stratified = decide(
        stable=stable,
        canary=canary,
        policy=policy,
        weight=50,
        approved=True,
        strata=[quiet, incident],
    )
    assert stratified.verdict is Verdict.HOLD
    assert "2 strata" in stratified.reason and "Inconclusive" in stratified.reason


def test_a_real_difference_survives_stratification() -> None:
    quiet = _known(9500, 475, 500, 10)
    incident = _known(5000, 1000, 5000, 700)
    stable, canary = _sums([quiet, incident])
    decision = decide(
        stable=stable,
        canary=canary,
        policy=Policy(),
        weight=50,
        approved=True,
        strata=[quiet, incident],
    )
    assert decision.verdict is Verdict.STEP


def test_dispersion_is_about_one_for_independent_failures() -> None:
    stratum = _ticks(random.Random(1), 300, stable=190, canary=10, rate=0.1)
    assert 1.0 <= dispersion([stratum]) < 1.3


@pytest.mark.parametrize("cluster", [3, 5])
def test_dispersion_finds_the_cluster_size_of_retried_failures(cluster: int) -> None:
    stratum = _ticks(random.Random(cluster), 300, stable=190, canary=10, rate=0.05, cluster=cluster)
    assert 0.7 * cluster < dispersion([stratum]) < 1.3 * cluster


def test_a_real_difference_does_not_pass_for_dispersion() -> None:
    # Canary twice as good: the residuals carry the difference, the regression removes it.
    stratum = _ticks(random.Random(7), 300, stable=180, canary=20, rate=0.2, canary_rate=0.1)
    assert dispersion([stratum]) < 1.3


def test_dispersion_widens_the_interval() -> None:
    stratum = _ticks(random.Random(3), 200, stable=190, canary=10, rate=0.05, cluster=4)
    narrow = stratified_sequence([stratum], 0.05, 1.0)
    wide = stratified_sequence([stratum], 0.05, dispersion([stratum]))
    assert wide.lower < narrow.lower and wide.upper > narrow.upper


def test_no_verdict_before_the_dispersion_can_be_estimated() -> None:
    stratum = _ticks(random.Random(4), MIN_DISPERSION_TICKS, stable=900, canary=100, rate=0.1)
    stable, canary = _sums([stratum])
    # Even a canary that fails every request waits for the estimate...
    worst = stratum._replace(canary_failures=stratum.canary_samples)
    _, all_failed = _sums([worst])
    decision = decide(
        stable=stable, canary=all_failed, policy=Policy(), weight=5, approved=False, strata=[worst]
    )
    assert decision.verdict is Verdict.HOLD
    assert "clustered" in decision.reason and "more reads" in decision.reason
    # ...and one more informative read is enough to start deciding.
    more = _ticks(random.Random(5), 1, stable=900, canary=100, rate=0.1, stratum=stratum)
    stable, canary = _sums([more])
    decision = decide(
        stable=stable, canary=canary, policy=Policy(), weight=5, approved=False, strata=[more]
    )
    assert "clustered" not in decision.reason


def test_the_guard_needs_the_bound_above_it_not_the_raw_rate() -> None:
    policy = Policy(max_failure_rate=0.08)
    # 9 % observed on 400 requests could well be an 8 % rate: hold.
    assert guard_bound(Counts(400, 36), policy.alpha) < 0.08
    decision = decide(
        stable=Counts(8000, 720), canary=Counts(400, 36), policy=policy, weight=5, approved=False
    )
    assert decision.verdict is not Verdict.ROLLBACK
    # 20 % on 400 cannot be: roll back, saying why.
    decision = decide(
        stable=Counts(8000, 720), canary=Counts(400, 80), policy=policy, weight=5, approved=False
    )
    assert decision.verdict is Verdict.ROLLBACK
    assert "surely above the 8.0% guard" in decision.reason


def test_the_deadline_rolls_back_an_undecided_canary_with_its_own_reason() -> None:
    policy = Policy(decision_deadline=4 * 3600.0)
    kwargs = dict(stable=Counts(2000, 100), canary=Counts(100, 5), policy=policy, weight=5)
    before = decide(**kwargs, approved=False, canary_age=4 * 3600.0 - 1)  # type: ignore[arg-type]
    assert before.verdict is Verdict.HOLD
    after = decide(**kwargs, approved=False, canary_age=4 * 3600.0)  # type: ignore[arg-type]
    assert after.verdict is Verdict.ROLLBACK and after.next_weight == 0
    assert after.reason.startswith("Decision deadline passed")
    assert "4.0 h" in after.reason and "Inconclusive" in after.reason


def test_the_deadline_also_ends_a_canary_without_data() -> None:
    policy = Policy(decision_deadline=600.0)
    decision = decide(
        stable=None, canary=None, policy=policy, weight=5, approved=False, canary_age=601.0
    )
    assert decision.verdict is Verdict.ROLLBACK
    assert "No data" in decision.reason


def test_the_deadline_never_overrides_a_decided_canary() -> None:
    policy = Policy(decision_deadline=600.0)
    decision = decide(
        stable=Counts(9000, 900),
        canary=Counts(1000, 50),
        policy=policy,
        weight=45,
        approved=False,
        canary_age=10_000.0,
    )
    assert decision.verdict is Verdict.AWAIT_APPROVAL


def test_policy_rejects_a_non_positive_deadline() -> None:
    with pytest.raises(ValueError, match="decision_deadline"):
        Policy(decision_deadline=0.0)


strata_lists = st.lists(
    st.tuples(
        st.integers(1, 3000), st.integers(0, 300), st.integers(1, 500), st.integers(0, 80)
    ).map(
        lambda t: Stratum(
            t[0], min(t[1], t[0]), t[2], min(t[3], t[2]), 12, 30.0, 400.0, 9000.0, 25.0, 8000.0
        )
    ),
    min_size=1,
    max_size=6,
)


@given(
    strata_lists,
    st.integers(0, 100),
    st.booleans(),
    st.one_of(st.none(), st.floats(0.0, 0.5)),
    st.one_of(st.none(), st.floats(0.0, 20_000.0)),
)
@settings(max_examples=300, deadline=None)
def test_rule_and_decide_agree(
    strata: list[Stratum],
    weight: int,
    approved: bool,
    guard: float | None,
    age: float | None,
) -> None:
    policy = Policy(max_failure_rate=guard, decision_deadline=7200.0)
    stable, canary = _sums(strata)
    kwargs = dict(
        stable=stable,
        canary=canary,
        policy=policy,
        weight=weight,
        approved=approved,
        strata=strata,
        canary_age=age,
    )
    ruling = rule(**kwargs)  # type: ignore[arg-type]
    decision = decide(**kwargs)  # type: ignore[arg-type]
    assert (ruling.verdict, ruling.next_weight) == (decision.verdict, decision.next_weight)
    assert decision.reason


def test_the_decision_carries_its_interval_strata_and_dispersion() -> None:
    quiet = _known(9500, 475, 500, 25)
    incident = _known(5000, 1000, 5000, 1000)
    stable, canary = _sums([quiet, incident])
    decision = decide(
        stable=stable,
        canary=canary,
        policy=Policy(),
        weight=50,
        approved=True,
        strata=[quiet, incident],
    )
    assert decision.strata == 2 and decision.dispersion == 1.0
    assert decision.interval is not None
    low, high = decision.interval
    assert low < 0.0 < high
    assert f"[{100 * low:+.2f}, {100 * high:+.2f}] points" in decision.reason
    held = decide(
        stable=Counts(10, 1), canary=Counts(3, 0), policy=Policy(), weight=5, approved=False
    )
    assert held.interval is None and held.strata is None
