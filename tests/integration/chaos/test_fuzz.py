"""Fuzzed input against the real API server and the operator (issue 15, Deliver 4).

Hypothesis generates AgentRollout and PromptProposal objects — valid, near-valid and hostile (see
:mod:`fuzz_objects`) — and sends each to the API server as kubectl does (strict field
validation). Every object must either be refused at admission with a message naming a field it
changed, or be accepted and brought by the operator to a phase of the API. Meanwhile a control
rollout with a canary running must keep ticking, and the operator must not crash. A second test
sends hostile prompts through the whole render path and compares the ConfigMap byte for byte.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, given, seed, settings
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException

from tests.integration.chaos.common import (
    GROUP,
    PROPOSAL_PHASES,
    ROLLOUT_PHASES,
    VERSION,
    TickWatcher,
    api_client,
    wait_until,
)
from tests.integration.chaos.fuzz_objects import (
    INJECTION,
    Example,
    proposal_examples,
    rollout_examples,
)
from tests.integration.chaos.ledger import BUDGET, LEDGER, SEED
from tests.integration.conftest import Scenario

pytestmark = pytest.mark.cluster

BETTER = "Classify the ticket as billing, bug, or other. Refunds are billing. One word."
# Accepted objects are checked and deleted in batches, so that hundreds never tick at once.
BATCH = 40
# The control rollout ticks every second; a gap this long means the operator stopped ticking it.
MAX_TICK_GAP_SECONDS = 15.0


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def _canary_running(scenario: Scenario) -> None:
    scenario.propose("control-2-1-0", "2.1.0", BETTER)
    scenario.wait_proposal_phase("control-2-1-0", "Rendered", timeout=60)
    assert scenario.agents is not None
    scenario.agents.register("2.1.0", 0.02)
    scenario.wait_rollout(
        lambda r: ((r.get("status") or {}).get("canary") or {}).get("weight", 0) > 0,
        "the control canary seeded",
        timeout=60,
    )


class Admission:
    """Sends examples, checks refusals, and brings accepted ones to a phase in batches."""

    def __init__(self, scenario: Scenario, fault_class: str, phases: set[str]) -> None:
        self.scenario = scenario
        self.api = api_client(scenario.kube.kubeconfig)
        self.row = LEDGER.row(fault_class)
        self.phases = phases
        self.pending: list[Example] = []
        self.refused = 0
        self.accepted = 0
        self.messages: dict[str, str] = {}

    def send(self, example: Example) -> None:
        self.row.injected += 1
        try:
            self.api.create_namespaced_custom_object(
                GROUP,
                VERSION,
                self.scenario.namespace,
                example.kind,
                example.body,
                field_validation="Strict",
            )
        except ApiException as error:
            self._refused(example, error)
            return
        self.accepted += 1
        self.pending.append(example)
        if len(self.pending) >= BATCH:
            self.flush()

    def _refused(self, example: Example, error: ApiException) -> None:
        try:
            message = str(json.loads(error.body).get("message", error.body))
        except (TypeError, ValueError):
            message = str(error.body)
        name = example.body["metadata"]["name"]
        if error.status not in (400, 422):
            self.row.violations.append(f"{name}: HTTP {error.status} at admission: {message[:200]}")
            return
        self.refused += 1
        if not example.mutated:
            self.row.violations.append(f"{name}: a valid object was refused: {message[:300]}")
        elif not any(n and n in message for n in example.names):
            self.row.violations.append(
                f"{name}: refused without naming {example.names}: {message[:300]}"
            )
        else:
            self.row.recovered += 1
            self.messages.setdefault(message.split(":")[0][:60], message[:160])

    def flush(self) -> None:
        """Wait until every pending object has a phase of the API, then delete them."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        plural = pending[0].kind

        def phase_of(example: Example) -> str | None:
            obj = self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.scenario.namespace, plural, example.body["metadata"]["name"]
            )
            phase: str | None = (obj.get("status") or {}).get("phase")
            return phase

        for example in pending:
            name = example.body["metadata"]["name"]
            phase = wait_until(lambda e=example: phase_of(e), timeout=60)
            if phase is None:
                self.row.violations.append(f"{name}: accepted but given no phase within 60 s")
            elif phase not in self.phases:
                self.row.violations.append(f"{name}: accepted but brought to phase {phase!r}")
            else:
                self.row.recovered += 1
        for example in pending:
            try:
                self.api.delete_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.scenario.namespace,
                    plural,
                    example.body["metadata"]["name"],
                )
            except ApiException as error:
                if error.status != 404:
                    raise


def _operator_checks(scenario: Scenario, watcher: TickWatcher, fault_class: str) -> None:
    row = LEDGER.row(fault_class)
    operator = scenario.operators[0]
    assert operator.proc is not None
    if operator.proc.poll() is not None:
        row.violations.append(f"the operator exited with {operator.proc.returncode}")
    gap = watcher.longest_gap()
    row.notes["control_rollout_longest_tick_gap_s"] = round(gap, 2)
    if gap > MAX_TICK_GAP_SECONDS:
        row.violations.append(f"the control rollout was not ticked for {gap:.1f} s")
    log = operator.log_text()
    row.notes["operator_log_tracebacks"] = log.count("Traceback")
    failures = [line for line in log.splitlines() if "failed with an exception" in line]
    row.notes["handler_failures"] = len(failures)
    row.violations.extend(f"operator: {line[:200]}" for line in failures[:5])


