"""Both CRDs on the real API server: they become Established, the samples apply, malformed
objects are rejected at admission with a message naming the field, the human gate can be patched
while the prompt cannot, and ``kubectl get ar,pp`` shows the printer columns."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import KubeCluster

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "examples" / "samples"

pytestmark = pytest.mark.cluster


def _sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((SAMPLES / name).read_text())
    return loaded


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = obj
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value


_DELETE = object()

# (case, kind, changes {dotted path: value}, text the error must contain)
MALFORMED: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "weight of the wrong type",
        "ar",
        {"spec.canary.initialWeight": "five"},
        "spec.canary.initialWeight",
    ),
    (
        "weight above 100",
        "ar",
        {"spec.canary.initialWeight": 150, "spec.canary.ceiling": 100},
        "spec.canary.initialWeight",
    ),
    ("negative floor", "ar", {"spec.canary.floor": -1}, "spec.canary.floor"),
    (
        "floor above initial weight",
        "ar",
        {"spec.canary.floor": 30},
        "canary.floor must be at most canary.initialWeight",
    ),
    (
        "initial weight above ceiling",
        "ar",
        {"spec.canary.initialWeight": 60},
        "canary.initialWeight must be at most canary.ceiling",
    ),
    ("ceiling above 100", "ar", {"spec.canary.ceiling": 101}, "spec.canary.ceiling"),
    ("max step of zero", "ar", {"spec.canary.maxStep": 0}, "spec.canary.maxStep"),
    ("alpha of one half", "ar", {"spec.canary.alpha": 0.5}, "spec.canary.alpha"),
    ("alpha of zero", "ar", {"spec.canary.alpha": 0}, "spec.canary.alpha"),
    ("min samples of zero", "ar", {"spec.canary.minSamples": 0}, "spec.canary.minSamples"),
    (
        "failure-rate guard above 1",
        "ar",
        {"spec.canary.maxFailureRate": 1.5},
        "spec.canary.maxFailureRate",
    ),
    ("malformed interval", "ar", {"spec.canary.interval": "30 seconds"}, "spec.canary.interval"),
    (
        "interval below a second",
        "ar",
        {"spec.canary.interval": "500ms"},
        "canary.interval must be at least 1s",
    ),
    (
        "malformed deadline",
        "ar",
        {"spec.canary.progressDeadline": "10x"},
        "spec.canary.progressDeadline",
    ),
    (
        "decision deadline shorter than the interval",
        "ar",
        {"spec.canary.decisionDeadline": "10s"},
        "canary.decisionDeadline must be at least canary.interval",
    ),
    (
        "malformed decision deadline",
        "ar",
        {"spec.canary.decisionDeadline": "4 hours"},
        "spec.canary.decisionDeadline",
    ),
    (
        "malformed outcome lag",
        "ar",
        {"spec.metrics.outcomeLag": "-5m"},
        "spec.metrics.outcomeLag",
    ),
    ("stable version not semver", "ar", {"spec.stable.version": "v2"}, "spec.stable.version"),
    ("no router", "ar", {"spec.router": {}}, "exactly one router must be set"),
    (
        "two routers",
        "ar",
        {"spec.router.gatewayAPI": {"httpRoute": "x", "port": 8080}},
        "exactly one router must be set",
    ),
    (
        "router URL not http",
        "ar",
        {"spec.router.agentfield.url": "ftp://agentfield"},
        "spec.router.agentfield.url",
    ),
    ("no metrics provider", "ar", {"spec.metrics": {}}, "exactly one metrics provider"),
    (
        "two metrics providers",
        "ar",
        {"spec.metrics.http": {"url": "http://m/{{ version }}"}},
        "exactly one metrics provider",
    ),
    (
        "prompt both env and file",
        "ar",
        {"spec.prompt.mountPath": "/etc/prompt/system.txt"},
        "set either prompt.env or prompt.mountPath, not both",
    ),
    (
        "unknown canary field",
        "ar",
        {"spec.canary.stepSize": 5},
        'unknown field "spec.canary.stepSize"',
    ),
    ("agent missing", "ar", {"spec.agent": _DELETE}, "spec.agent"),
    (
        "bearer token and basic auth",
        "ar",
        {
            "spec.metrics.prometheus.bearerTokenSecretRef": {"name": "s", "key": "t"},
            "spec.metrics.prometheus.basicAuth": {
                "username": {"name": "s", "key": "u"},
                "password": {"name": "s", "key": "p"},
            },
        },
        "set at most one of bearerTokenSecretRef and basicAuth",
    ),
    (
        "header with a value and a Secret",
        "ar",
        {
            "spec.metrics.prometheus.headers": [
                {"name": "X-Scope-OrgID", "value": "a", "valueFrom": {"name": "s", "key": "k"}}
            ]
        },
        "set exactly one of value and valueFrom",
    ),
    (
        "header name with a space",
        "ar",
        {"spec.metrics.prometheus.headers": [{"name": "X Org", "value": "a"}]},
        "spec.metrics.prometheus.headers[0].name",
    ),
    (
        "notification webhook not http",
        "ar",
        {"spec.notifications.webhook.url": "ftp://hooks"},
        "spec.notifications.webhook.url",
    ),
    (
        "unknown notification event",
        "ar",
        {"spec.notifications.events": ["Promotd"]},
        "spec.notifications.events[0]",
    ),
    ("proposal version not semver", "pp", {"spec.version": "2.1"}, "spec.version"),
    ("empty prompt", "pp", {"spec.systemPrompt": ""}, "spec.systemPrompt"),
    ("oversized prompt", "pp", {"spec.systemPrompt": "x" * 40000}, "spec.systemPrompt"),
    ("no rollout reference", "pp", {"spec.rolloutRef": _DELETE}, "spec.rolloutRef"),
    ("approval not a boolean", "pp", {"spec.approved": "yes"}, "spec.approved"),
    (
        "too many examples",
        "pp",
        {
            "spec.evidence.examples": [
                {"input": f"t{i}", "predicted": "a", "expected": "b"} for i in range(11)
            ]
        },
        "spec.evidence.examples",
    ),
    ("cost not a decimal", "pp", {"spec.source.costUsd": "$0.10"}, "spec.source.costUsd"),
]


def test_both_crds_are_established(kube: KubeCluster) -> None:
    for crd in ("agentrollouts.promptloop.dev", "promptproposals.promptloop.dev"):
        out = kube.kubectl(
            "get",
            "crd",
            crd,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Established')].status}",
        ).stdout
        assert out == "True", crd


def test_samples_apply_cleanly(kube: KubeCluster, namespace: str) -> None:
    out = kube.kubectl("apply", "-n", namespace, "-f", str(SAMPLES)).stdout
    assert "agentrollout.promptloop.dev/classifier created" in out
    assert "promptproposal.promptloop.dev/classifier-2-1-0 created" in out


def test_malformed_objects_are_rejected_naming_the_field(kube: KubeCluster, namespace: str) -> None:
    bases = {"ar": _sample("agentrollout.yaml"), "pp": _sample("promptproposal.yaml")}
    rows = []
    failures = []
    for case, kind, changes, expected in MALFORMED:
        obj = copy.deepcopy(bases[kind])
        obj["metadata"]["name"] = "malformed"
        for path, value in changes.items():
            _set(obj, path, value)
        proc = kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(obj), check=False)
        message = " ".join(proc.stderr.split())
        rejected = proc.returncode != 0
        rows.append((case, "rejected" if rejected else "ACCEPTED", message[:150]))
        if not rejected or expected not in message:
            failures.append(f"{case}: expected rejection mentioning {expected!r}, got: {message}")
    width = max(len(case) for case, *_ in rows)
    print(f"\n{'case':<{width}}  verdict   message")
    for case, verdict, message in rows:
        print(f"{case:<{width}}  {verdict:<8}  {message}")
    assert len(MALFORMED) >= 20
    assert not failures, "\n".join(failures)
    # Nothing malformed was stored.
    left = kube.kubectl("get", "ar,pp", "-n", namespace, "-o", "name").stdout
    assert "malformed" not in left


def test_approval_can_be_patched_but_the_prompt_cannot(kube: KubeCluster, namespace: str) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", str(SAMPLES / "promptproposal.yaml"))
    kube.kubectl(
        "patch",
        "pp",
        "classifier-2-1-0",
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        '{"spec":{"approved":true}}',
    )
    approved = kube.kubectl(
        "get", "pp", "classifier-2-1-0", "-n", namespace, "-o", "jsonpath={.spec.approved}"
    ).stdout
    assert approved == "true"
    for field, value in (
        ("systemPrompt", "Something else."),
        ("version", "2.2.0"),
        ("rolloutRef", {"name": "other"}),
    ):
        proc = kube.kubectl(
            "patch",
            "pp",
            "classifier-2-1-0",
            "-n",
            namespace,
            "--type",
            "merge",
            "-p",
            json.dumps({"spec": {field: value}}),
            check=False,
        )
        assert proc.returncode != 0, field
        assert f"{field} is immutable" in proc.stderr


def test_printer_columns(kube: KubeCluster, namespace: str) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", str(SAMPLES))
    out = kube.kubectl("get", "ar,pp", "-n", namespace).stdout
    print("\n" + out)
    rollout_header, proposal_header = (
        line.split() for line in out.splitlines() if line.startswith("NAME")
    )
    assert rollout_header == [
        "NAME",
        "PHASE",
        "STABLE",
        "CANARY",
        "WEIGHT",
        "STABLE-RATE",
        "CANARY-RATE",
        "VERDICT",
        "AGE",
    ]
    assert proposal_header == ["NAME", "ROLLOUT", "VERSION", "PHASE", "WEIGHT", "APPROVED", "AGE"]
    rollout_line = next(line for line in out.splitlines() if "agentrollout.promptloop.dev/" in line)
    proposal_line = next(
        line for line in out.splitlines() if "promptproposal.promptloop.dev/" in line
    )
    assert rollout_line.split()[0] == "agentrollout.promptloop.dev/classifier"
    assert proposal_line.split()[:3] == [
        "promptproposal.promptloop.dev/classifier-2-1-0",
        "classifier",
        "2.1.0",
    ]


def test_defaults_are_applied_at_admission(kube: KubeCluster, namespace: str) -> None:
    rollout = _sample("agentrollout.yaml")
    del rollout["spec"]["canary"]
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(rollout))
    canary = json.loads(
        kube.kubectl(
            "get", "ar", "classifier", "-n", namespace, "-o", "jsonpath={.spec.canary}"
        ).stdout
    )
    assert canary["initialWeight"] == 5
    assert canary["ceiling"] == 50
    assert canary["alpha"] == 0.05
