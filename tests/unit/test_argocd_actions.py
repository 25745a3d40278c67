"""Argo CD resource actions (manifests/argocd/actions/<kind>/*.lua) run in a real Lua VM (lupa).

As for the health checks, the inputs are status objects the operator actually wrote, captured
from the integration tests (tests/data/status); the spec and annotations that the actions also
read are the sample proposal's (examples/samples) and the variations a person produces. Argo CD
runs ``discovery.lua`` to offer actions (a table of name -> {disabled, ...}), then the chosen
``action.lua`` with the live object as ``obj``, and patches the object with the JSON merge
patch from the live object to the returned one (server/application/application.go,
``patchResource``: ``jsonpatch.CreateMergePatch(liveObjBytes, newObjBytes)``); that patch is
what these tests check, and the patched object must still be a valid PromptProposal or
AgentRollout for the operator.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from lupa import LuaError, LuaRuntime

from promptloop.api import AgentRollout, PromptProposal
from promptloop.api.common import from_cluster
from promptloop.view import approval_refusal, rejection_refusal

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "manifests" / "argocd"
CAPTURED = ROOT / "tests" / "data" / "status"
SAMPLES = ROOT / "examples" / "samples"
APPROVE_CANARY = "promptloop.dev/approve-canary"
REJECT_CANARY = "promptloop.dev/reject-canary"


def _to_python(value: Any, original: Any = None) -> Any:
    """A Lua table back to JSON-like Python: 1..n keys are a list, anything else a dict.

    Lua has one table type for both, so an empty table is ambiguous. Argo CD decodes it as an
    empty array and puts back the empty maps the input had (util/lua/lua.go,
    ``cleanReturnedObj``); lupa's tables come back as maps, so here the input's empty lists
    are put back. Either way an untouched empty field stays what it was.
    """
    if hasattr(value, "items"):
        items = dict(value.items())
        if not items and isinstance(original, list):
            return []
        if items and all(isinstance(k, int) for k in items):
            before = original if isinstance(original, list) else []
            return [
                _to_python(items[i], before[i - 1] if i <= len(before) else None)
                for i in range(1, len(items) + 1)
            ]
        before = original if isinstance(original, dict) else {}
        return {k: _to_python(v, before.get(k)) for k, v in items.items()}
    return value


def run(kind: str, script: str, obj: dict[str, Any]) -> Any:
    """Run one script as Argo CD does: ``obj`` global in, the returned table out."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute((ARGOCD / "actions" / kind.lower() / script).read_text())
    return _to_python(result, obj)


def offered(kind: str, obj: dict[str, Any]) -> set[str]:
    """The actions discovery.lua enables."""
    actions = run(kind, "discovery.lua", obj)
    assert set(actions) == {"approve", "reject"}
    for action in actions.values():
        assert action["displayName"] and action["iconClass"].startswith("fa ")
    return {name for name, action in actions.items() if not action["disabled"]}


