"""The pydantic models: the samples parse, defaults and bounds hold, durations parse, and the
checked-in CRDs are exactly what the models generate."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from promptloop.api import AgentRollout, CanaryPolicy, PromptProposal, RolloutPhase
from promptloop.api.common import from_cluster, parse_duration
from promptloop.api.crdgen import crd_for, render_all

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "examples" / "samples"


def _load(name: str) -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((SAMPLES / name).read_text())  # type: ignore[no-any-return]


def test_checked_in_crds_match_the_models() -> None:
    for name, text in render_all().items():
        path = ROOT / "crds" / name
        assert path.exists(), f"{path} missing: run `make crds`"
        assert path.read_text() == text, f"{path} drifted from the models: run `make crds`"


def test_samples_parse() -> None:
    rollout = AgentRollout.model_validate(_load("agentrollout.yaml"))
    assert rollout.spec.agent.node_id == "classifier"
    assert rollout.spec.router.agentfield is not None
    assert rollout.spec.router.agentfield.token_secret_ref.key == "token"
    assert rollout.spec.metrics.prometheus is not None
    assert "{{ version }}" in rollout.spec.metrics.prometheus.total_query
    assert rollout.status.phase is None
    proposal = PromptProposal.model_validate(_load("promptproposal.yaml"))
    assert proposal.spec.version == "2.1.0"
    assert proposal.spec.approved is None


def test_wire_form_round_trips_in_camel_case() -> None:
    raw = _load("agentrollout.yaml")
    wire = AgentRollout.model_validate(raw).to_wire()
    assert wire["spec"]["stable"]["deploymentName"] == "classifier"
    assert wire["spec"]["canary"]["initialWeight"] == 5
    assert AgentRollout.model_validate(wire).to_wire() == wire


def test_canary_defaults() -> None:
    policy = CanaryPolicy()
    assert (policy.initial_weight, policy.max_step, policy.floor, policy.ceiling) == (5, 10, 0, 50)
    assert policy.alpha == 0.05


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("initial_weight", 101),
        ("max_step", 0),
        ("alpha", 0.5),
        ("min_samples", 0),
        ("interval", "5 minutes"),
    ],
)
def test_canary_bounds(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        CanaryPolicy.model_validate({field: value})


def test_unknown_spec_fields_are_errors() -> None:
    raw = _load("agentrollout.yaml")
    raw["spec"]["canary"]["stepSize"] = 3
    with pytest.raises(ValidationError, match="stepSize"):
        AgentRollout.model_validate(raw)


def test_objects_read_from_the_cluster_ignore_fields_of_a_newer_crd() -> None:
    # An older CLI (or operator) against a newer CRD: the API server returns fields this model
    # does not know, at the top of the spec and nested; reading must keep working.
    raw = _load("agentrollout.yaml")
    raw["spec"]["canary"]["stepSize"] = 3
    raw["spec"]["escalation"] = {"pager": {"channel": "#rollouts"}}
    raw["status"] = {"phase": "Stable", "stableVersion": "2.0.0", "newerStatusField": {"a": 1}}
    rollout = from_cluster(AgentRollout, raw)
    assert rollout.spec.canary.max_step == raw["spec"]["canary"]["maxStep"]
    assert rollout.status.phase is RolloutPhase.STABLE
    assert "stepSize" not in str(rollout.to_wire())
    proposal_raw = _load("promptproposal.yaml")
    proposal_raw["spec"]["evidence"]["newEvidenceKind"] = [1, 2]
    proposal_raw["spec"]["reviewers"] = ["alice"]
    assert from_cluster(PromptProposal, proposal_raw).spec.version == "2.1.0"
    # Known fields are still validated: a wrong type is an error, not ignored.
    raw["spec"]["canary"]["maxStep"] = "lots"
    with pytest.raises(ValidationError, match="maxStep"):
        from_cluster(AgentRollout, raw)
    # And without the read context, an unknown field stays an error (a typo in code).
    with pytest.raises(ValidationError, match="reviewers"):
        PromptProposal.model_validate(proposal_raw)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("1m30s", timedelta(seconds=90)),
        ("1.5h", timedelta(hours=1.5)),
        ("250ms", timedelta(milliseconds=250)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "1 m", "-5s", "1d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_crd_schema_is_structural_and_described() -> None:
    crd = crd_for(AgentRollout)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def walk(node: dict, path: str) -> None:  # type: ignore[type-arg]
        assert "$ref" not in node and "anyOf" not in node, path
        assert "type" in node or "x-kubernetes-preserve-unknown-fields" in node, path
        for name, sub in node.get("properties", {}).items():
            if (path, name) != ("AgentRollout", "metadata"):
                assert sub.get("description"), f"{path}.{name}"
            walk(sub, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(schema, "AgentRollout")
    phases = schema["properties"]["status"]["properties"]["phase"]["enum"]
    assert phases == [p.value for p in RolloutPhase]
    assert crd["spec"]["names"]["shortNames"] == ["ar"]
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}
