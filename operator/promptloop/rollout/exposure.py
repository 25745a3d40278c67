"""Would AgentField hand a challenger all the traffic before anyone approved it?

AgentField's execute route never reads the connector's weights (checked in its source up to
0.1.138-rc.16): ``prepareExecutionForTargetWithAdmission`` (``handlers/execute_prepare.go``)
calls ``GetAgent`` first, which is ``WHERE id=? ORDER BY CASE WHEN version='' THEN 0 ELSE 1
END, version ASC LIMIT 1`` (``storage/local.go``), and the weighted ``selectVersionedAgent``
runs only when the node has no row at all. So every call goes to the unversioned row, else to
the **lexicographically smallest version string**: ``2.10.0`` sorts before ``2.9.0`` and
``1.0.0-rc1`` before ``1.0.0``. A challenger whose version sorts first would take 100 % of the
traffic the moment it registers: the human gate would be void.

AgentField never forgets a version either: there is no HTTP route that deletes a row (the
storage's ``DeleteAgentVersion`` is called only by registration, for a stale unversioned row),
so every version ever registered for the node still takes part in that ordering.

Pure: the caller passes the versions AgentField lists for the node.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["agentfield_sorts_before", "ordering_problem"]


def agentfield_sorts_before(left: str, right: str) -> bool:
    """Whether ``left`` comes before ``right`` in AgentField's ``ORDER BY version ASC``.

    SQLite's default BINARY collation compares the UTF-8 bytes, which orders like Python's
    comparison of code points; an empty version (the unversioned row) comes first of all.
    """
    if left == right:
        return False
    if left == "" or right == "":
        return left == ""
    return left.encode() < right.encode()


def ordering_problem(version: str, *, stable: str, registered: Iterable[str] = ()) -> str | None:
    """Why ``version`` must not be canaried through AgentField, or None when it is safe.

    Parameters
    ----------
    version
        The proposed challenger version.
    stable
        The current stable version.
    registered
        Every version AgentField lists for the node (the challenger's own is ignored).

    Returns
    -------
    str or None
        A message for the proposal's ``Invalid`` status that explains AgentField's ordering
        and what to do, or None.
    """
    smaller = sorted(
        {v for v in [stable, *registered] if v != version and agentfield_sorts_before(version, v)}
    )
    if not smaller:
        return None
    first = smaller[0]
    which = (
        f"the stable version {stable}"
        if first == stable
        else f"version {first}, still registered for the node"
    )
    suggestion = _suggestion([stable, *registered])
    example = f" (e.g. {suggestion})" if suggestion else ""
    return (
        f"version {version} sorts, as a string, before {which}, and AgentField's execute route "
        "sends every call to the lexicographically smallest registered version (GetAgent is "
        "ORDER BY version='' desc, version ASC LIMIT 1; the weights are never read): this "
        "challenger would get 100% of the traffic before anyone approved it. Propose a version "
        f"that sorts after every registered one as a string{example}, or route with "
        "spec.router.gatewayAPI, which splits by weight"
    )


def _suggestion(others: list[str]) -> str | None:
    """A next version that sorts after every one of ``others``, when a simple bump does."""
    largest = max(others, key=lambda v: v.encode())
    parts = largest.partition("-")[0].partition("+")[0].split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    major, minor, patch = (int(p) for p in parts)
    # 2.9.0 -> 2.10.0 sorts *before* 2.9.0; 3.0.0 sorts after.
    for candidate in (f"{major}.{minor}.{patch + 1}", f"{major}.{minor + 1}.0", f"{major + 1}.0.0"):
        if all(agentfield_sorts_before(other, candidate) for other in others):
            return candidate
    return None