def merge_patch(live: Any, new: Any) -> Any:
    """RFC 7386 merge patch from ``live`` to ``new`` (what Argo CD sends)."""
    if not isinstance(live, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in live.keys() | new.keys():
        if key not in new:
            patch[key] = None
        elif key not in live:
            patch[key] = new[key]
        elif live[key] != new[key]:
            patch[key] = merge_patch(live[key], new[key])
    return patch


def captured(kind: str, phase: str) -> dict[str, Any]:
    return json.loads((CAPTURED / f"{kind.lower()}-{phase}.json").read_text())  # type: ignore[no-any-return]


def proposal(phase: str, **spec: Any) -> dict[str, Any]:
    """The sample proposal's spec with a captured status (and namespace, as Argo CD has it)."""
    obj = yaml.safe_load((SAMPLES / "promptproposal.yaml").read_text())
    obj["metadata"]["namespace"] = "demo"
    obj["spec"].update(spec)
    obj["status"] = captured("PromptProposal", phase)["status"]
    return obj  # type: ignore[no-any-return]


def rollout(phase: str) -> dict[str, Any]:
    obj = yaml.safe_load((SAMPLES / "agentrollout.yaml").read_text())
    obj["metadata"].update(namespace="demo", generation=1)
    obj["status"] = captured("AgentRollout", phase)["status"]
    return obj  # type: ignore[no-any-return]


PROPOSAL_PHASES = ["Pending", "Rendered", "Canary", "AwaitingApproval", "Promoted", "RolledBack"]
PROPOSAL_PHASES += ["Rejected", "Invalid"]


@pytest.mark.parametrize("phase", PROPOSAL_PHASES)
@pytest.mark.parametrize("approved", [None, False, True])
@pytest.mark.parametrize("marked", [False, True])
def test_proposal_actions_are_offered_exactly_when_the_cli_would_act(
    phase: str, approved: bool | None, marked: bool
) -> None:
    obj = proposal(phase, **({} if approved is None else {"approved": approved}))
    if marked:
        obj["metadata"]["annotations"] = {"promptloop.dev/rejected": "true"}
    model = from_cluster(PromptProposal, obj)
    owner = from_cluster(AgentRollout, rollout("Progressing"))
    # `promptloop approve` refuses, or finds nothing to do when already approved.
    cli_approves = approval_refusal(owner, model) is None and approved is not True
    cli_rejects = rejection_refusal(owner, model) is None and (approved is True or not marked)
    expected = {name for name, yes in (("approve", cli_approves), ("reject", cli_rejects)) if yes}
    assert offered("PromptProposal", obj) == expected


def test_proposal_approve_patches_only_spec_approved() -> None:
    live = proposal("AwaitingApproval")
    new = run("PromptProposal", "approve.lua", copy.deepcopy(live))
    assert merge_patch(live, new) == {"spec": {"approved": True}}
    assert from_cluster(PromptProposal, new).spec.approved is True


def test_proposal_reject_marks_it_and_withdraws_an_approval() -> None:
    live = proposal("Canary", approved=True)
    new = run("PromptProposal", "reject.lua", copy.deepcopy(live))
    assert merge_patch(live, new) == {
        "metadata": {
            "annotations": {
                "promptloop.dev/rejected": "true",
                "promptloop.dev/rejected-reason": "rejected with the Argo CD action",
            }
        },
        "spec": {"approved": False},
    }
    # A reason someone already gave is kept; an unapproved proposal keeps spec.approved absent.
    live = proposal("AwaitingApproval")
    live["metadata"]["annotations"] = {"promptloop.dev/rejected-reason": "too terse"}
    new = run("PromptProposal", "reject.lua", copy.deepcopy(live))
    assert merge_patch(live, new) == {
        "metadata": {"annotations": {"promptloop.dev/rejected": "true"}}
    }


ROLLOUT_OFFERS = {
    "AwaitingApproval": {"approve", "reject"},
    "Progressing": {"approve", "reject"},
    # Approved, stepping to the ceiling: only a rejection (a withdrawn approval) is left.
    "Promoting": {"reject"},
    "Stable": set(),
    "RolledBack": set(),
    "Invalid": set(),
}


@pytest.mark.parametrize(("phase", "expected"), sorted(ROLLOUT_OFFERS.items()))
def test_rollout_actions_follow_its_canary(phase: str, expected: set[str]) -> None:
    assert offered("AgentRollout", rollout(phase)) == expected


@pytest.mark.parametrize(
    ("action", "annotation"), [("approve", APPROVE_CANARY), ("reject", REJECT_CANARY)]
)
def test_rollout_action_names_the_canarys_proposal_and_prompt_digest(
    action: str, annotation: str
) -> None:
    live = rollout("AwaitingApproval")
    canary = live["status"]["canary"]
    new = run("AgentRollout", f"{action}.lua", copy.deepcopy(live))
    target = f"{canary['proposal']}@{canary['promptDigest']}"
    assert merge_patch(live, new) == {"metadata": {"annotations": {annotation: target}}}
    assert from_cluster(AgentRollout, new).metadata.annotations[annotation] == target
    # Once written, the same action is no longer offered for this canary.
    assert action not in offered("AgentRollout", new)


def test_rollout_action_without_a_canary_fails_with_a_sentence() -> None:
    with pytest.raises(LuaError, match="has no canary to approve"):
        run("AgentRollout", "approve.lua", rollout("Stable"))


def test_a_stale_annotation_does_not_hide_the_action_for_a_new_canary() -> None:
    obj = rollout("AwaitingApproval")
    obj["metadata"]["annotations"] = {APPROVE_CANARY: "classifier-2-0-9@" + "0" * 64}
    assert offered("AgentRollout", obj) == {"approve", "reject"}


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("argocd_build", ARGOCD / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_argocd_cm_snippet_and_the_charts_copy_are_generated_from_the_lua() -> None:
    build = _builder()
    assert (ARGOCD / "argocd-cm.yaml").read_text() == build.snippet(), "run `make argocd`"
    chart = ROOT / "charts" / "promptloop" / "argocd"
    assert sorted(p.relative_to(chart) for p in chart.rglob("*.lua")) == build.lua_files()
    for relative in build.lua_files():
        assert (chart / relative).read_text() == (ARGOCD / relative).read_text(), relative
    config = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    for kind in ("AgentRollout", "PromptProposal"):
        actions = yaml.safe_load(
            config["data"][f"resource.customizations.actions.promptloop.dev_{kind}"]
        )
        folder = ARGOCD / "actions" / kind.lower()
        assert actions["discovery.lua"] == (folder / "discovery.lua").read_text()
        assert {d["name"]: d["action.lua"] for d in actions["definitions"]} == {
            name: (folder / f"{name}.lua").read_text() for name in ("approve", "reject")
        }
