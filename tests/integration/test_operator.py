"""The operator on the real API server with the AgentField stand-in, running as a subprocess
under the shipped ServiceAccount and ClusterRole: the disposal side of the loop end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.conftest import Scenario

pytestmark = pytest.mark.cluster

BETTER = "Classify the ticket as billing, bug, or other. Refunds are billing. One word."


def test_happy_path_to_promoted(scenario: Scenario) -> None:
    scenario.setup(stable_failure_rate=0.30)
    scenario.start_operator()
    scenario.wait_rollout(lambda r: r.get("status", {}).get("phase") == "Stable", "Stable")
    scenario.propose("classifier-2-1-0", "2.1.0", BETTER)

    # Rendered: an immutable prompt ConfigMap and a Deployment owned by the proposal.
    rendered = scenario.wait_proposal_phase("classifier-2-1-0", "Rendered", timeout=30)
    deployment = scenario.get("deployment", rendered["status"]["deploymentName"])
    assert deployment["metadata"]["ownerReferences"][0]["name"] == "classifier-2-1-0"
    config_map = scenario.get("configmap", rendered["status"]["configMapName"])
    assert config_map["immutable"] is True
    assert config_map["data"]["system-prompt"] == BETTER

    # The challenger's agent starts and registers (what its pod would do).
    assert scenario.agents is not None
    scenario.agents.register("2.1.0", 0.02)

    awaiting = scenario.wait_proposal_phase("classifier-2-1-0", "AwaitingApproval", timeout=90)
    rollout = scenario.rollout()
    assert rollout["status"]["phase"] == "AwaitingApproval"
    assert rollout["status"]["canary"]["weight"] < 50
    assert "kubectl patch promptproposal classifier-2-1-0" in awaiting["status"]["message"]
    weights = scenario.agents.weights()
    assert weights["2.1.0"] == rollout["status"]["canary"]["weight"] * 100

    scenario.kube.kubectl(
        "patch",
        "pp",
        "classifier-2-1-0",
        "-n",
        scenario.namespace,
        "--type",
        "merge",
        "-p",
        '{"spec":{"approved":true}}',
    )
    scenario.wait_rollout(
        lambda r: (r["status"].get("canary") or {}).get("weight", 0) >= 50,
        "the ceiling weight after approval",
        timeout=15,
    )
    promoted = scenario.wait_proposal_phase("classifier-2-1-0", "Promoted", timeout=120)
    assert promoted["status"]["approval"]["promptDigest"] == promoted["status"]["promptDigest"]
    rollout = scenario.rollout()
    assert rollout["status"]["stableVersion"] == "2.1.0"
    assert rollout["status"]["phase"] == "Stable"
    weights = scenario.agents.weights()
    assert weights["2.1.0"] == 10000 and weights["2.0.0"] == 1
    # The user's Deployment was never modified by the operator.
    user = json.loads(
        scenario.kube.kubectl(
            "get",
            "deployment",
            "classifier",
            "-n",
            scenario.namespace,
            "-o",
            "json",
            "--show-managed-fields",
        ).stdout
    )
    managers = {entry["manager"] for entry in user["metadata"]["managedFields"]}
    assert managers and "promptloop-operator" not in managers
    assert user["metadata"]["generation"] == 1


def _status(rollout: dict) -> dict:  # type: ignore[type-arg]
    return rollout.get("status", {})  # type: ignore[no-any-return]


def _weight(rollout: dict) -> int | None:  # type: ignore[type-arg]
    return (_status(rollout).get("canary") or {}).get("weight")


def _condition(rollout: dict, type_: str) -> dict:  # type: ignore[type-arg]
    return next((c for c in _status(rollout).get("conditions", []) if c["type"] == type_), {})


def _canary_running(scenario: Scenario, version: str = "2.1.0", failure_rate: float = 0.02) -> None:
    """Propose, let the challenger 'start' and register, wait until it holds traffic."""
    scenario.propose("classifier-2-1-0", "2.1.0", BETTER)
    scenario.wait_proposal_phase("classifier-2-1-0", "Rendered", timeout=30)
    assert scenario.agents is not None
    scenario.agents.register(version, failure_rate)
    scenario.wait_rollout(lambda r: (_weight(r) or 0) > 0, "the canary seeded", timeout=30)


def test_worse_challenger_rolls_back_to_the_floor(scenario: Scenario) -> None:
    scenario.setup(stable_failure_rate=0.05)
    scenario.start_operator()
    _canary_running(scenario, failure_rate=0.45)
    rolled = scenario.wait_proposal_phase("classifier-2-1-0", "RolledBack", timeout=60)
    assert "rolled back" in rolled["status"]["message"]
    rollout = scenario.rollout()
    assert _status(rollout)["phase"] == "RolledBack"
    assert _status(rollout).get("canary") is None
    # Floor 0: the challenger is taken out of rotation by scaling it to zero.
    deployment = scenario.get("deployment", rolled["status"]["deploymentName"])
    assert deployment["spec"]["replicas"] == 0
    assert scenario.agents is not None
    weights = scenario.agents.weights()
    assert weights["2.0.0"] == 10000 and weights["2.1.0"] == 1
    assert "RolledBack" in scenario.events("classifier-2-1-0")


def test_too_few_samples_holds(scenario: Scenario) -> None:
    scenario.setup(canary={"minSamples": 100000})
    scenario.start_operator()
    _canary_running(scenario)
    seen: set[str] = set()

    def several_holds(rollout: dict) -> bool:  # type: ignore[type-arg]
        decision = _status(rollout).get("decision") or {}
        if decision.get("verdict") == "hold" and decision.get("samplesNeeded"):
            seen.add(decision["decidedAt"])
        return len(seen) >= 3

    rollout = scenario.wait_rollout(several_holds, "three holding ticks", timeout=30)
    assert _weight(rollout) == 10
    assert "need about" in _status(rollout)["decision"]["reason"].lower()
    assert scenario.proposal("classifier-2-1-0")["status"]["phase"] == "Canary"


def test_bad_token_is_forbidden_and_changes_nothing(scenario: Scenario) -> None:
    scenario.setup(token="not-the-token")
    scenario.start_operator()
    rollout = scenario.wait_rollout(
        lambda r: _condition(r, "RouterReachable").get("reason") == "Forbidden",
        "RouterReachable=False/Forbidden",
        timeout=30,
    )
    assert _condition(rollout, "RouterReachable")["status"] == "False"
    assert "not-the-token" not in str(rollout)
    assert scenario.agents is not None
    assert scenario.agents.weights() == {"2.0.0": 100}


def test_traffic_not_honoured_holds(scenario: Scenario) -> None:
    scenario.setup(honour_weights=False)
    scenario.start_operator()
    _canary_running(scenario)
    rollout = scenario.wait_rollout(
        lambda r: _condition(r, "TrafficVerified").get("status") == "False",
        "TrafficVerified=False",
        timeout=30,
    )
    assert "does not seem to honour weights" in _condition(rollout, "TrafficVerified")["message"]
    assert _weight(rollout) == 10
    assert _status(rollout)["decision"]["verdict"] == "hold"


def test_reregistration_resets_weight_and_it_is_reasserted(scenario: Scenario) -> None:
    scenario.setup(canary={"minSamples": 100000})
    scenario.start_operator()
    _canary_running(scenario)
    assert scenario.agents is not None
    scenario.wait_rollout(
        lambda r: scenario.agents is not None and scenario.agents.weights().get("2.1.0") == 1000,
        "canary weight 10% written",
        timeout=30,
    )
    scenario.agents.register("2.1.0", 0.02)  # the pod restarted: AgentField resets to 100
    assert scenario.agents.weights()["2.1.0"] == 100
    scenario.wait_rollout(
        lambda r: scenario.agents is not None and scenario.agents.weights().get("2.1.0") == 1000,
        "the weight re-asserted",
        timeout=15,
    )


def test_invalid_proposals_are_marked_without_side_effects(scenario: Scenario) -> None:
    scenario.setup()
    scenario.start_operator()
    scenario.wait_rollout(lambda r: _status(r).get("phase") == "Stable", "Stable")
    scenario.apply(
        {
            "apiVersion": "promptloop.dev/v1alpha1",
            "kind": "PromptProposal",
            "metadata": {"name": "orphan"},
            "spec": {"rolloutRef": {"name": "nope"}, "version": "3.0.0", "systemPrompt": "x"},
        }
    )
    scenario.propose("same-as-stable", "2.0.0", BETTER)
    scenario.propose(
        "unchanged", "2.2.0", "Classify the ticket as billing, bug, or other. One word."
    )
    orphan = scenario.wait_proposal_phase("orphan", "Invalid", timeout=30)
    assert "AgentRollout nope not found" in orphan["status"]["message"]
    same = scenario.wait_proposal_phase("same-as-stable", "Invalid", timeout=30)
    assert "is the stable version" in same["status"]["message"]
    unchanged = scenario.wait_proposal_phase("unchanged", "Invalid", timeout=30)
    assert "identical to the stable prompt" in unchanged["status"]["message"]
    assert "Invalid" in scenario.events("unchanged")
    deployments = scenario.kube.kubectl(
        "get", "deploy", "-n", scenario.namespace, "-o", "name"
    ).stdout.split()
    assert deployments == ["deployment.apps/classifier"]
    # A duplicate version: the later proposal is invalid, the earlier one proceeds.
    scenario.propose("first", "2.1.0", BETTER)
    scenario.wait_proposal_phase("first", "Rendered", timeout=30)
    scenario.propose("duplicate", "2.1.0", BETTER + " Be terse.")
    duplicate = scenario.wait_proposal_phase("duplicate", "Invalid", timeout=30)
    assert "already proposed by first" in duplicate["status"]["message"]


def test_deleting_a_proposal_mid_canary_restores_the_stable(scenario: Scenario) -> None:
    scenario.setup(canary={"minSamples": 100000})
    scenario.start_operator()
    _canary_running(scenario)
    deployment = scenario.proposal("classifier-2-1-0")["status"]["deploymentName"]
    scenario.kube.kubectl("delete", "pp", "classifier-2-1-0", "-n", scenario.namespace)
    rollout = scenario.rollout()
    assert _status(rollout)["phase"] == "Stable"
    assert _status(rollout).get("canary") is None
    assert scenario.agents is not None
    assert scenario.agents.weights()["2.0.0"] == 10000
    assert scenario.agents.weights()["2.1.0"] == 1

    def collected() -> bool:
        proc = scenario.kube.kubectl(
            "get", "deploy", deployment, "-n", scenario.namespace, check=False
        )
        return proc.returncode != 0 and "NotFound" in proc.stderr

    from tests.integration.harness import wait_for

    wait_for(collected, timeout=60, what="the challenger Deployment garbage-collected")
    user = scenario.get("deployment", "classifier")
    assert user["spec"]["replicas"] == 1


def test_second_proposal_queues_then_runs(scenario: Scenario) -> None:
    # The first canary holds (too few samples) so that the queue can be observed.
    scenario.setup(canary={"minSamples": 100000})
    scenario.start_operator()
    _canary_running(scenario)
    scenario.propose("classifier-2-2-0", "2.2.0", BETTER + " Outages are bugs.")
    queued = scenario.wait_proposal_phase("classifier-2-2-0", "Pending", timeout=30)
    assert queued["status"]["message"] == "queued behind classifier-2-1-0"
    deployments = scenario.kube.kubectl(
        "get", "deploy", "-n", scenario.namespace, "-o", "name"
    ).stdout.split()
    assert "deployment.apps/classifier-v2-2-0" not in deployments
    # A queued proposal rejected before its turn never gets children.
    scenario.propose("classifier-2-3-0", "2.3.0", BETTER + " Logins are bugs.")
    scenario.wait_proposal_phase("classifier-2-3-0", "Pending", timeout=30)
    scenario.kube.kubectl(
        "annotate",
        "pp",
        "classifier-2-3-0",
        "-n",
        scenario.namespace,
        "promptloop.dev/rejected=true",
    )
    scenario.wait_proposal_phase("classifier-2-3-0", "Rejected", timeout=30)
    # The active one ends (rejected here); the queued one takes its place at once.
    scenario.kube.kubectl(
        "annotate",
        "pp",
        "classifier-2-1-0",
        "-n",
        scenario.namespace,
        "promptloop.dev/rejected=true",
    )
    scenario.wait_proposal_phase("classifier-2-1-0", "Rejected", timeout=30)
    scenario.wait_proposal_phase("classifier-2-2-0", "Rendered", timeout=30)
    rollout = scenario.rollout()
    assert _status(rollout)["canary"]["version"] == "2.2.0"
    assert scenario.proposal("classifier-2-3-0")["status"]["phase"] == "Rejected"
    deployments = scenario.kube.kubectl(
        "get", "deploy", "-n", scenario.namespace, "-o", "name"
    ).stdout.split()
    assert "deployment.apps/classifier-v2-3-0" not in deployments


def test_withdrawn_approval_rejects(scenario: Scenario) -> None:
    scenario.setup(canary={"minSamples": 100000})
    scenario.start_operator()
    _canary_running(scenario)
    patch = ["patch", "pp", "classifier-2-1-0", "-n", scenario.namespace, "--type", "merge", "-p"]
    scenario.kube.kubectl(*patch, '{"spec":{"approved":true}}')
    scenario.wait_rollout(
        lambda r: bool((_status(r).get("canary") or {}).get("approved")), "approval recorded"
    )
    approved = scenario.proposal("classifier-2-1-0")
    assert approved["status"]["approval"]["approvedBy"] == "kubectl-patch"
    assert _weight(scenario.rollout()) == 10  # early approval skips no evidence
    scenario.kube.kubectl(*patch, '{"spec":{"approved":false}}')
    rejected = scenario.wait_proposal_phase("classifier-2-1-0", "Rejected", timeout=30)
    assert "approval withdrawn" in rejected["status"]["message"]


def test_sigkill_mid_canary_neither_double_steps_nor_forgets(scenario: Scenario) -> None:
    scenario.setup(stable_failure_rate=0.30, canary={"interval": "4s", "maxStep": 10})
    operator = scenario.start_operator()
    _canary_running(scenario)
    stepped = scenario.wait_rollout(
        lambda r: (_status(r).get("canary") or {}).get("steps", 0) >= 1, "a first step", timeout=60
    )
    operator.kill()
    step_at = stepped["status"]["canary"]["lastStepAt"]
    weight = _weight(stepped)
    scenario.start_operator()
    after = scenario.wait_rollout(
        lambda r: (_status(r).get("canary") or {}).get("lastStepAt") not in (None, step_at),
        "the next step after the restart",
        timeout=60,
    )
    gap = datetime.fromisoformat(after["status"]["canary"]["lastStepAt"].replace("Z", "+00:00")) - (
        datetime.fromisoformat(step_at.replace("Z", "+00:00"))
    )
    assert gap.total_seconds() >= 3, f"stepped again {gap} after the previous step"
    assert (_weight(after) or 0) - (weight or 0) <= 10
    assert scenario.agents is not None
    scenario.wait_rollout(
        lambda r: (
            scenario.agents is not None
            and scenario.agents.weights().get("2.1.0") == (_weight(r) or 0) * 100
        ),
        "router weights converge to status",
        timeout=15,
    )


def test_agentfield_down_and_back_holds_then_resumes(scenario: Scenario, tmp_path: Path) -> None:
    """AgentField goes away mid-canary: hold (never roll back on missing data), then resume."""
    from devenv.agentfield import AgentFieldHandle
    from tests.integration.harness import free_port, wait_for

    port, token = free_port(), "outage-test-token"

    def start_standin() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devenv.agentfield_standin", "--port", str(port)],
            env=dict(os.environ, AGENTFIELD_CONNECTOR_TOKEN=token),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                return bool(response.status == 200)

        wait_for(healthy, timeout=15, what="the stand-in")
        return proc

    standin = start_standin()
    try:
        scenario.agentfield = AgentFieldHandle(
            url=f"http://127.0.0.1:{port}", token=token, pid=standin.pid, state_dir=tmp_path
        )
        scenario.setup(canary={"minSamples": 100000, "progressDeadline": "5s", "interval": "1s"})
        scenario.start_operator()
        _canary_running(scenario)
        standin.terminate()
        standin.wait(timeout=10)
        down = scenario.wait_rollout(
            lambda r: _condition(r, "RouterReachable").get("reason") == "Unavailable",
            "RouterReachable=False/Unavailable",
            timeout=30,
        )
        assert _condition(down, "RouterReachable")["status"] == "False"
        # Longer than progressDeadline: missing data must not roll the challenger back.
        held = scenario.wait_rollout(
            lambda r: (
                _condition(r, "RouterReachable").get("status") == "False"
                and (
                    datetime.now(UTC)
                    - datetime.fromisoformat(
                        _condition(r, "RouterReachable")["lastTransitionTime"].replace(
                            "Z", "+00:00"
                        )
                    )
                ).total_seconds()
                > 7
            ),
            "an outage longer than progressDeadline",
            timeout=30,
        )
        assert _status(held)["phase"] == "Progressing"
        assert scenario.proposal("classifier-2-1-0")["status"]["phase"] == "Canary"

        standin = start_standin()
        assert scenario.agents is not None
        scenario.agents.register("2.0.0", 0.3)  # the agents re-register with the new process
        scenario.agents.register("2.1.0", 0.02)
        back = scenario.wait_rollout(
            lambda r: (
                _condition(r, "RouterReachable").get("status") == "True"
                and scenario.agents is not None
                and scenario.agents.weights().get("2.1.0") == (_weight(r) or 0) * 100
            ),
            "the router reachable and weights re-asserted",
            timeout=30,
        )
        assert _status(back)["phase"] == "Progressing"
    finally:
        standin.terminate()
        standin.wait(timeout=10)


def test_missing_secret_is_invalid_until_it_appears(scenario: Scenario) -> None:
    scenario.setup()
    scenario.kube.kubectl("delete", "secret", "agentfield-connector", "-n", scenario.namespace)
    scenario.start_operator()
    invalid = scenario.wait_rollout(
        lambda r: _status(r).get("phase") == "Invalid", "the rollout Invalid", timeout=30
    )
    assert "agentfield-connector" in _status(invalid)["message"]
    scenario.propose("classifier-2-1-0", "2.1.0", BETTER)
    waiting = scenario.wait_proposal_phase("classifier-2-1-0", "Invalid", timeout=30)
    assert "the rollout is invalid" in waiting["status"]["message"]
    deployments = scenario.kube.kubectl(
        "get", "deploy", "-n", scenario.namespace, "-o", "name"
    ).stdout.split()
    assert deployments == ["deployment.apps/classifier"]
    assert scenario.agentfield is not None
    scenario.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "agentfield-connector"},
            "stringData": {"token": scenario.agentfield.token},
        }
    )
    scenario.wait_proposal_phase("classifier-2-1-0", "Rendered", timeout=30)
    assert _status(scenario.rollout())["phase"] == "Progressing"


def test_a_restarted_stable_is_reasserted_between_passes(scenario: Scenario) -> None:
    """A stable pod re-registering mid-canary resets its weight to 100, which would hand the
    canary the majority; the weight guard re-asserts within seconds, not at the next interval."""
    from tests.integration.harness import wait_for

    scenario.setup(canary={"interval": "30s", "progressDeadline": "5m", "minSamples": 100000})
    scenario.start_operator()
    scenario.wait_rollout(lambda r: _status(r).get("phase") == "Stable", "Stable")
    scenario.propose("classifier-2-1-0", "2.1.0", BETTER)
    rendered = scenario.wait_proposal_phase("classifier-2-1-0", "Rendered", timeout=30)

    def available() -> bool:
        deployment = scenario.get("deployment", rendered["status"]["deploymentName"])
        return bool(deployment.get("status", {}).get("availableReplicas"))

    wait_for(available, timeout=30, what="the challenger Deployment available")
    assert scenario.agents is not None
    scenario.agents.register("2.1.0", 0.02)  # a new version: the guard runs a pass now
    scenario.wait_rollout(
        lambda r: (
            _weight(r) == 10
            and scenario.agents is not None
            and scenario.agents.weights().get("2.0.0") == 9000
        ),
        "the canary seeded without waiting for the 30 s interval",
        timeout=12,
    )
    scenario.agents.register("2.0.0", 0.3)  # the stable's pod restarted
    assert scenario.agents.weights()["2.0.0"] == 100
    scenario.wait_rollout(
        lambda r: scenario.agents is not None and scenario.agents.weights().get("2.0.0") == 9000,
        "the stable's weight re-asserted well within the 30 s interval",
        timeout=12,
    )
