"""What every traffic backend shares: the error taxonomy, what a version looks like, and the
pure arithmetic between percentages (the API) and AgentField's relative shares (the wire).

Nothing here does I/O. Backends raise only :class:`RouterError` and its subclasses, whose
messages never contain credentials, so a handler can put ``str(error)`` in a condition or an
Event as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from promptloop.api import VersionWeight
from promptloop.constants import AGENTFIELD_WEIGHT_SCALE
from promptloop.rollout.observations import Readiness as Readiness

__all__ = [
    "MIN_SHARE",
    "ROLE_CANARY",
    "ROLE_OTHER",
    "ROLE_STABLE",
    "ConnectorDisabled",
    "Readiness",
    "RouterError",
    "RouterForbidden",
    "RouterUnavailable",
    "Split",
    "TrafficRouter",
    "UnknownVersion",
    "VersionInfo",
    "effective_percentages",
    "effective_share",
    "plan_shares",
    "readback",
    "weights_drifted",
]

ROLE_STABLE = "stable"
ROLE_CANARY = "canary"
ROLE_OTHER = "other"

# The smallest share AgentField lets a version have without the "0 means 100" rule kicking in
# (execute.go:1591-1596): 1 against 10000 is about 0.01 %.
MIN_SHARE = 1


class RouterError(Exception):
    """A traffic backend failed; the message is safe to show (it never holds a token)."""


class RouterForbidden(RouterError):
    """The backend refused our credentials (HTTP 403): wrong token or a disabled capability.

    Never retried: retrying a refused token only floods the backend's audit log.
    """


class RouterUnavailable(RouterError):
    """The backend could not be reached, or kept failing (5xx), after bounded retries."""


class ConnectorDisabled(RouterError):
    """AgentField has no connector routes at all (404 ``endpoint_not_found``): it was started
    without ``features.connector.enabled`` and a token. Not the same as a node or version that
    is not registered (404 ``agent not found``, 500 for a version)."""


class UnknownVersion(RouterError):
    """The version is not registered with the backend (AgentField answers 500 for it)."""


@dataclass(frozen=True)
class VersionInfo:
    """One registered version of a node as the backend reports it.

    Attributes
    ----------
    version
        The version string as registered.
    weight
        The backend's raw number (AgentField: relative share, 0..10000; 0 behaves as 100).
    health_status, lifecycle_status
        As reported; in AgentField both are node-wide, not per version.
    last_heartbeat
        The version's own last heartbeat (per version in AgentField), None when unknown.
    base_url
        Where the backend calls this version.
    """

    version: str
    weight: int
    health_status: str
    lifecycle_status: str
    last_heartbeat: datetime | None
    base_url: str


@dataclass(frozen=True)
class Split:
    """The split the rollout's status asks for, in percent (the API's unit).

    Attributes
    ----------
    stable
        The stable version; it gets ``100 - canary_percent``.
    canary
        The challenger's version, or None when there is no canary.
    canary_percent
        0..100; 0 with a canary means drained (only a router that ``drains_by_weight`` can).
    others
        Other versions the router knows; each gets the router's minimum share.
    """

    stable: str
    canary: str | None
    canary_percent: int
    others: tuple[str, ...] = ()


class TrafficRouter(Protocol):
    """What the reconciler needs from a traffic backend, whichever it is.

    Weights are percentages in, percentages (and the backend's raw numbers) out. Every write is
    idempotent and read back; nothing is cached between passes. Adding a backend (an SMI
    TrafficSplit, an Istio VirtualService) means one more class with these members and no change
    to the decision code.
    """

    #: The ``spec.router`` key this router serves (``agentfield``, ``gatewayAPI``).
    kind: str
    #: Whether weight 0 really takes a version out of rotation (False for AgentField, where 0
    #: counts as 100: the challenger must be scaled to zero instead).
    drains_by_weight: bool
    #: Whether the backend's real routing sends everything to the smallest version string
    #: (AgentField's execute route), so that a challenger sorting first must be refused.
    orders_by_version_string: bool

    async def known_versions(self) -> list[str]:
        """Every version the backend routes to or keeps registered."""
        ...

    async def apply(self, split: Split) -> list[VersionWeight]:
        """Write the split (idempotently), then read it back.

        A router object lives one pass: when the pass has already read the backend (to list
        versions or check readiness) and the split is unchanged, that read is the read-back and
        nothing is written or read again (one router read per pass; 1,000 rollouts at scale).
        """
        ...

    async def read(self) -> list[VersionWeight]:
        """The split as the backend holds it now (no write)."""
        ...

    async def version_ready(self, version: str) -> Readiness:
        """Whether ``version`` can take traffic (beyond its Deployment being available)."""
        ...

    async def drain(self, version: str) -> None:
        """Take ``version`` out of rotation as far as the backend can (weight 0 where it
        drains by weight; a no-op elsewhere, where the caller scales the challenger to zero)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def weights_drifted(expected: Sequence[VersionWeight], actual: Sequence[VersionWeight]) -> bool:
    """Whether the backend's raw weights differ from what the last pass read back.

    Compared on the raw numbers, version by version; an empty ``expected`` (nothing written yet)
    is never drift.
    """
    want = {w.version: w.raw for w in expected if w.raw is not None}
    if not want:
        return False
    return want != {w.version: w.raw for w in actual if w.raw is not None}


def plan_shares(
    *,
    stable: str,
    canary: str | None,
    canary_percent: int,
    others: Iterable[str] = (),
    scale: int = AGENTFIELD_WEIGHT_SCALE,
) -> dict[str, int]:
    """The shares to write so that the canary gets ``canary_percent`` of the traffic.

    Shares are out of ``scale`` (10000): stable ``(100 - p) * scale / 100``, canary
    ``p * scale / 100``, every other version :data:`MIN_SHARE`. No share is ever 0, because
    AgentField treats 0 as 100: a canary at 0 % must be taken out of rotation by scaling it to
    zero instead, so asking for that is an error here; a stable at 0 (canary at 100 %) is
    clamped to the minimum share.

    Parameters
    ----------
    stable
        The incumbent's version.
    canary
        The challenger's version, or None when there is no canary (stable gets everything).
    canary_percent
        The challenger's percentage, 1..100 (0 only when ``canary`` is None).
    others
        Other registered versions; each gets :data:`MIN_SHARE`.
    scale
        What the shares add up to for stable plus canary.

    Returns
    -------
    dict
        Version to share, stable first, then canary, then the others in the given order.

    Raises
    ------
    ValueError
        For a percentage outside 0..100, a 0 % canary, a percentage without a canary, or the
        same version as both stable and canary.
    """
    if not 0 <= canary_percent <= 100:
        raise ValueError(f"canary_percent must be within 0..100, got {canary_percent}")
    if canary is None:
        if canary_percent != 0:
            raise ValueError("canary_percent must be 0 when there is no canary")
        shares = {stable: scale}
    else:
        if canary == stable:
            raise ValueError(f"stable and canary are the same version {stable!r}")
        if canary_percent == 0:
            raise ValueError(
                "refusing to write weight 0 for the canary: AgentField treats 0 as 100; "
                "take the challenger out of rotation by scaling it to zero instead"
            )
        canary_share = canary_percent * scale // 100
        shares = {stable: max(MIN_SHARE, scale - canary_share), canary: canary_share}
    for version in others:
        shares.setdefault(version, MIN_SHARE)
    return shares


def effective_share(raw: int) -> int:
    """The share AgentField routes with: a weight of 0 or less counts as 100.

    execute.go:1591-1596 (``if w <= 0 { w = 100 }``), the same in the versions read.
    """
    return raw if raw > 0 else 100


def effective_percentages(shares: Mapping[str, int]) -> dict[str, float]:
    """Each version's percentage of traffic, ``w_i / sum(w) * 100`` with 0 counted as 100.

    Parameters
    ----------
    shares
        Version to raw weight, as read back.

    Returns
    -------
    dict
        Version to percentage; empty for no versions.
    """
    effective = {version: effective_share(raw) for version, raw in shares.items()}
    total = sum(effective.values())
    return {version: share * 100.0 / total for version, share in effective.items()} if total else {}


def readback(
    shares: Mapping[str, int],
    *,
    stable: str,
    canary: str | None,
    ndigits: int = 2,
) -> list[VersionWeight]:
    """Turn raw weights read back from the backend into status entries.

    Parameters
    ----------
    shares
        Version to raw weight, as read back.
    stable, canary
        Which versions play which role; any other is ``other``.
    ndigits
        Rounding of the percentages (status is for people).

    Returns
    -------
    list of VersionWeight
        Stable first, then canary, then the others by version.
    """
    percentages = effective_percentages(shares)

    def role(version: str) -> str:
        if version == stable:
            return ROLE_STABLE
        if version == canary:
            return ROLE_CANARY
        return ROLE_OTHER

    order = {ROLE_STABLE: 0, ROLE_CANARY: 1, ROLE_OTHER: 2}
    return [
        VersionWeight(
            version=version,
            percent=round(percentages[version], ndigits),
            raw=raw,
            role=role(version),
        )
        for version, raw in sorted(shares.items(), key=lambda item: (order[role(item[0])], item[0]))
    ]
