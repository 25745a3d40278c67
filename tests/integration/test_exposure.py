"""Never over-exposed on AgentField: the operator (a subprocess, shipped RBAC) with the stand-in.

AgentField's execute route calls ``GetAgent`` (``ORDER BY version='' desc, version ASC LIMIT 1``)
and never reads the weights; the stand-in routes the same way (pinned in
tests/unit/test_agentfield_standin.py). So a challenger whose version string sorts first would
take every call before approval.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import Scenario

pytestmark = pytest.mark.cluster

BETTER = "Classify the ticket as billing, bug, or other. Refunds are billing. One word."
NEVER = ("AwaitingApproval", "Promoted")


def _status(obj: dict) -> dict:  # type: ignore[type-arg]
    return obj.get("status", {})  # type: ignore[no-any-return]


def _condition(rollout: dict, type_: str) -> dict:  # type: ignore[type-arg]
    return next((c for c in _status(rollout).get("conditions", []) if c["type"] == type_), {})


def test_a_challenger_that_sorts_first_never_gets_traffic_through_execute(
    scenario: Scenario,
) -> None:
    """2.10.0 against 2.9.0, traffic sent through the stand-in's execute route: refused before
    anything is rendered, so it never serves a request and never nears approval."""
    scenario.setup(stable_version="2.9.0", via_execute=True, canary={"interval": "1s"})
    agents = scenario.agents
    assert agents is not None
    scenario.start_operator()
    scenario.wait_rollout(lambda r: _status(r).get("phase") == "Stable", "rollout Stable")
    # Traffic flows through AgentField to 2.9.0 before anything is proposed.
    deadline = time.monotonic() + 30
    while agents.versions["2.9.0"].total < 20:
        assert time.monotonic() < deadline, "no traffic reached 2.9.0 through execute"
        time.sleep(0.2)

    scenario.propose("classifier-2-10-0", "2.10.0", BETTER)
    proposal = scenario.wait_proposal_phase("classifier-2-10-0", "Invalid", timeout=30)
    message = _status(proposal)["message"]
    assert "sorts, as a string, before the stable version 2.9.0" in message
    assert "ORDER BY version='' desc, version ASC LIMIT 1" in message
    assert "Invalid" in scenario.events("classifier-2-10-0")
    # Nothing was rendered: no challenger Deployment or ConfigMap exists for it.
    deployments = scenario.kube.kubectl(
        "get", "deployments", "-n", scenario.namespace, "-o", "name"
    ).stdout.split()
    assert deployments == ["deployment.apps/classifier"]

    # Several intervals later: still refused, nothing exposed, every call served by 2.9.0.
    before = agents.versions["2.9.0"].total
    watch_until = time.monotonic() + 5
    while time.monotonic() < watch_until:
        assert _status(scenario.rollout()).get("phase") not in NEVER
        assert _status(scenario.proposal("classifier-2-10-0")).get("phase") == "Invalid"
        time.sleep(0.5)
    assert "2.10.0" not in agents.versions  # never registered, never served
    assert agents.versions["2.9.0"].total > before
    assert _status(scenario.rollout()).get("canary") is None


def test_over_exposure_is_withdrawn_within_an_interval(scenario: Scenario) -> None:
    """A challenger that receives far more than its weight (here every request: a client
    calling it directly) is scaled to zero within one interval, with TrafficVerified=False
    OverExposed, and never reaches AwaitingApproval or Promoted."""
    scenario.setup(canary={"interval": "2s", "initialWeight": 10})
    agents = scenario.agents
    assert agents is not None
    scenario.start_operator()
    scenario.propose("classifier-2-1-0", "2.1.0", BETTER)
    scenario.wait_proposal_phase("classifier-2-1-0", "Rendered", timeout=30)
    agents.register("2.1.0", 0.02)
    scenario.wait_rollout(
        lambda r: ((_status(r).get("canary") or {}).get("weight") or 0) > 0,
        "the canary seeded",
        timeout=30,
    )
    exposed_at = time.monotonic()
    agents.route_all_to = "2.1.0"
    proposal = scenario.wait_proposal_phase("classifier-2-1-0", "RolledBack", timeout=30)
    withdrawn_after = time.monotonic() - exposed_at
    rollout = scenario.rollout()
    verified = _condition(rollout, "TrafficVerified")
    assert (verified["status"], verified["reason"]) == ("False", "OverExposed")
    assert "exposed far beyond its weight" in verified["message"]
    assert _status(rollout).get("canary") is None
    assert "scaled to zero" in _status(proposal)["message"]
    assert "OverExposed" in scenario.events("classifier-2-1-0")
    # Scaled to zero: the challenger Deployment asks for no pods.
    challenger = scenario.get("deployment", _status(proposal)["deploymentName"])
    assert challenger["spec"]["replicas"] == 0
    # Within one interval of the first verifiable window (2 s interval; generous for load).
    assert withdrawn_after < 15, withdrawn_after
    assert _status(rollout).get("phase") not in NEVER
