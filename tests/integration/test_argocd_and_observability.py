"""Argo CD actions, the operator's metrics and JSON logs, ``list`` and ``-o`` on a real API server.

Argo CD itself is not run. What it does for an action is reproduced faithfully instead: run the
action's Lua on the live object, compute the JSON merge patch from the live object to the result
(argo-cd server/application/application.go, ``RunResourceAction`` -> ``patchResource``:
``jsonpatch.CreateMergePatch(liveObjBytes, newObjBytes)``) and send it as a merge patch. The Lua
runs in lupa exactly as tests/unit/test_argocd_actions.py runs it; the operator runs under the
shipped ServiceAccount and must act on the result at once.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import urllib.request
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Scenario
from tests.integration.harness import PROMPTLOOP, wait_for
from tests.unit.test_argocd_actions import merge_patch, offered, run

pytestmark = pytest.mark.cluster

PROPOSAL = "classifier-2-1-0"
BETTER = "Classify the ticket as billing, bug, or other. Refunds are billing. One word."


def argocd_action(scenario: Scenario, kind: str, name: str, action: str) -> dict[str, Any]:
    """Run an Argo CD action on the live object; returns the patch that was sent."""
    resource = "agentrollout" if kind == "AgentRollout" else "promptproposal"
    live = scenario.get(resource, name)
    assert action in offered(kind, live), f"{action} not offered on {kind} {name}"
    patch = merge_patch(live, run(kind, f"{action}.lua", copy.deepcopy(live)))
    scenario.kube.kubectl(
        "patch",
        resource,
        name,
        "-n",
        scenario.namespace,
        "--type",
        "merge",
        "-p",
        json.dumps(patch),
    )
    return patch  # type: ignore[no-any-return]


def scrape(port: int) -> dict[str, list[dict[str, str]]]:
    """The operator's /metrics: sample name -> label sets."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(dict(sample.labels))
    return out


def cli(scenario: Scenario, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=str(scenario.kube.kubeconfig))
    return subprocess.run([PROMPTLOOP, *args], capture_output=True, text=True, env=env, timeout=60)


def test_rollout_approve_action_metrics_json_logs_and_the_cli(scenario: Scenario) -> None:
    scenario.setup(stable_failure_rate=0.30)
    operator = scenario.start_operator("--log-format", "json")
    scenario.propose(PROPOSAL, "2.1.0", BETTER)
    scenario.wait_proposal_phase(PROPOSAL, "Rendered", timeout=30)
    assert scenario.agents is not None
    scenario.agents.register("2.1.0", 0.02)
    scenario.wait_proposal_phase(PROPOSAL, "AwaitingApproval", timeout=90)

    # list and -o on the live objects.
    table = cli(scenario, "list", "-n", scenario.namespace)
    assert table.returncode == 0, table.stderr
    [header, row] = table.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "PHASE", "STABLE"]
    cells = row.split()
    assert cells[:4] == ["classifier", "AwaitingApproval", "2.0.0", "2.1.0"]
    assert cells[4].endswith("%") and cells[5] == PROPOSAL
    everywhere = cli(scenario, "list", "-A", "-o", "json")
    assert everywhere.returncode == 0, everywhere.stderr
    listed = json.loads(everywhere.stdout)
    assert listed["kind"] == "List"
    assert any(item["metadata"]["namespace"] == scenario.namespace for item in listed["items"])
    shown = cli(scenario, "status", "classifier", "-n", scenario.namespace, "-o", "yaml")
    assert shown.returncode == 0, shown.stderr
    document = yaml.safe_load(shown.stdout)
    assert document["rollout"]["status"]["phase"] == "AwaitingApproval"
    assert document["proposal"]["metadata"]["name"] == PROPOSAL

    # The metrics carry the rollout, and the decisions counter has its labels.
    mine = {"namespace": scenario.namespace, "rollout": "classifier"}
    series = scrape(operator.metrics_port)
    decisions = series["promptloop_decisions_total"]
    assert any(mine.items() <= s.items() and s["verdict"] for s in decisions)
    assert "process_resident_memory_bytes" in series

    # Argo CD's approve action on the AgentRollout: the operator acts on it at once.
    patch = argocd_action(scenario, "AgentRollout", "classifier", "approve")
    digest = scenario.rollout()["status"]["canary"]["promptDigest"]
    assert patch == {
        "metadata": {"annotations": {"promptloop.dev/approve-canary": f"{PROPOSAL}@{digest}"}}
    }
    rollout = scenario.wait_rollout(
        lambda r: (
            ((r.get("status") or {}).get("canary") or {}).get("weight", 0) >= 50
            or (r.get("status") or {}).get("stableVersion") == "2.1.0"
        ),
        "the ceiling weight after the Argo CD action",
        timeout=30,
    )
    proposal = scenario.proposal(PROPOSAL)
    assert "approved" not in proposal["spec"], "the action never writes the proposal's spec"
    # Recorded as the annotation's writer (kubectl here; argocd-server under Argo CD).
    assert proposal["status"]["approval"]["approvedBy"] == "kubectl-patch"
    assert "approve" not in offered("AgentRollout", rollout)
    scenario.wait_proposal_phase(PROPOSAL, "Promoted", timeout=90)

    # The rollout goes: so do its series.
    scenario.kube.kubectl("delete", "agentrollout", "classifier", "-n", scenario.namespace)

    def gone() -> bool:
        current = scrape(operator.metrics_port)
        return not any(
            s.get("namespace") == scenario.namespace
            for name, samples in current.items()
            if name.startswith("promptloop_")
            for s in samples
        )

    wait_for(gone, timeout=30, what="the deleted rollout's series to disappear", interval=0.5)

    # Every log line is one JSON object; lines about an object name it.
    lines = [line for line in operator.log_text().splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]
    assert all("message" in r and "severity" in r for r in records)
    assert any((r.get("object") or {}).get("kind") == "AgentRollout" for r in records)
    assert scenario.agentfield.token not in operator.log_text()


def test_rollout_reject_action_rolls_the_canary_back(scenario: Scenario) -> None:
    scenario.setup(canary={"minSamples": 100000})
    scenario.start_operator()
    scenario.propose(PROPOSAL, "2.1.0", BETTER)
    scenario.wait_proposal_phase(PROPOSAL, "Rendered", timeout=30)
    assert scenario.agents is not None
    scenario.agents.register("2.1.0", 0.02)
    scenario.wait_rollout(
        lambda r: ((r.get("status") or {}).get("canary") or {}).get("weight", 0) > 0,
        "the canary at its first weight",
        timeout=45,
    )
    # A stale annotation from an earlier canary is on the rollout: it must change nothing.
    stale = {"metadata": {"annotations": {"promptloop.dev/approve-canary": "old@" + "0" * 64}}}
    scenario.kube.kubectl(
        "patch",
        "ar",
        "classifier",
        "-n",
        scenario.namespace,
        "--type",
        "merge",
        "-p",
        json.dumps(stale),
    )
    argocd_action(scenario, "AgentRollout", "classifier", "reject")
    proposal = scenario.wait_proposal_phase(PROPOSAL, "Rejected", timeout=30)
    assert proposal["status"].get("approval") is None
    assert offered("PromptProposal", proposal) == set()
    rollout = scenario.rollout()
    assert rollout["status"]["phase"] == "RolledBack"
    assert offered("AgentRollout", rollout) == set()
    assert scenario.agents.weights()["2.0.0"] == 10000
