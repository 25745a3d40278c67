"""The up-front refusal of a challenger AgentField would hand all the traffic to.

AgentField's ``GetAgent`` is ``ORDER BY CASE WHEN version='' THEN 0 ELSE 1 END, version ASC
LIMIT 1`` (Agent-Field/agentfield control-plane/internal/storage/local.go:4551 at 0.1.128-rc.3),
and execute uses that row (control-plane/internal/handlers/execute_prepare.go, "Version-aware
agent resolution"): the smallest version *string* gets every call.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devenv.agentfield_standin import AgentRow, StandinState
from promptloop.rollout.exposure import agentfield_sorts_before, ordering_problem


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("2.10.0", "2.9.0"),  # the example: a string, not a semver comparison
        ("1.0.0-rc1", "1.0.0-rc2"),
        ("10.0.0", "2.0.0"),
        ("", "0.0.1"),  # the unversioned row comes first of all
        ("1.0.0", "1.0.0-rc1"),  # a prefix sorts first: the stable 1.0.0 keeps its traffic...
    ],
)
def test_agentfield_order(left: str, right: str) -> None:
    assert agentfield_sorts_before(left, right)
    assert not agentfield_sorts_before(right, left)


def test_a_version_never_sorts_before_itself() -> None:
    assert not agentfield_sorts_before("2.0.0", "2.0.0")


@given(st.lists(st.from_regex(r"\A[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\Z"), min_size=1, max_size=6))
def test_the_order_is_the_one_the_standin_routes_by(versions: list[str]) -> None:
    # The stand-in's GetAgent (pinned against the Go source in its own tests) picks the version
    # that sorts before every other one here.
    state = StandinState()
    for version in versions:
        state.rows[("n", version)] = _row("n", version)
    chosen = state.get_agent("n")
    assert chosen is not None
    assert not any(agentfield_sorts_before(v, chosen.version) for v in versions)


def _row(node: str, version: str) -> AgentRow:
    now = datetime.now(UTC)
    return AgentRow(
        id=node,
        version=version,
        group_id=node,
        team_id="default",
        base_url="http://127.0.0.1:1",
        traffic_weight=100,
        deployment_type="long_running",
        reasoners=[],
        skills=[],
        communication_config={},
        health_status="active",
        lifecycle_status="ready",
        last_heartbeat=now,
        registered_at=now,
        instance_id="",
        features={},
        metadata={},
        proposed_tags=[],
        approved_tags=[],
    )


@pytest.mark.parametrize(
    ("version", "stable", "registered", "blamed"),
    [
        ("2.10.0", "2.9.0", [], "the stable version 2.9.0"),
        ("1.0.0-rc1", "1.0.0-rc2", [], "the stable version 1.0.0-rc2"),
        ("10.0.0", "9.0.0", ["9.0.0"], "the stable version 9.0.0"),
        # A retired version stays registered forever (AgentField has no route that deletes one).
        ("2.5.0", "2.3.0", ["2.3.0", "2.6.0"], "version 2.6.0, still registered for the node"),
        ("3.0.0", "3.0.0-beta", ["3.0.0-beta"], "the stable version 3.0.0-beta"),  # a prefix
    ],
)
def test_a_challenger_that_would_sort_first_is_refused(
    version: str, stable: str, registered: list[str], blamed: str
) -> None:
    problem = ordering_problem(version, stable=stable, registered=registered)
    assert problem is not None
    assert f"version {version} sorts, as a string, before {blamed}" in problem
    assert "ORDER BY version='' desc, version ASC LIMIT 1" in problem
    assert "100% of the traffic before anyone approved it" in problem
    assert "gatewayAPI" in problem


def test_the_suggested_version_really_sorts_after_everything() -> None:
    problem = ordering_problem("2.10.0", stable="2.9.0", registered=["2.9.0", "2.8.0"])
    assert problem is not None
    assert "(e.g. 2.9.1)" in problem
    suggestion = "2.9.1"
    assert ordering_problem(suggestion, stable="2.9.0", registered=["2.9.0", "2.8.0"]) is None


@pytest.mark.parametrize(
    ("version", "stable", "registered"),
    [
        ("2.1.0", "2.0.0", ["2.0.0"]),
        ("2.10.0", "2.1.0", ["2.1.0"]),  # "2.1.0" < "2.10.0" as strings too
        ("3.0.0", "2.9.0", ["2.9.0", "2.10.0"]),
        ("2.0.0", "2.0.0", []),  # the same version is another check's business
        ("2.1.0", "2.0.0", ["2.1.0"]),  # the challenger's own registration is not a rival
    ],
)
def test_a_challenger_that_sorts_after_everything_is_allowed(
    version: str, stable: str, registered: list[str]
) -> None:
    assert ordering_problem(version, stable=stable, registered=registered) is None
