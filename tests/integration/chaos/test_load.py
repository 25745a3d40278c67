"""Load on one rollout (issue 15, Deliver 5): many proposals applied at once to one rollout.

Exactly one becomes the challenger; the rest wait (Pending, "queued behind" it) in creation
order and are started in turn as each predecessor ends; deleting queued proposals mid-canary
changes nothing else (the active canary's status and the router's weights stay as they were).
Names are random so that creation order and name order differ. Kubernetes records creation to
the second only; within a second the operator takes versions in semver order
(``rollout/queue.py``), and the versions here are filed in increasing order, as improvers file
them, so the expected order is the order of creation.
"""

from __future__ import annotations

import uuid

import pytest

from tests.integration.chaos.common import GROUP, VERSION, api_client, sweep_for_secrets, wait_until
from tests.integration.chaos.ledger import BUDGET, LEDGER, rng
from tests.integration.conftest import Scenario

pytestmark = pytest.mark.cluster

ACTIVE = {"Rendered", "Canary", "AwaitingApproval"}
PROMPT = "Classify the ticket as billing, bug, or other. Refunds are billing. Variant {}."


def test_many_proposals_queue_in_creation_order_and_start_in_turn(scenario: Scenario) -> None:
    scenario.setup(canary={"minSamples": 100000, "progressDeadline": "5m"})
    scenario.start_operator()
    scenario.wait_rollout(lambda r: (r.get("status") or {}).get("phase") == "Stable", "Stable")
    api = api_client(scenario.kube.kubeconfig)
    row = LEDGER.row("load: proposals on one rollout")
    random = rng("load")
    names = [
        f"load-{uuid.UUID(int=random.getrandbits(128)).hex[:8]}"
        for _ in range(BUDGET.load_proposals)
    ]
    # Applied at once: one create after another, as fast as the API server takes them.
    for i, name in enumerate(names):
        api.create_namespaced_custom_object(
            GROUP,
            VERSION,
            scenario.namespace,
            "promptproposals",
            {
                "apiVersion": "promptloop.dev/v1alpha1",
                "kind": "PromptProposal",
                "metadata": {"name": name},
                "spec": {
                    "rolloutRef": {"name": "classifier"},
                    "version": f"2.1.{i + 1}",
                    "systemPrompt": PROMPT.format(i),
                },
            },
        )
    row.injected = len(names)
    expected = list(names)
    created_at = {
        p["metadata"]["name"]: p["metadata"]["creationTimestamp"]
        for p in api.list_namespaced_custom_object(
            GROUP, VERSION, scenario.namespace, "promptproposals"
        )["items"]
    }
    row.notes["distinct_creation_seconds"] = len(set(created_at.values()))

    def phases() -> dict[str, dict]:  # type: ignore[type-arg]
        items = api.list_namespaced_custom_object(
            GROUP, VERSION, scenario.namespace, "promptproposals"
        )["items"]
        return {p["metadata"]["name"]: p.get("status") or {} for p in items}

    def one_active(candidates: list[str]) -> str | None:
        now = phases()
        active = [n for n, s in now.items() if s.get("phase") in ACTIVE]
        if len(active) > 1:
            row.violations.append(f"{len(active)} challengers at once: {active}")
        queued = [n for n in candidates if now.get(n, {}).get("phase") == "Pending"]
        if len(active) == 1 and len(queued) == len(candidates) - 1:
            return active[0]
        return None

    started: list[str] = []
    deleted: list[str] = []
    remaining = list(expected)
    while remaining:
        active = wait_until(lambda: one_active(remaining), timeout=60)
        if active is None:
            row.violations.append(f"no single challenger with {len(remaining)} left: {phases()}")
            break
        started.append(active)
        now = phases()
        for name in remaining:
            if name != active and now[name].get("message") != f"queued behind {active}":
                row.violations.append(
                    f"{name}: {now[name].get('message')!r}, not queued behind {active}"
                )
        if active != remaining[0]:
            row.violations.append(f"started {active} while {remaining[0]} was created first")
        remaining.remove(active)
        if len(started) == max(1, len(expected) // 3) and len(remaining) > 3:
            # Mid-canary, delete a few queued ones: nothing else may change.
            before = scenario.rollout()["status"]
            weights = scenario.agents.weights() if scenario.agents else {}
            for name in random.sample(remaining, 3):
                scenario.kube.kubectl("delete", "pp", name, "-n", scenario.namespace)
                remaining.remove(name)
                deleted.append(name)
            after = scenario.rollout()["status"]
            for key in ("phase", "canary", "stableVersion"):
                if before.get(key) != after.get(key):
                    row.violations.append(f"deleting queued proposals changed status.{key}")
            if scenario.agents and scenario.agents.weights() != weights:
                row.violations.append("deleting queued proposals changed the router's weights")
            if phases()[active].get("phase") not in ACTIVE:
                row.violations.append("deleting queued proposals ended the active canary")
        scenario.kube.kubectl(
            "annotate", "pp", active, "-n", scenario.namespace, "promptloop.dev/rejected=true"
        )
        if wait_until(lambda a=active: phases()[a].get("phase") == "Rejected", timeout=30) is None:
            row.violations.append(f"{active} not Rejected within 30 s")
    row.recovered = len(started)
    row.notes["started_in_order"] = started == [n for n in expected if n not in deleted]
    row.notes["deleted_mid_canary"] = deleted
    sweep_for_secrets(scenario, [scenario.agentfield.token], during="load")
    assert len(started) + len(deleted) == len(expected)
    assert not row.violations, "\n".join(row.violations[:20])
