"""Notifications end to end: a canary awaits approval, a person approves, CI waits on a condition.

The operator runs under its ServiceAccount with its operator-wide webhook configured by
environment variables (what the chart's ``notifications`` values set). The evidence comes from a
real Prometheus server (Debian's package) scraping the simulated agents' ``/metrics`` every
second, read with the ``prometheus`` provider as the samples configure it. A local receiver checks
each delivery's HMAC signature and counts them. The test asserts issue 14's "done when":
exactly one signed AwaitingApproval delivery carrying the approve command; ``promptloop
approve``; ``kubectl wait --for=condition=Promoted`` returns; exactly one Promoted delivery; and
nothing more after the operator restarts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Scenario
from tests.integration.harness import AgentSim, wait_for
from tests.prometheus import PrometheusServer, prometheus_server
from tests.receiver import NotificationReceiver

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

BIN = Path(sys.executable).parent
PROPOSAL = "classifier-2-1-0"
BETTER = "Classify the ticket as billing, bug, or other. Refunds are billing. One word."
KEY = "e2e-signing-key"


@pytest.fixture
def receiver() -> Iterator[NotificationReceiver]:
    server = NotificationReceiver(key=KEY)
    yield server
    server.close()


def _run(scenario: Scenario, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=str(scenario.kube.kubeconfig))
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


def _outbox(scenario: Scenario) -> list[dict[str, Any]]:
    return scenario.rollout().get("status", {}).get("notifications", [])  # type: ignore[no-any-return]


def _all_sent(scenario: Scenario, events: set[str]) -> list[dict[str, Any]] | None:
    records = _outbox(scenario)
    seen = {r["event"] for r in records}
    done = all(d["state"] == "Sent" for r in records for d in r["deliveries"])
    return records if events <= seen and done else None


def test_one_signed_delivery_per_transition_and_none_after_a_restart(
    scenario: Scenario, receiver: NotificationReceiver, tmp_path: Path
) -> None:
    sinks = {
        "PROMPTLOOP_WEBHOOK_URL": f"{receiver.url}/webhook",
        "PROMPTLOOP_WEBHOOK_SIGNING_KEY": KEY,
    }
    stack = ExitStack()
    prometheus: list[PrometheusServer] = []

    def from_prometheus(agents: AgentSim) -> dict[str, Any]:
        server = stack.enter_context(prometheus_server([agents.scrape_target], tmp_path / "prom"))
        prometheus.append(server)
        return {
            "prometheus": {
                "url": server.url,
                "totalQuery": 'sum(classifier_requests_total{version="{{ version }}"})',
                "failedQuery": 'sum(classifier_failures_total{version="{{ version }}"})',
                "timeout": "3s",
            }
        }

    with stack:
        _scenario(scenario, receiver, sinks, from_prometheus)
        # The counters the operator decided on came from the real server's scrapes.
        [series] = prometheus[0].query('classifier_requests_total{version="2.1.0"}')
        assert float(series["value"][1]) > 0  # type: ignore[index]


def _scenario(
    scenario: Scenario,
    receiver: NotificationReceiver,
    sinks: dict[str, str],
    metrics: Callable[[AgentSim], dict[str, Any]],
) -> None:
    scenario.setup(stable_failure_rate=0.30, metrics=metrics)
    operator = scenario.start_operator(env=sinks)
    scenario.propose(PROPOSAL, "2.1.0", BETTER)
    scenario.wait_proposal_phase(PROPOSAL, "Rendered", timeout=30)
    assert scenario.agents is not None
    scenario.agents.register("2.1.0", 0.02)
    scenario.wait_proposal_phase(PROPOSAL, "AwaitingApproval", timeout=120)

    # Exactly one signed AwaitingApproval delivery, with the exact approve command.
    [awaiting] = wait_for(
        lambda: receiver.deliveries("/webhook", "AwaitingApproval"),
        timeout=30,
        what="the AwaitingApproval delivery",
    )
    assert receiver.rejected == [], receiver.rejected
    body = awaiting.body
    namespace = scenario.namespace
    assert body["namespace"] == namespace and body["rollout"] == "classifier"
    assert body["proposal"] == {"name": PROPOSAL, "version": "2.1.0"}
    approve = f"kubectl promptloop approve classifier -n {namespace} --proposal {PROPOSAL}"
    assert body["commands"]["approve"] == approve
    assert body["commands"]["reject"].startswith(
        f"kubectl promptloop reject classifier -n {namespace} --proposal {PROPOSAL}"
    )
    evidence = body["evidence"]
    assert evidence["canaryTotal"] > 0 and evidence["stableTotal"] > 0
    assert evidence["verdict"] == "await-approval"
    assert awaiting.headers["X-Promptloop-Event"] == "AwaitingApproval"

    # The approve command from the notification, as a person would run it (the plugin's
    # console script is the same program as `kubectl promptloop`).
    approved = _run(scenario, str(BIN / "promptloop"), *approve.split()[2:], "--wait", "20")
    assert approved.returncode == 0, approved.stderr + approved.stdout

    # CI waits on the proposal's condition with plain kubectl.
    waited = _run(
        scenario,
        str(BIN / "kubectl"),
        "wait",
        "--for=condition=Promoted",
        f"pp/{PROPOSAL}",
        "-n",
        namespace,
        "--timeout=180s",
        timeout=200,
    )
    assert waited.returncode == 0, waited.stderr + waited.stdout
    assert "condition met" in waited.stdout

    wait_for(
        lambda: receiver.deliveries("/webhook", "Promoted"),
        timeout=30,
        what="the Promoted delivery",
    )
    records = wait_for(
        lambda: _all_sent(scenario, {"AwaitingApproval", "Promoted"}),
        timeout=30,
        what="every delivery recorded Sent in status.notifications",
    )
    assert [r["event"] for r in records] == ["AwaitingApproval", "Promoted"]
    assert len(receiver.deliveries("/webhook", "AwaitingApproval")) == 1
    assert len(receiver.deliveries("/webhook", "Promoted")) == 1
    promoted = scenario.proposal(PROPOSAL)
    conditions = {c["type"]: c for c in promoted["status"]["conditions"]}
    assert conditions["Promoted"]["status"] == "True"
    assert conditions["Approved"]["status"] == "True"
    assert conditions["RolledBack"]["status"] == "False"
    rollout_conditions = {c["type"]: c for c in scenario.rollout()["status"]["conditions"]}
    assert rollout_conditions["Completed"]["status"] == "True"
    assert rollout_conditions["Completed"]["reason"] == "Promoted"

    # Restart the operator; two full passes later (each spec change is observed by a pass),
    # nothing was sent again.
    operator.stop()
    scenario.start_operator(env=sinks)
    for min_samples in (31, 32):
        scenario.kube.kubectl(
            "patch",
            "ar",
            "classifier",
            "-n",
            namespace,
            "--type",
            "merge",
            "-p",
            f'{{"spec":{{"canary":{{"minSamples":{min_samples}}}}}}}',
        )
        generation = scenario.rollout()["metadata"]["generation"]
        scenario.wait_rollout(
            lambda r, g=generation: r.get("status", {}).get("observedGeneration") == g,
            f"a pass of the restarted operator observing generation {generation}",
            timeout=30,
        )
    assert receiver.requests == 2, [d.body["event"] for d in receiver.accepted]
    assert _all_sent(scenario, {"AwaitingApproval", "Promoted"}) is not None
