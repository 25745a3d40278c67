"""Traffic verification: does the canary really get the share of requests its weight says?

AgentField's execute path does not consult the weights in the control-plane versions read
(``shared/notes/agentfield-api.md`` §0.1), so a weight written and read back proves only that the
router *recorded* it. The operator therefore compares the canary's observed share of requests
since the last step with the share it set, and holds when the canary gets none or far too little.

The check is a one-sided binomial z-test on the requests since the weight was last changed: with
``n`` requests and an expected canary share ``p``, the canary's count ``k`` is implausibly low when
``(k - n p) / sqrt(n p (1 - p)) < -Z``. ``Z`` is deliberately large (4): a false alarm holds a
healthy rollout, so only gross mismatches — the router ignoring weights — are flagged. For the
same reason a share of at least ``GROSS_FRACTION`` of the weight is never flagged: with many
requests, or a weight near 100 where ``p (1 - p)`` is tiny, the z-test alone would call a small
bias significant (the router's minimum shares, requests in flight across a step) and hold a
canary at 100% forever over one stray request to the stable version. Zero canary requests are
judged by the same test: at a small weight with few requests, none is the likely outcome.

The opposite failure is worse: a canary that gets significantly **more** than its weight is
exposed before anyone approved it. On AgentField this happens when the challenger's version
string sorts first (``2.10.0`` before ``2.9.0``): ``GetAgent`` is ``ORDER BY version='' desc,
version ASC LIMIT 1`` and execute sends every call to that row. Over-exposure is judged with the
same care, mirrored: the stable version's share is the one that must be implausibly low
(``z > Z`` for the canary) *and* grossly below the stable's weight (under ``GROSS_FRACTION`` of
``100 - weight``). A canary at 100 % cannot be over-exposed.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = [
    "GROSS_FRACTION",
    "MIN_REQUESTS",
    "Z_THRESHOLD",
    "TrafficCheck",
    "TrafficVerdict",
    "verify_traffic",
]

Z_THRESHOLD = 4.0
# Below this many requests since the step there is too little traffic to say anything.
MIN_REQUESTS = 20
# An observed canary share at least this fraction of its weight is never "not honoured".
GROSS_FRACTION = 0.5


class TrafficVerdict(enum.StrEnum):
    """The outcome of a traffic check."""

    VERIFIED = "Verified"
    TOO_LITTLE = "TooLittleTraffic"
    NOT_HONOURED = "WeightsNotHonoured"
    OVER_EXPOSED = "OverExposed"


@dataclass(frozen=True)
class TrafficCheck:
    """A verdict with the numbers a person needs to judge it."""

    verdict: TrafficVerdict
    observed_percent: float | None
    expected_percent: int
    requests: int
    message: str


def verify_traffic(*, canary_requests: int, stable_requests: int, weight: int) -> TrafficCheck:
    """Compare the canary's observed share of requests with its weight.

    Parameters
    ----------
    canary_requests, stable_requests
        Requests each version served since the weight was last changed.
    weight
        The canary's weight, in percent.

    Returns
    -------
    TrafficCheck
        ``Verified`` when the share is plausible, ``TooLittleTraffic`` when there are too few
        requests to tell, ``WeightsNotHonoured`` when the canary gets none or far too little,
        ``OverExposed`` when it gets far more than its weight.
    """
    total = canary_requests + stable_requests
    if total < MIN_REQUESTS or weight <= 0:
        return TrafficCheck(
            TrafficVerdict.TOO_LITTLE,
            None,
            weight,
            total,
            f"{total} requests since the last step; need {MIN_REQUESTS} to verify the split"
            if weight > 0
            else f"the canary's weight is {weight}%: no share to verify",
        )
    observed = 100.0 * canary_requests / total
    p = min(weight, 99.999) / 100.0
    z = (canary_requests - total * p) / math.sqrt(total * p * (1 - p))
    if z < -Z_THRESHOLD and observed < GROSS_FRACTION * weight:
        return TrafficCheck(
            TrafficVerdict.NOT_HONOURED,
            observed,
            weight,
            total,
            f"the canary served {canary_requests} of {total} requests ({observed:.1f}%) at weight "
            f"{weight}%: the router does not seem to honour weights (AgentField's execute path "
            "routes every call to one version unless the caller splits by weight)",
        )
    stable_weight = 100 - weight
    if (
        stable_weight > 0
        and z > Z_THRESHOLD
        and (100.0 - observed) < GROSS_FRACTION * stable_weight
    ):
        return TrafficCheck(
            TrafficVerdict.OVER_EXPOSED,
            observed,
            weight,
            total,
            f"the canary served {canary_requests} of {total} requests ({observed:.1f}%) at weight "
            f"{weight}%: it is exposed far beyond its weight before approval (on AgentField, "
            "execute sends every call to the smallest version string, which the canary's is)",
        )
    return TrafficCheck(
        TrafficVerdict.VERIFIED,
        observed,
        weight,
        total,
        f"the canary served {observed:.1f}% of {total} requests at weight {weight}%",
    )
