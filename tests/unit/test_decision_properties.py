"""Properties of the canary decision that must hold for every input, checked by hypothesis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from promptloop.rollout.decision import (
    Counts,
    Evidence,
    Policy,
    Verdict,
    assess,
    confidence_sequence,
    decide,
)

# Verdicts that move the canary towards promotion, and that give it nothing more.
FORWARD = {Verdict.STEP, Verdict.AWAIT_APPROVAL, Verdict.PROMOTE}
MIRROR = {
    Evidence.BETTER: Evidence.WORSE,
    Evidence.WORSE: Evidence.BETTER,
    Evidence.INCONCLUSIVE: Evidence.INCONCLUSIVE,
    Evidence.INSUFFICIENT: Evidence.INSUFFICIENT,
}

FAST = settings(max_examples=200, deadline=None)
# How many failures to add: often one or two (where a bound could dip), sometimes many.
SMALL_OR_ANY = st.integers(1, 2) | st.integers(1, 5000)


@st.composite
def counts(draw: st.DrawFn, max_samples: int = 5000) -> Counts:
    samples = draw(st.integers(1, max_samples) | st.integers(1, 120))
    # Bias towards realistic failure rates and the few-failure counts of a young canary, where
    # the normal approximation is worst, but reach the extremes too.
    rate = draw(st.one_of(st.floats(0.0, 0.4), st.floats(0.0, 1.0)))
    failures = draw(
        st.integers(0, samples)
        | st.just(round(rate * samples))
        | st.integers(0, min(samples, 3))
        | st.integers(max(0, samples - 3), samples)
    )
    return Counts(samples, failures)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    floor = draw(st.integers(0, 20))
    return Policy(
        alpha=draw(st.sampled_from([0.01, 0.05, 0.1, 0.2])),
        min_samples=draw(st.integers(1, 200)),
        max_failure_rate=draw(st.none() | st.floats(0.0, 1.0)),
        margin=draw(st.sampled_from([0.0, 0.0, 0.005, 0.02, 0.1])),
        max_step=draw(st.integers(1, 50)),
        floor=floor,
        ceiling=draw(st.integers(max(1, floor), 100)),
    )


@st.composite
def situations(draw: st.DrawFn) -> tuple[Counts, Counts, Policy, int, bool]:
    policy = draw(policies())
    weight = draw(st.integers(policy.floor, 100))
    return draw(counts()), draw(counts()), policy, weight, draw(st.booleans())


def _decide(
    stable: Counts, canary: Counts, policy: Policy, weight: int, approved: bool
) -> tuple[Verdict, int]:
    d = decide(stable=stable, canary=canary, policy=policy, weight=weight, approved=approved)
    return d.verdict, d.next_weight


@FAST
@given(situations(), SMALL_OR_ANY)
def test_more_canary_failures_never_help_the_canary(
    situation: tuple[Counts, Counts, Policy, int, bool], extra: int
) -> None:
    """Monotone: adding canary failures never makes a step or promotion more likely, never
    makes a rollback less likely, and never raises the next weight."""
    stable, canary, policy, weight, approved = situation
    worse = Counts(canary.samples, min(canary.samples, canary.failures + extra))
    v_few, w_few = _decide(stable, canary, policy, weight, approved)
    v_many, w_many = _decide(stable, worse, policy, weight, approved)
    if v_many in FORWARD:
        assert v_few in FORWARD, (v_few, v_many)
    if v_few is Verdict.ROLLBACK:
        assert v_many is Verdict.ROLLBACK, (v_few, v_many)
    assert w_many <= w_few


@FAST
@given(situations(), SMALL_OR_ANY)
def test_more_stable_failures_never_hurt_the_canary(
    situation: tuple[Counts, Counts, Policy, int, bool], extra: int
) -> None:
    """The other side of the coin: a worse incumbent never makes the canary look worse."""
    stable, canary, policy, weight, approved = situation
    worse_stable = Counts(stable.samples, min(stable.samples, stable.failures + extra))
    v_before, w_before = _decide(stable, canary, policy, weight, approved)
    v_after, w_after = _decide(worse_stable, canary, policy, weight, approved)
    if v_before in FORWARD:
        assert v_after in FORWARD
    if v_after is Verdict.ROLLBACK:
        assert v_before is Verdict.ROLLBACK
    assert w_after >= w_before


@FAST
@given(policies(), st.data())
def test_nothing_but_hold_below_min_samples(policy: Policy, data: st.DataObject) -> None:
    short = data.draw(st.integers(0, policy.min_samples - 1), label="short side samples")
    short_counts = Counts(short, data.draw(st.integers(0, short), label="short side failures"))
    other = data.draw(counts(), label="other side")
    weight = data.draw(st.integers(0, 100), label="weight")
    approved = data.draw(st.booleans(), label="approved")
    for stable, canary in ((short_counts, other), (other, short_counts)):
        d = decide(stable=stable, canary=canary, policy=policy, weight=weight, approved=approved)
        assert d.verdict is Verdict.HOLD
        assert d.next_weight == weight
        assert d.statistic is None
        assert assess(stable, canary, policy).evidence is Evidence.INSUFFICIENT


@FAST
@given(
    counts(),
    st.sampled_from(["stable", "canary", "both"]),
    policies(),
    st.integers(0, 100),
    st.booleans(),
)
def test_missing_metrics_always_hold(
    present: Counts, missing: str, policy: Policy, weight: int, approved: bool
) -> None:
    stable = None if missing in ("stable", "both") else present
    canary = None if missing in ("canary", "both") else present
    d = decide(stable=stable, canary=canary, policy=policy, weight=weight, approved=approved)
    assert (d.verdict, d.next_weight) == (Verdict.HOLD, weight)
    assert "No data" in d.reason
    assert assess(stable, canary, policy).evidence is Evidence.INSUFFICIENT


@FAST
@given(counts(), counts(), st.sampled_from([0.01, 0.05, 0.1, 0.2]), st.integers(1, 200))
def test_swapping_roles_mirrors_the_evidence(
    a: Counts, b: Counts, alpha: float, min_samples: int
) -> None:
    """With margin 0, what is better one way round is worse the other way round."""
    policy = Policy(alpha=alpha, min_samples=min_samples)
    forward = assess(a, b, policy)
    backward = assess(b, a, policy)
    assert backward.evidence is MIRROR[forward.evidence]
    if forward.statistic is not None:
        assert backward.statistic == -forward.statistic
    cs, sc = confidence_sequence(a, b, alpha), confidence_sequence(b, a, alpha)
    assert (sc.lower, sc.estimate, sc.upper) == (-cs.upper, -cs.estimate, -cs.lower)


@FAST
@given(counts(), counts(), st.sampled_from([0.01, 0.05, 0.1, 0.2]))
def test_the_sequence_brackets_the_estimate(a: Counts, b: Counts, alpha: float) -> None:
    cs = confidence_sequence(a, b, alpha)
    assert -1.0 <= cs.lower <= cs.estimate <= cs.upper <= 1.0 + 1e-12
    assert cs.upper > cs.lower
    assert cs.critical > 1.96


@FAST
@given(counts(), counts(), st.sampled_from([0.01, 0.05, 0.1, 0.2]), SMALL_OR_ANY)
def test_bounds_rise_with_canary_failures(
    stable: Counts, canary: Counts, alpha: float, extra: int
) -> None:
    """The construction behind the monotone verdicts: both bounds of the sequence are
    non-decreasing in the canary's failures (and so non-increasing in the stable's)."""
    worse = Counts(canary.samples, min(canary.samples, canary.failures + extra))
    before = confidence_sequence(stable, canary, alpha)
    after = confidence_sequence(stable, worse, alpha)
    assert after.lower >= before.lower - 1e-12
    assert after.upper >= before.upper - 1e-12


@FAST
@given(counts(), counts(), st.floats(0.001, 0.2))
def test_smaller_alpha_never_claims_more(a: Counts, b: Counts, alpha: float) -> None:
    strict = confidence_sequence(a, b, alpha / 2)
    loose = confidence_sequence(a, b, alpha)
    assert strict.lower <= loose.lower
    assert strict.upper >= loose.upper


@FAST
@given(situations())
def test_verdict_and_weight_agree(situation: tuple[Counts, Counts, Policy, int, bool]) -> None:
    stable, canary, policy, weight, approved = situation
    d = decide(stable=stable, canary=canary, policy=policy, weight=weight, approved=approved)
    assert 0 <= d.next_weight <= 100
    assert d.reason
    if d.verdict is Verdict.STEP:
        assert d.next_weight > weight
        if not approved and weight < policy.ceiling:
            assert d.next_weight < policy.ceiling  # the gate is never crossed unapproved
    elif d.verdict in (Verdict.HOLD, Verdict.AWAIT_APPROVAL):
        assert d.next_weight == weight
    elif d.verdict is Verdict.ROLLBACK:
        assert d.next_weight == min(policy.floor, weight)
    else:
        assert d.verdict is Verdict.PROMOTE and weight == 100 == d.next_weight
    if d.samples_needed is not None:
        assert d.samples_needed >= 1
        assert d.verdict is Verdict.HOLD
