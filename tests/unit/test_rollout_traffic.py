"""Traffic verification: the canary's observed share of requests against its weight.

A false alarm holds a healthy rollout, so a plausible split must always verify; only a router
that gives the canary nothing (or grossly too little) is flagged, and, mirrored with the same
care, one that gives it grossly more than its weight (over-exposure before approval).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from promptloop.rollout.traffic import (
    GROSS_FRACTION,
    MIN_REQUESTS,
    Z_THRESHOLD,
    TrafficVerdict,
    verify_traffic,
)

V = TrafficVerdict


@pytest.mark.parametrize(
    ("canary", "stable", "weight"),
    [
        (0, 0, 10),
        (0, MIN_REQUESTS - 1, 50),
        (MIN_REQUESTS - 1, 0, 50),
        (5, 14, 25),
    ],
)
def test_too_few_requests_say_nothing(canary: int, stable: int, weight: int) -> None:
    check = verify_traffic(canary_requests=canary, stable_requests=stable, weight=weight)
    assert check.verdict is V.TOO_LITTLE
    assert check.observed_percent is None
    assert check.requests == canary + stable
    assert check.expected_percent == weight
    assert f"{canary + stable} requests" in check.message
    assert f"need {MIN_REQUESTS}" in check.message


@pytest.mark.parametrize(("canary", "stable"), [(0, 0), (0, 1000), (500, 500)])
def test_weight_zero_has_no_share_to_verify_however_much_traffic(canary: int, stable: int) -> None:
    check = verify_traffic(canary_requests=canary, stable_requests=stable, weight=0)
    assert check.verdict is V.TOO_LITTLE
    assert check.observed_percent is None
    assert "weight is 0%" in check.message
    assert "need" not in check.message  # more requests would not help


@pytest.mark.parametrize(
    ("canary", "stable", "weight"),
    [
        (10, 10, 50),  # exactly MIN_REQUESTS
        (50, 950, 5),
        (40, 960, 5),  # a little low is noise, not a broken router
        (100, 900, 5),  # twice its share is biased, not over-exposed: stable keeps 90% of 95%
        (1000, 0, 100),
        (995, 5, 100),
        (300, 700, 30),
        (0, 20, 1),  # 0.2 expected: none is the likely outcome
        (0, 40, 2),
        (0, 100, 5),  # 5 expected: none happens 0.6% of the time, not a broken router
        # Near 100% p(1 - p) is tiny, so a stray request or two to the stable version (its
        # minimum share, a request in flight across the step) is "significant" but not gross:
        # flagging it would hold the canary at 100% and never promote.
        (999, 1, 100),
        (9_990, 10, 100),
        (97_000, 3_000, 100),
        (850_000, 150_000, 90),  # 85% at 90% over a million requests: biased, not broken
    ],
)
def test_a_plausible_split_is_verified(canary: int, stable: int, weight: int) -> None:
    check = verify_traffic(canary_requests=canary, stable_requests=stable, weight=weight)
    assert check.verdict is V.VERIFIED, check.message
    total = canary + stable
    assert check.requests == total
    assert check.observed_percent == pytest.approx(100 * canary / total)
    assert check.expected_percent == weight
    assert f"{total} requests" in check.message
    assert f"weight {weight}%" in check.message


@pytest.mark.parametrize(
    ("canary", "stable", "weight"),
    [
        (0, 1000, 10),  # the router routes everything to the stable version
        (0, 400, 5),
        (0, 50, 50),
        (0, 20, 100),
        (10, 990, 50),  # grossly too little
        (20, 980, 10),
        (400, 600, 100),
    ],
)
def test_none_or_grossly_too_little_is_not_honoured(canary: int, stable: int, weight: int) -> None:
    check = verify_traffic(canary_requests=canary, stable_requests=stable, weight=weight)
    assert check.verdict is V.NOT_HONOURED, check.message
    total = canary + stable
    assert check.observed_percent == pytest.approx(100 * canary / total)
    assert f"served {canary} of {total}" in check.message
    assert "honour" in check.message


def _z(k: int, n: int, weight: int) -> float:
    """The one-sided binomial z the module documents, computed here independently."""
    p = min(weight, 99.999) / 100
    return (k - n * p) / math.sqrt(n * p * (1 - p))


weights = st.integers(1, 100)
totals = st.integers(MIN_REQUESTS, 200_000)


@settings(max_examples=200, deadline=None)
@given(weights, totals, st.sampled_from([round, math.floor, math.ceil]))
@example(1, MIN_REQUESTS, round)
@example(5, MIN_REQUESTS, math.floor)
@example(99, MIN_REQUESTS, math.floor)
@example(100, 200_000, math.floor)
def test_counts_at_exactly_the_expected_share_verify(
    weight: int, total: int, to_int: Callable[[float], int]
) -> None:
    canary = int(to_int(total * weight / 100))
    check = verify_traffic(canary_requests=canary, stable_requests=total - canary, weight=weight)
    assert check.verdict is V.VERIFIED, check.message


@settings(max_examples=100, deadline=None)
@given(weights, totals, st.data())
def test_more_canary_traffic_is_never_less_plausible(
    weight: int, total: int, data: st.DataObject
) -> None:
    canary = data.draw(st.integers(0, total - 1))
    fewer = verify_traffic(canary_requests=canary, stable_requests=total - canary, weight=weight)
    more = verify_traffic(
        canary_requests=canary + 1, stable_requests=total - canary - 1, weight=weight
    )
    if fewer.verdict is V.VERIFIED:
        assert more.verdict in (V.VERIFIED, V.OVER_EXPOSED)
    if fewer.verdict is V.OVER_EXPOSED:
        assert more.verdict is V.OVER_EXPOSED


@settings(max_examples=100, deadline=None)
@given(weights, totals, st.data())
def test_only_a_gross_and_significant_shortfall_is_flagged(
    weight: int, total: int, data: st.DataObject
) -> None:
    canary = data.draw(st.integers(0, total))
    check = verify_traffic(canary_requests=canary, stable_requests=total - canary, weight=weight)
    gross = canary < GROSS_FRACTION * weight / 100 * total
    significant = _z(canary, total, weight) < -Z_THRESHOLD
    # Mirrored: the stable version's share grossly and significantly below its weight.
    gross_over = weight < 100 and (total - canary) < GROSS_FRACTION * (100 - weight) / 100 * total
    significant_over = _z(canary, total, weight) > Z_THRESHOLD
    expected = (
        V.NOT_HONOURED
        if gross and significant
        else V.OVER_EXPOSED
        if gross_over and significant_over
        else V.VERIFIED
    )
    assert check.verdict is expected


@settings(max_examples=100, deadline=None)
@given(weights, st.integers(MIN_REQUESTS, 10**7), st.floats(GROSS_FRACTION, 1.0))
def test_at_least_half_the_share_is_never_flagged_however_many_requests(
    weight: int, total: int, fraction: float
) -> None:
    canary = math.ceil(total * weight / 100 * fraction)
    check = verify_traffic(canary_requests=canary, stable_requests=total - canary, weight=weight)
    assert check.verdict is V.VERIFIED, check.message


@settings(max_examples=100, deadline=None)
@given(st.integers(5, 100), st.integers(MIN_REQUESTS, 100_000))
def test_a_router_that_ignores_weights_is_caught_once_a_few_hundred_requests_arrive(
    weight: int, total: int
) -> None:
    # At 5% or more, a canary that gets nothing out of a few hundred requests is a broken split.
    check = verify_traffic(canary_requests=0, stable_requests=total, weight=weight)
    if total >= 350:
        assert check.verdict is V.NOT_HONOURED


@pytest.mark.parametrize(
    ("canary", "stable", "weight"),
    [
        (1000, 0, 10),  # AgentField sends every call to the smallest version string: the canary
        (20, 0, 10),  # caught at the first MIN_REQUESTS
        (30, 0, 50),
        (400, 100, 10),
        (990, 10, 50),
        (5000, 0, 99),  # near 100% it takes more requests to be significant
    ],
)
def test_grossly_too_much_is_over_exposed(canary: int, stable: int, weight: int) -> None:
    check = verify_traffic(canary_requests=canary, stable_requests=stable, weight=weight)
    assert check.verdict is V.OVER_EXPOSED, check.message
    total = canary + stable
    assert check.observed_percent == pytest.approx(100 * canary / total)
    assert f"served {canary} of {total}" in check.message
    assert "exposed far beyond its weight" in check.message


@settings(max_examples=100, deadline=None)
@given(weights, st.integers(MIN_REQUESTS, 10**7), st.floats(GROSS_FRACTION, 1.0))
def test_the_stable_keeping_half_its_share_is_never_over_exposure(
    weight: int, total: int, fraction: float
) -> None:
    stable = math.ceil(total * (100 - weight) / 100 * fraction)
    check = verify_traffic(canary_requests=total - stable, stable_requests=stable, weight=weight)
    assert check.verdict is not V.OVER_EXPOSED, check.message


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 95), st.integers(MIN_REQUESTS, 100_000))
def test_a_canary_that_takes_everything_is_caught_at_the_first_verifiable_window(
    weight: int, total: int
) -> None:
    # The AgentField ordering hazard: the canary gets 100%. With none for the stable version,
    # z = sqrt(n (1 - p) / p), so it is significant once n > Z^2 p / (1 - p): at the first
    # verifiable window (MIN_REQUESTS) for any weight up to 50%, a few hundred requests at 95%.
    check = verify_traffic(canary_requests=total, stable_requests=0, weight=weight)
    p = weight / 100
    # (a hair above the exact boundary, where z == Z up to floating-point rounding)
    if total > Z_THRESHOLD**2 * p / (1 - p) + 1e-6:
        assert check.verdict is V.OVER_EXPOSED, check.message
    if weight <= 50:
        assert check.verdict is V.OVER_EXPOSED, check.message
