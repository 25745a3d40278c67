"""Argo CD health checks (manifests/argocd/health/*.lua) run in a real Lua VM (``lupa``).

The inputs are status objects the operator actually wrote, captured from the integration tests
(``tests/data/status``, see tests/integration/status_capture.py), so a renamed phase or field
fails here instead of silently turning every Application "Unknown". Argo CD runs the scripts in
gopher-lua (Lua 5.1) with the live object as the global ``obj`` and reads ``status``/``message``
from the returned table; the scripts use nothing newer than 5.1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime

ROOT = Path(__file__).resolve().parents[2]
HEALTH = ROOT / "manifests" / "argocd" / "health"
CAPTURED = ROOT / "tests" / "data" / "status"
SCRIPTS = {
    "AgentRollout": HEALTH / "agentrollout.lua",
    "PromptProposal": HEALTH / "promptproposal.lua",
}

# The contract (issue 7): Progressing; Suspended while awaiting approval; Healthy; Degraded on
# rollback or Invalid (and on Rejected, for a proposal).
EXPECTED = {
    "AgentRollout": {
        "Pending": "Progressing",
        "Stable": "Healthy",
        "Progressing": "Progressing",
        "AwaitingApproval": "Suspended",
        "Promoting": "Progressing",
        "RolledBack": "Degraded",
        "Invalid": "Degraded",
    },
    "PromptProposal": {
        "Pending": "Progressing",
        "Rendered": "Progressing",
        "Canary": "Progressing",
        "AwaitingApproval": "Suspended",
        "Promoted": "Healthy",
        "Superseded": "Healthy",
        "RolledBack": "Degraded",
        "Rejected": "Degraded",
        "Invalid": "Degraded",
    },
}
# Captured phases that must be present: one example of each health for each kind, at least.
REQUIRED = {
    "AgentRollout": {"Stable", "Progressing", "AwaitingApproval", "RolledBack", "Invalid"},
    "PromptProposal": {
        "Canary",
        "AwaitingApproval",
        "Promoted",
        "RolledBack",
        "Rejected",
        "Invalid",
    },
}


def health(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Run the kind's script as Argo CD does: ``obj`` global in, ``{status, message}`` out."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPTS[kind].read_text())
    return {"status": result["status"], "message": result["message"]}


def captured() -> list[dict[str, Any]]:
    objects = [json.loads(path.read_text()) for path in sorted(CAPTURED.glob("*.json"))]
    assert objects, f"no captured statuses in {CAPTURED}"
    return objects


def ids(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}-{obj['status']['phase']}"


@pytest.mark.parametrize("obj", captured(), ids=ids)
def test_captured_status_gets_the_documented_health(obj: dict[str, Any]) -> None:
    kind, phase = obj["kind"], obj["status"]["phase"]
    result = health(kind, obj)
    assert result["status"] == EXPECTED[kind][phase]
    assert result["message"], "Argo CD shows the message; it must say why"
    if result["status"] in ("Degraded", "Suspended"):
        # The operator's own sentence, not a generic one.
        assert result["message"] == obj["status"]["message"]


def test_the_captured_set_covers_every_health() -> None:
    seen: dict[str, set[str]] = {}
    for obj in captured():
        seen.setdefault(obj["kind"], set()).add(obj["status"]["phase"])
    for kind, phases in REQUIRED.items():
        assert phases <= seen.get(kind, set()), f"capture {sorted(phases - seen.get(kind, set()))}"
    # A phase the scripts do not know would show as Unknown: the models must not have more.
    from promptloop.api import ProposalPhase, RolloutPhase

    assert {p.value for p in RolloutPhase} == set(EXPECTED["AgentRollout"])
    assert {p.value for p in ProposalPhase} == set(EXPECTED["PromptProposal"])


def test_awaiting_approval_says_how_to_approve() -> None:
    [proposal] = [
        o
        for o in captured()
        if o["kind"] == "PromptProposal" and o["status"]["phase"] == "AwaitingApproval"
    ]
    assert "approved" in health("PromptProposal", proposal)["message"]


@pytest.mark.parametrize("kind", sorted(SCRIPTS))
def test_no_status_yet_is_progressing(kind: str) -> None:
    result = health(kind, {"kind": kind, "metadata": {"name": "x", "generation": 1}})
    assert result == {
        "status": "Progressing",
        "message": "Waiting for the promptloop operator to report a phase",
    }


def test_a_spec_change_not_yet_observed_is_progressing() -> None:
    stable = next(
        o for o in captured() if o["kind"] == "AgentRollout" and o["status"]["phase"] == "Stable"
    )
    newer = json.loads(json.dumps(stable))
    newer["metadata"]["generation"] = stable["status"]["observedGeneration"] + 1
    result = health("AgentRollout", newer)
    assert result["status"] == "Progressing"
    assert "observe generation" in result["message"]


@pytest.mark.parametrize("kind", sorted(SCRIPTS))
def test_an_unknown_phase_is_unknown_not_healthy(kind: str) -> None:
    obj = {"kind": kind, "metadata": {"name": "x"}, "status": {"phase": "Exploded"}}
    assert health(kind, obj) == {"status": "Unknown", "message": "Unknown phase Exploded"}


def test_argocd_cm_snippet_is_the_tested_lua() -> None:
    config = yaml.safe_load((ROOT / "manifests" / "argocd" / "argocd-cm.yaml").read_text())
    assert config["kind"] == "ConfigMap" and config["metadata"]["name"] == "argocd-cm"
    for kind, script in SCRIPTS.items():
        key = f"resource.customizations.health.promptloop.dev_{kind}"
        assert config["data"][key] == script.read_text(), f"{key} differs from {script.name}"