def test_fuzzed_objects_are_refused_with_the_field_or_brought_to_a_phase(
    scenario: Scenario,
) -> None:
    scenario.setup(canary={"minSamples": 100000})
    scenario.start_operator()
    _canary_running(scenario)
    assert scenario.agents is not None
    serial = itertools.count().__next__
    rollouts = Admission(scenario, "fuzzed AgentRollout", ROLLOUT_PHASES)
    proposals = Admission(scenario, "fuzzed PromptProposal", PROPOSAL_PHASES)

    @seed(SEED)
    @_settings(BUDGET.fuzz_rollouts)
    @given(
        example=rollout_examples(
            serial=serial,
            secret="agentfield-connector",
            agentfield_url=scenario.agentfield.url,
            metrics_url=scenario.agents.metrics_url,
        )
    )
    def send_rollout(example: Example) -> None:
        rollouts.send(example)

    @seed(SEED)
    @_settings(BUDGET.fuzz_proposals)
    @given(example=proposal_examples(serial=serial, rollouts=["classifier", "absent", "fz-0"]))
    def send_proposal(example: Example) -> None:
        proposals.send(example)

    with TickWatcher(rollouts.api, scenario.namespace, "classifier") as watcher:
        send_rollout()
        rollouts.flush()
        send_proposal()
        proposals.flush()
    for admission, fault_class in (
        (rollouts, "fuzzed AgentRollout"),
        (proposals, "fuzzed PromptProposal"),
    ):
        row = LEDGER.row(fault_class)
        row.notes.update(refused=admission.refused, accepted=admission.accepted)
        row.notes["refusals"] = sorted(admission.messages.values())[:25]
        _operator_checks(scenario, watcher, fault_class)
        assert not row.violations, "\n".join(row.violations[:20])
    # The control canary was never disturbed by what went on around it.
    control = scenario.rollout()["status"]
    assert control["canary"]["proposal"] == "control-2-1-0"
    assert scenario.proposal("control-2-1-0")["status"]["phase"] == "Canary"
    assert rollouts.accepted > 0 and rollouts.refused > 0
    assert proposals.accepted > 0 and proposals.refused > 0


prompts = st.one_of(
    st.sampled_from([p for p in INJECTION if len(p) <= 32 * 1024]),
    st.text(min_size=1, max_size=3000),
    st.builds(lambda a, b: a + b, st.sampled_from(INJECTION[:18]), st.text(max_size=200)),
)


def test_fuzzed_prompts_reach_the_config_map_byte_for_byte(scenario: Scenario) -> None:
    scenario.setup(canary={"minSamples": 100000, "progressDeadline": "5m"})
    scenario.start_operator()
    scenario.wait_rollout(lambda r: (r.get("status") or {}).get("phase") == "Stable", "Stable")
    api = api_client(scenario.kube.kubeconfig)
    row = LEDGER.row("fuzzed prompt → ConfigMap")
    counter = itertools.count(1)

    @seed(SEED)
    @_settings(BUDGET.fuzz_rendered_prompts)
    @given(prompt=prompts)
    def render(prompt: str) -> None:
        assume(prompt.strip())
        n = next(counter)
        name = f"prompt-{n}"
        row.injected += 1
        body: dict[str, Any] = {
            "apiVersion": "promptloop.dev/v1alpha1",
            "kind": "PromptProposal",
            "metadata": {"name": name},
            "spec": {
                "rolloutRef": {"name": "classifier"},
                "version": f"2.1.{n}",
                "systemPrompt": prompt,
            },
        }
        api.create_namespaced_custom_object(
            GROUP, VERSION, scenario.namespace, "promptproposals", body, field_validation="Strict"
        )
        status = wait_until(
            lambda: (
                s
                if (s := (scenario.proposal(name).get("status") or {})).get("phase")
                in ("Rendered", "Canary", "Invalid")
                else None
            ),
            timeout=60,
        )
        if status is None or status.get("phase") == "Invalid":
            found = scenario.proposal(name).get("status")
            row.violations.append(f"{name}: not rendered: {found}")
        else:
            config_map = scenario.get("configmap", status["configMapName"])
            stored = config_map["data"]["system-prompt"]
            if stored.encode() != prompt.encode():
                row.violations.append(
                    f"{name}: ConfigMap differs from the prompt ({len(prompt)} chars)"
                )
            elif status.get("promptDigest") != hashlib.sha256(prompt.encode()).hexdigest():
                row.violations.append(f"{name}: digest is not sha256 of the prompt")
            else:
                row.recovered += 1
        api.delete_namespaced_custom_object(
            GROUP, VERSION, scenario.namespace, "promptproposals", name
        )
        gone = wait_until(
            lambda: (
                scenario.kube.kubectl(
                    "get", "pp", name, "-n", scenario.namespace, check=False
                ).returncode
                != 0
            ),
            timeout=30,
        )
        if not gone:
            row.violations.append(f"{name}: not deleted within 30 s")

    render()
    assert row.injected >= 1
    assert not row.violations, "\n".join(row.violations[:20])
