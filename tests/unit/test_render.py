"""Unit tests of :mod:`promptloop.render.challenger`: names, manifests, prompt sources, safety.

The stable Deployment fixture is shaped like what the API server returns (status, managedFields,
revision annotations, a template with ``creationTimestamp: null``), so the tests prove that
nothing belonging to the live object leaks into the challenger.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptloop.api.agentrollout import AgentRollout, PromptDelivery
from promptloop.api.promptproposal import PromptProposal
from promptloop.constants import (
    LABEL_MANAGED_BY,
    LABEL_PROPOSAL,
    LABEL_ROLLOUT,
    LABEL_VERSION,
    MANAGED_BY,
    PROMPT_CONFIGMAP_KEY,
)
from promptloop.render.challenger import (
    ANNOTATION_CLONED_FROM,
    ANNOTATION_PROMPT_DIGEST,
    PROMPT_VOLUME,
    VERSION_ENV,
    ChallengerNames,
    OwnerRef,
    PromptSource,
    PromptSourceKind,
    RenderedChallenger,
    RenderError,
    challenger_names,
    label_value,
    prompt_digest,
    render_challenger,
    stable_prompt_source,
)

NS = "agents"
PROMPT = "You classify support tickets into billing, bug or other.\nAnswer with one word."
DIGEST = prompt_digest(PROMPT)
OWNER = OwnerRef(
    api_version="promptloop.dev/v1alpha1",
    kind="PromptProposal",
    name="classifier-2-1-0",
    uid="5f1c2e9a-0000-4000-8000-000000000001",
)
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


def stable_deployment() -> dict[str, Any]:
    """The incumbent as ``kubectl get deploy classifier -o json`` shows it."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "classifier",
            "namespace": NS,
            "uid": "0a9d7c5e-1111-4111-8111-000000000002",
            "resourceVersion": "48213",
            "generation": 7,
            "creationTimestamp": "2025-01-10T09:00:00Z",
            "labels": {
                "app": "classifier",
                "app.kubernetes.io/name": "classifier",
                "app.kubernetes.io/part-of": "support-desk",
                "app.kubernetes.io/instance": "classifier-prod",
                "app.kubernetes.io/managed-by": "Helm",
                "argocd.argoproj.io/instance": "support",
            },
            "annotations": {
                "deployment.kubernetes.io/revision": "7",
                "kubectl.kubernetes.io/last-applied-configuration": '{"apiVersion":"apps/v1"}',
                "meta.helm.sh/release-name": "classifier",
            },
            "ownerReferences": [
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Application",
                    "name": "x",
                    "uid": "u",
                }
            ],
            "managedFields": [
                {
                    "manager": "kubectl-client-side-apply",
                    "operation": "Update",
                    "apiVersion": "apps/v1",
                    "time": "2025-01-10T09:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:replicas": {}}},
                }
            ],
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "classifier"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
            },
            "minReadySeconds": 5,
            "revisionHistoryLimit": 4,
            "progressDeadlineSeconds": 300,
            "paused": False,
            "template": {
                "metadata": {
                    "creationTimestamp": None,
                    "labels": {"app": "classifier", "pod-template-hash": "7d9f8b6c5"},
                    "annotations": {
                        "kubectl.kubernetes.io/restartedAt": "2025-01-11T10:00:00Z",
                        "prometheus.io/scrape": "true",
                    },
                },
                "spec": {
                    "serviceAccountName": "classifier",
                    "initContainers": [
                        {
                            "name": "wait-for-agentfield",
                            "image": "busybox:1.36",
                            "env": [{"name": "EXPECTED_VERSION", "value": "2.0.0"}],
                        }
                    ],
                    "containers": [
                        {
                            "name": "agent",
                            "image": "ghcr.io/example/classifier:2.0.0",
                            "args": ["--version", "2.0.0"],
                            "env": [
                                {"name": "AGENTFIELD_URL", "value": "http://agentfield:8080"},
                                {"name": "AGENT_VERSION", "value": "2.0.0"},
                                {"name": "SYSTEM_PROMPT", "value": "You classify tickets."},
                                {"name": "NOTE", "value": "built from 2.0.0"},
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                                {"name": "LOG_LEVEL", "value": "info"},
                            ],
                            "ports": [{"containerPort": 8001, "protocol": "TCP"}],
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                            "terminationMessagePath": "/dev/termination-log",
                            "imagePullPolicy": "IfNotPresent",
                        },
                        {
                            "name": "metrics-sidecar",
                            "image": "ghcr.io/example/exporter:1.0.0",
                            "env": [{"name": "TARGET_VERSION", "value": "2.0.0"}],
                        },
                    ],
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                },
            },
        },
        "status": {
            "observedGeneration": 7,
            "replicas": 3,
            "readyReplicas": 3,
            "conditions": [{"type": "Available", "status": "True"}],
        },
    }


def make_rollout(**prompt: Any) -> AgentRollout:
    return AgentRollout.model_validate(
        {
            "metadata": {"name": "classifier", "namespace": NS},
            "spec": {
                "agent": {"nodeId": "classifier"},
                "stable": {"version": "2.0.0", "deploymentName": "classifier"},
                "prompt": prompt,
                "router": {
                    "agentfield": {
                        "url": "http://agentfield:8080",
                        "tokenSecretRef": {"name": "af", "key": "token"},
                    }
                },
                "metrics": {"http": {"url": "http://metrics/{{ version }}"}},
            },
        }
    )


def make_proposal(
    prompt: str = PROMPT, version: str = "2.1.0", name: str = "classifier-2-1-0"
) -> PromptProposal:
    return PromptProposal.model_validate(
        {
            "metadata": {"name": name, "namespace": NS, "uid": OWNER.uid},
            "spec": {
                "rolloutRef": {"name": "classifier"},
                "version": version,
                "systemPrompt": prompt,
            },
        }
    )


def render(
    *,
    rollout: AgentRollout | None = None,
    proposal: PromptProposal | None = None,
    stable: dict[str, Any] | None = None,
    **kwargs: Any,
) -> RenderedChallenger:
    return render_challenger(
        rollout=rollout or make_rollout(),
        proposal=proposal or make_proposal(),
        stable_deployment=stable if stable is not None else stable_deployment(),
        owner=OWNER,
        **kwargs,
    )


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    found: dict[str, Any] = next(
        c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name
    )
    return found


def env_of(c: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(e["name"], e.get("value", e.get("valueFrom"))) for e in c.get("env", [])]


EXPECTED_LABELS = {
    LABEL_MANAGED_BY: MANAGED_BY,
    "app.kubernetes.io/version": "2.1.0",
    LABEL_VERSION: "2.1.0",
    LABEL_PROPOSAL: "classifier-2-1-0",
    LABEL_ROLLOUT: "classifier",
    "app.kubernetes.io/name": "classifier",
    "app.kubernetes.io/part-of": "support-desk",
}
EXPECTED_OWNER_REFS = [
    {
        "apiVersion": "promptloop.dev/v1alpha1",
        "kind": "PromptProposal",
        "name": "classifier-2-1-0",
        "uid": OWNER.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
]
CM_REF = {"configMapKeyRef": {"name": f"classifier-v2-1-0-{DIGEST[:10]}", "key": "system-prompt"}}


# --- digest and names -------------------------------------------------------------------------


def test_prompt_digest_is_sha256_of_utf8() -> None:
    assert prompt_digest("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert prompt_digest("é") == hashlib.sha256(b"\xc3\xa9").hexdigest()


def test_prompt_digest_rejects_lone_surrogates() -> None:
    with pytest.raises(RenderError, match="not valid Unicode"):
        prompt_digest("bad \ud800")


def test_plain_names_follow_the_documented_pattern() -> None:
    names = challenger_names(
        rollout_name="classifier", version="2.1.0", digest=DIGEST, proposal_name="classifier-2-1-0"
    )
    assert names == ChallengerNames(
        deployment="classifier-v2-1-0",
        config_map=f"classifier-v2-1-0-{DIGEST[:10]}",
        rollout_label="classifier",
        version_label="2.1.0",
        proposal_label="classifier-2-1-0",
    )
    assert names.selector == {LABEL_ROLLOUT: "classifier", LABEL_VERSION: "2.1.0"}


@pytest.mark.parametrize(
    ("rollout", "version", "prefix"),
    [
        ("classifier", "2.1.0-rc.1", "classifier-v2-1-0-rc-1-"),
        ("classifier", "2.1.0-rc-1", "classifier-v2-1-0-rc-1-"),
        ("classifier", "2.1.0+build.7", "classifier-v2-1-0-build-7-"),
        ("classifier", "2.1.0-RC.1", "classifier-v2-1-0-rc-1-"),
        ("support.classifier", "2.1.0", "support-classifier-v2-1-0-"),
    ],
)
def test_ambiguous_names_get_a_hash_suffix(rollout: str, version: str, prefix: str) -> None:
    names = challenger_names(
        rollout_name=rollout, version=version, digest=DIGEST, proposal_name="p"
    )
    assert names.deployment.startswith(prefix)
    assert len(names.deployment) == len(prefix) + 8
    assert DNS_LABEL.fullmatch(names.deployment)
    assert names.config_map == f"{names.deployment}-{DIGEST[:10]}"


def test_versions_that_dash_alike_get_distinct_names() -> None:
    versions = ["2.1.0-rc.1", "2.1.0-rc-1", "2.1.0-RC.1", "2.1.0+rc.1", "2.1.0+rc-1"]
    deployments = {
        challenger_names(
            rollout_name="classifier", version=v, digest=DIGEST, proposal_name="p"
        ).deployment
        for v in versions
    }
    assert len(deployments) == len(versions)


def test_long_names_are_truncated_with_a_hash_and_keep_the_digest() -> None:
    long_a = "a" * 60 + "-one"
    long_b = "a" * 60 + "-two"
    a = challenger_names(rollout_name=long_a, version="2.1.0", digest=DIGEST, proposal_name="p")
    b = challenger_names(rollout_name=long_b, version="2.1.0", digest=DIGEST, proposal_name="p")
    for names in (a, b):
        assert len(names.deployment) == 63
        assert len(names.config_map) <= 63
        assert names.config_map.endswith("-" + DIGEST[:10])
        assert DNS_LABEL.fullmatch(names.deployment) and DNS_LABEL.fullmatch(names.config_map)
        assert LABEL_VALUE.fullmatch(names.rollout_label) and len(names.rollout_label) <= 63
    assert a.deployment != b.deployment
    assert a.config_map != b.config_map
    assert a.rollout_label != b.rollout_label
    again = challenger_names(rollout_name=long_a, version="2.1.0", digest=DIGEST, proposal_name="p")
    assert again == a


def test_a_name_that_fits_exactly_is_not_hashed() -> None:
    rollout = "r" * (63 - len("-v2-1-0"))
    names = challenger_names(
        rollout_name=rollout, version="2.1.0", digest=DIGEST, proposal_name="p"
    )
    assert names.deployment == f"{rollout}-v2-1-0"


@pytest.mark.parametrize("digest", ["", "ABCDEF0123456", "xyz0123456789", "0123"])
def test_names_reject_a_malformed_digest(digest: str) -> None:
    with pytest.raises(RenderError, match="digest"):
        challenger_names(rollout_name="r", version="1.0.0", digest=digest, proposal_name="p")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.1.0", "2.1.0"),
        ("2.1.0-rc.1", "2.1.0-rc.1"),
        ("2.1.0+build.7", "2.1.0_build.7"),
        ("classifier", "classifier"),
        ("", ""),
    ],
)
def test_label_value_keeps_valid_values(text: str, expected: str) -> None:
    assert label_value(text) == expected


def test_label_value_hashes_what_it_cannot_keep() -> None:
    long_value = label_value("x" * 100)
    assert len(long_value) == 63 and LABEL_VALUE.fullmatch(long_value)
    assert label_value("a_b+c") != label_value("a_b_c")
    assert LABEL_VALUE.fullmatch(label_value("-weird value!-"))


semver = st.builds(
    lambda a, b, c, pre, build: (
        f"{a}.{b}.{c}" + (f"-{pre}" if pre else "") + (f"+{build}" if build else "")
    ),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.from_regex(r"[0-9A-Za-z-]{1,20}(\.[0-9A-Za-z-]{1,20}){0,3}", fullmatch=True) | st.just(""),
    st.from_regex(r"[0-9A-Za-z-]{1,20}(\.[0-9A-Za-z-]{1,20}){0,3}", fullmatch=True) | st.just(""),
)
k8s_name = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,120}[a-z0-9])?", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(rollout=k8s_name, version=semver, proposal=k8s_name)
def test_names_are_always_valid(rollout: str, version: str, proposal: str) -> None:
    names = challenger_names(
        rollout_name=rollout, version=version, digest=DIGEST, proposal_name=proposal
    )
    assert DNS_LABEL.fullmatch(names.deployment), names.deployment
    assert DNS_LABEL.fullmatch(names.config_map), names.config_map
    for value in (names.rollout_label, names.version_label, names.proposal_label):
        assert LABEL_VALUE.fullmatch(value), value


# --- the ConfigMap ----------------------------------------------------------------------------


def test_config_map_is_exactly_the_documented_object() -> None:
    rendered = render()
    assert rendered.digest == DIGEST
    assert rendered.config_map == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"classifier-v2-1-0-{DIGEST[:10]}",
            "namespace": NS,
            "labels": EXPECTED_LABELS,
            "annotations": {ANNOTATION_PROMPT_DIGEST: DIGEST},
            "ownerReferences": EXPECTED_OWNER_REFS,
        },
        "immutable": True,
        "data": {PROMPT_CONFIGMAP_KEY: PROMPT},
    }


# --- the Deployment ---------------------------------------------------------------------------


def test_deployment_metadata_is_its_own() -> None:
    meta = render().deployment["metadata"]
    assert meta == {
        "name": "classifier-v2-1-0",
        "namespace": NS,
        "labels": EXPECTED_LABELS,
        "annotations": {ANNOTATION_PROMPT_DIGEST: DIGEST, ANNOTATION_CLONED_FROM: "classifier"},
        "ownerReferences": EXPECTED_OWNER_REFS,
    }


def test_deployment_spec_keeps_only_rollout_behaviour() -> None:
    deployment = render().deployment
    assert deployment["apiVersion"] == "apps/v1" and deployment["kind"] == "Deployment"
    assert "status" not in deployment
    spec = deployment["spec"]
    assert set(spec) == {
        "replicas",
        "selector",
        "strategy",
        "minReadySeconds",
        "revisionHistoryLimit",
        "progressDeadlineSeconds",
        "template",
    }
    stable_spec = stable_deployment()["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == stable_spec["strategy"]
    assert (spec["minReadySeconds"], spec["revisionHistoryLimit"]) == (5, 4)
    assert spec["progressDeadlineSeconds"] == 300


def test_unset_spec_fields_are_not_invented() -> None:
    stable = stable_deployment()
    for field in ("replicas", "strategy", "minReadySeconds", "revisionHistoryLimit"):
        del stable["spec"][field]
    spec = render(stable=stable).deployment["spec"]
    assert spec["replicas"] == 1
    assert "strategy" not in spec and "minReadySeconds" not in spec
    assert "revisionHistoryLimit" not in spec and spec["progressDeadlineSeconds"] == 300


def test_nothing_of_the_live_object_leaks() -> None:
    text = json.dumps(render().deployment)
    for leaked in (
        "0a9d7c5e",  # uid
        "48213",  # resourceVersion
        "managedFields",
        "creationTimestamp",
        "deployment.kubernetes.io/revision",
        "last-applied-configuration",
        "meta.helm.sh",
        "argocd.argoproj.io",
        "Helm",
        "readyReplicas",
        "pod-template-hash",
        "restartedAt",
        "Application",
        '"paused"',
    ):
        assert leaked not in text, leaked


def test_selector_is_independent_of_the_stable() -> None:
    stable = stable_deployment()
    deployment = render(stable=stable).deployment
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {LABEL_ROLLOUT: "classifier", LABEL_VERSION: "2.1.0"}
    challenger_pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    stable_pod_labels = stable["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= challenger_pod_labels.items()
    assert not selector.items() <= stable_pod_labels.items()
    # A stable that is itself a promoted challenger carries the same keys with another version.
    promoted = render(stable=deployment, proposal=make_proposal(version="2.2.0")).deployment
    promoted_selector = promoted["spec"]["selector"]["matchLabels"]
    assert not promoted_selector.items() <= challenger_pod_labels.items()


def test_template_metadata() -> None:
    meta = render().deployment["spec"]["template"]["metadata"]
    assert meta == {
        "labels": {
            "app": "classifier",
            LABEL_MANAGED_BY: MANAGED_BY,
            "app.kubernetes.io/version": "2.1.0",
            LABEL_VERSION: "2.1.0",
            LABEL_PROPOSAL: "classifier-2-1-0",
            LABEL_ROLLOUT: "classifier",
        },
        "annotations": {"prometheus.io/scrape": "true", ANNOTATION_PROMPT_DIGEST: DIGEST},
    }


def test_the_rest_of_the_pod_spec_is_copied() -> None:
    stable_pod = stable_deployment()["spec"]["template"]["spec"]
    pod = render().deployment["spec"]["template"]["spec"]
    for field in ("serviceAccountName", "restartPolicy", "terminationGracePeriodSeconds"):
        assert pod[field] == stable_pod[field]
    agent = container(render().deployment, "agent")
    stable_agent = stable_pod["containers"][0]
    for field in ("image", "args", "ports", "resources", "imagePullPolicy"):
        assert agent[field] == stable_agent[field]


# --- prompt delivery --------------------------------------------------------------------------


def test_env_delivery_replaces_the_entry_in_place() -> None:
    agent = container(render().deployment, "agent")
    assert env_of(agent) == [
        ("AGENTFIELD_URL", "http://agentfield:8080"),
        ("AGENT_VERSION", "2.1.0"),
        ("SYSTEM_PROMPT", CM_REF),
        ("NOTE", "built from 2.0.0"),
        ("POD_NAME", {"fieldRef": {"fieldPath": "metadata.name"}}),
        ("LOG_LEVEL", "info"),
        (VERSION_ENV, "2.1.0"),
    ]


def test_env_delivery_appends_and_collapses_duplicates() -> None:
    stable = stable_deployment()
    agent = stable["spec"]["template"]["spec"]["containers"][0]
    agent["env"] = [
        {"name": "PROMPT", "value": "a"},
        {"name": "A", "value": "1"},
        {"name": "PROMPT", "value": "b"},
        {"name": VERSION_ENV, "value": "old"},
    ]
    out = container(render(stable=stable, rollout=make_rollout(env="PROMPT")).deployment, "agent")
    assert env_of(out) == [("PROMPT", CM_REF), ("A", "1"), (VERSION_ENV, "2.1.0")]
    del agent["env"]
    out = container(render(stable=stable).deployment, "agent")
    assert env_of(out) == [("SYSTEM_PROMPT", CM_REF), (VERSION_ENV, "2.1.0")]


def test_named_container_receives_the_prompt() -> None:
    deployment = render(rollout=make_rollout(container="metrics-sidecar")).deployment
    sidecar = container(deployment, "metrics-sidecar")
    assert env_of(sidecar) == [
        ("TARGET_VERSION", "2.1.0"),
        ("SYSTEM_PROMPT", CM_REF),
        (VERSION_ENV, "2.1.0"),
    ]
    agent = container(deployment, "agent")
    assert ("SYSTEM_PROMPT", "You classify tickets.") in env_of(agent)
    assert VERSION_ENV not in dict(env_of(agent))


def test_file_delivery_mounts_the_config_map() -> None:
    deployment = render(rollout=make_rollout(mountPath="/etc/agent/prompt.txt")).deployment
    pod = deployment["spec"]["template"]["spec"]
    cm = f"classifier-v2-1-0-{DIGEST[:10]}"
    assert pod["volumes"] == [
        {
            "name": PROMPT_VOLUME,
            "configMap": {"name": cm, "items": [{"key": "system-prompt", "path": "prompt.txt"}]},
        }
    ]
    agent = container(deployment, "agent")
    assert agent["volumeMounts"] == [
        {
            "name": PROMPT_VOLUME,
            "mountPath": "/etc/agent/prompt.txt",
            "subPath": "prompt.txt",
            "readOnly": True,
        }
    ]
    # File mode leaves the env alone, apart from the version.
    assert ("SYSTEM_PROMPT", "You classify tickets.") in env_of(agent)
    assert env_of(agent)[-1] == (VERSION_ENV, "2.1.0")


def test_file_delivery_replaces_the_stables_prompt_mount_in_place() -> None:
    stable = stable_deployment()
    pod = stable["spec"]["template"]["spec"]
    pod["volumes"] = [
        {"name": "cache", "emptyDir": {}},
        {"name": "old-prompt", "configMap": {"name": "classifier-prompt"}},
        {"name": "shared", "configMap": {"name": "shared"}},
        {"name": PROMPT_VOLUME, "configMap": {"name": "stale"}},
    ]
    pod["containers"][0]["volumeMounts"] = [
        {"name": "cache", "mountPath": "/cache"},
        {"name": "old-prompt", "mountPath": "/etc/agent/prompt.txt/", "subPath": "prompt"},
        {"name": "shared", "mountPath": "/etc/shared"},
    ]
    pod["containers"][1]["volumeMounts"] = [{"name": "shared", "mountPath": "/shared"}]
    deployment = render(stable=stable, rollout=make_rollout(mountPath="/etc/agent/prompt.txt"))
    out = deployment.deployment["spec"]["template"]["spec"]
    assert [v["name"] for v in out["volumes"]] == ["cache", "shared", PROMPT_VOLUME]
    assert out["volumes"][2]["configMap"]["name"] == deployment.names.config_map
    mounts = container(deployment.deployment, "agent")["volumeMounts"]
    assert [(m["name"], m["mountPath"]) for m in mounts] == [
        ("cache", "/cache"),
        (PROMPT_VOLUME, "/etc/agent/prompt.txt"),
        ("shared", "/etc/shared"),
    ]


def test_a_replaced_volume_still_mounted_elsewhere_is_kept() -> None:
    stable = stable_deployment()
    pod = stable["spec"]["template"]["spec"]
    pod["volumes"] = [{"name": "cfg", "configMap": {"name": "cfg"}}]
    pod["containers"][0]["volumeMounts"] = [
        {"name": "cfg", "mountPath": "/etc/agent/prompt.txt", "subPath": "prompt"}
    ]
    pod["containers"][1]["volumeMounts"] = [{"name": "cfg", "mountPath": "/cfg"}]
    out = render(stable=stable, rollout=make_rollout(mountPath="/etc/agent/prompt.txt"))
    volumes = out.deployment["spec"]["template"]["spec"]["volumes"]
    assert [v["name"] for v in volumes] == ["cfg", PROMPT_VOLUME]


# --- versions ---------------------------------------------------------------------------------


def test_stable_version_values_become_the_new_version_everywhere() -> None:
    deployment = render().deployment
    assert dict(env_of(container(deployment, "agent")))["AGENT_VERSION"] == "2.1.0"
    assert env_of(container(deployment, "metrics-sidecar")) == [("TARGET_VERSION", "2.1.0")]
    assert env_of(container(deployment, "wait-for-agentfield")) == [("EXPECTED_VERSION", "2.1.0")]
    agent = container(deployment, "agent")
    # Only exact literal values: substrings, args and the image are left alone.
    assert dict(env_of(agent))["NOTE"] == "built from 2.0.0"
    assert agent["args"] == ["--version", "2.0.0"]
    assert agent["image"].endswith(":2.0.0")


def test_a_promoted_stable_version_is_honoured() -> None:
    stable = stable_deployment()
    for c in stable["spec"]["template"]["spec"]["containers"]:
        for e in c.get("env", []):
            if e.get("value") == "2.0.0":
                e["value"] = "2.0.5"
    # Explicit override.
    out = render(stable=stable, stable_version="2.0.5").deployment
    assert dict(env_of(container(out, "agent")))["AGENT_VERSION"] == "2.1.0"
    # status.stableVersion, when the argument is absent.
    rollout = make_rollout()
    rollout.status.stable_version = "2.0.5"
    out = render(stable=stable, rollout=rollout).deployment
    assert dict(env_of(container(out, "agent")))["AGENT_VERSION"] == "2.1.0"
    # spec.stable.version alone no longer matches: nothing is substituted.
    out = render(stable=stable).deployment
    assert dict(env_of(container(out, "agent")))["AGENT_VERSION"] == "2.0.5"


def test_build_metadata_versions_are_label_safe() -> None:
    rendered = render(proposal=make_proposal(version="2.1.0+build.7"))
    labels = rendered.deployment["metadata"]["labels"]
    assert labels[LABEL_VERSION] == labels["app.kubernetes.io/version"] == "2.1.0_build.7"
    assert rendered.deployment["spec"]["selector"]["matchLabels"][LABEL_VERSION] == "2.1.0_build.7"
    # The agent still gets the exact version.
    assert dict(env_of(container(rendered.deployment, "agent")))[VERSION_ENV] == "2.1.0+build.7"


# --- adversarial prompts ----------------------------------------------------------------------

ADVERSARIAL = [
    "key: value\n---\napiVersion: v1\nkind: Secret\n\"quoted\" 'single'",
    "{{ name }} {% if true %}x{% endif %} {# comment #} ${VAR} $(VAR)",
    '{"data": {"system-prompt": "pwned"}}',
    "- a\n- b\n? c\n: d\n&anchor *alias !!python/object:os.system",
    "  leading and trailing spaces  \n\n\n",
    "tabs\tand\r\ncarriage returns\rand \x00 nulls \x07 bells \x1b[31m",
    "unicode: é ü 日本語 🙂 \u200b zero-width \u2028 line sep \u2029 para sep \x85 nel",
    "c1 \x80\x9f controls, bom \ufeff, noncharacters \ufffe\uffff",
    "\\ backslashes \\n \\u0041 \\\\",
    "yes",
    "null",
    "0o17",
    "1e3",
    "~",
    "<script>&amp;</script>",
    "---",
    "...",
    "%YAML 1.2",
    "x" * 32 * 1024,
]


@pytest.mark.parametrize("prompt", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_prompts_survive_byte_for_byte(prompt: str) -> None:
    rendered = render(proposal=make_proposal(prompt=prompt))
    data = rendered.config_map["data"]
    assert data == {PROMPT_CONFIGMAP_KEY: prompt}
    assert data[PROMPT_CONFIGMAP_KEY].encode() == prompt.encode()
    assert rendered.digest == prompt_digest(prompt)
    assert rendered.config_map["metadata"]["name"].endswith(prompt_digest(prompt)[:10])
    assert set(rendered.config_map) == {"apiVersion", "kind", "metadata", "immutable", "data"}


@settings(max_examples=200, deadline=None)
@given(prompt=st.text(min_size=1, max_size=400))
def test_any_text_survives_byte_for_byte(prompt: str) -> None:
    rendered = render(proposal=make_proposal(prompt=prompt))
    assert rendered.config_map["data"] == {PROMPT_CONFIGMAP_KEY: prompt}
    assert rendered.config_map["immutable"] is True


@settings(max_examples=50, deadline=None)
@given(value=st.text(max_size=80), key=st.text(min_size=1, max_size=40))
def test_arbitrary_pod_template_content_survives(value: str, key: str) -> None:
    stable = stable_deployment()
    template = stable["spec"]["template"]
    template["metadata"]["annotations"][key] = value
    template["spec"]["containers"][0]["env"].append({"name": "ODD", "value": value})
    out = render(stable=stable).deployment["spec"]["template"]
    if key not in {"kubectl.kubernetes.io/restartedAt", ANNOTATION_PROMPT_DIGEST}:
        assert out["metadata"]["annotations"][key] == value
    odd = [e for e in out["spec"]["containers"][0]["env"] if e["name"] == "ODD"]
    assert odd == [{"name": "ODD", "value": "2.1.0" if value == "2.0.0" else value}]


def test_lone_surrogates_in_the_pod_template_survive() -> None:
    # libyaml refuses the escape; the renderer falls back to PyYAML's own safe loader.
    stable = stable_deployment()
    stable["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "ODD", "value": "a\ud800b"}
    )
    env = dict(env_of(container(render(stable=stable).deployment, "agent")))
    assert env["ODD"] == "a\ud800b"


# --- errors -----------------------------------------------------------------------------------


def _without_containers() -> dict[str, Any]:
    stable = stable_deployment()
    stable["spec"]["template"]["spec"]["containers"] = []
    return stable


def _without_template() -> dict[str, Any]:
    stable = stable_deployment()
    del stable["spec"]["template"]
    return stable


def _elsewhere() -> dict[str, Any]:
    stable = stable_deployment()
    stable["metadata"]["namespace"] = "other"
    return stable


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stable": _without_containers()}, "no containers"),
        ({"stable": _without_template()}, "template is missing"),
        ({"stable": _elsewhere()}, "namespace 'other'"),
        ({"stable": {"metadata": {}}}, "no metadata.name"),
        ({"rollout": make_rollout(container="nope")}, "'nope' is not a container.*'agent'"),
        ({"rollout": make_rollout(env="A", mountPath="/p")}, "not both"),
        ({"rollout": make_rollout(mountPath="/etc/agent/")}, "must name a file"),
        ({"rollout": make_rollout(env=VERSION_ENV)}, "holds the version"),
        (
            {
                "proposal": make_proposal().model_copy(
                    update={
                        "metadata": make_proposal().metadata.model_copy(update={"namespace": None})
                    }
                )
            },
            "no metadata.namespace",
        ),
    ],
)
def test_unrenderable_inputs_raise_render_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render(**kwargs)


def test_a_proposal_for_another_rollout_is_refused() -> None:
    proposal = make_proposal()
    proposal.spec.rollout_ref.name = "other"
    with pytest.raises(RenderError, match="refers to rollout 'other'"):
        render(proposal=proposal)


def test_an_owner_without_uid_is_refused() -> None:
    with pytest.raises(RenderError, match="no uid"):
        render_challenger(
            rollout=make_rollout(),
            proposal=make_proposal(),
            stable_deployment=stable_deployment(),
            owner=OwnerRef("promptloop.dev/v1alpha1", "PromptProposal", "p", ""),
        )


# --- determinism and purity -------------------------------------------------------------------


def test_rendering_is_deterministic_and_leaves_inputs_alone() -> None:
    stable = stable_deployment()
    rollout, proposal = make_rollout(mountPath="/etc/agent/prompt.txt"), make_proposal()
    before = (copy.deepcopy(stable), rollout.model_dump(), proposal.model_dump())
    first = render(stable=stable, rollout=rollout, proposal=proposal)
    second = render(stable=stable, rollout=rollout, proposal=proposal)
    assert first == second
    assert json.dumps(first.deployment) == json.dumps(second.deployment)
    assert (stable, rollout.model_dump(), proposal.model_dump()) == before
    # Plain JSON types only: the k8s layer can send it as is.
    assert json.loads(json.dumps(first.deployment)) == first.deployment


def test_a_different_prompt_is_a_different_config_map_and_pod_template() -> None:
    a = render()
    b = render(proposal=make_proposal(prompt=PROMPT + " "))
    assert a.names.deployment == b.names.deployment
    assert a.names.config_map != b.names.config_map
    assert a.deployment["spec"]["template"] != b.deployment["spec"]["template"]


# --- where the stable's prompt comes from -----------------------------------------------------


def source(stable: dict[str, Any], **prompt: Any) -> PromptSource:
    return stable_prompt_source(stable_deployment=stable, prompt=PromptDelivery(**prompt))


def test_source_literal_env() -> None:
    assert source(stable_deployment()) == PromptSource(
        PromptSourceKind.LITERAL,
        "agent",
        literal="You classify tickets.",
        detail="env SYSTEM_PROMPT of container 'agent' is a literal value",
    )


def test_source_config_map_key_ref_and_last_entry_wins() -> None:
    stable = stable_deployment()
    env = stable["spec"]["template"]["spec"]["containers"][0]["env"]
    env.append(
        {"name": "SYSTEM_PROMPT", "valueFrom": {"configMapKeyRef": {"name": "p", "key": "k"}}}
    )
    found = source(stable)
    assert (found.kind, found.config_map, found.key) == (PromptSourceKind.CONFIG_MAP_KEY, "p", "k")


@pytest.mark.parametrize(
    ("env", "detail"),
    [
        (
            {"name": "SYSTEM_PROMPT", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            "secretKeyRef",
        ),
        ({"name": "OTHER", "value": "x"}, "sets no env var SYSTEM_PROMPT"),
    ],
)
def test_source_unknown_env(env: dict[str, Any], detail: str) -> None:
    stable = stable_deployment()
    agent = stable["spec"]["template"]["spec"]["containers"][0]
    agent["env"] = [env]
    agent["envFrom"] = [{"configMapRef": {"name": "agent-env"}}]
    found = source(stable)
    if env["name"] == "OTHER":
        # Not set explicitly: it may come from envFrom, resolved once the ConfigMap is read
        # (tests/unit/test_prompt_reader.py).
        assert found.kind is PromptSourceKind.ENV_FROM and "agent-env" in found.detail
        assert [r.name for r in found.env_from] == ["agent-env"]
        agent["envFrom"] = []
        found = source(stable)
    assert found.kind is PromptSourceKind.UNKNOWN and detail in found.detail


@pytest.mark.parametrize(
    ("volume", "mount", "expected"),
    [
        (
            {"configMap": {"name": "cm"}},
            {"mountPath": "/etc/agent/prompt.txt", "subPath": "prompt"},
            ("cm", "prompt"),
        ),
        ({"configMap": {"name": "cm"}}, {"mountPath": "/etc/agent"}, ("cm", "prompt.txt")),
        (
            {"configMap": {"name": "cm", "items": [{"key": "system", "path": "prompt.txt"}]}},
            {"mountPath": "/etc/agent/"},
            ("cm", "system"),
        ),
        (
            {"configMap": {"name": "cm", "items": [{"key": "system", "path": "sub/prompt.txt"}]}},
            {"mountPath": "/etc/agent/prompt.txt", "subPath": "sub/prompt.txt"},
            ("cm", "system"),
        ),
        (
            {
                "projected": {
                    "sources": [
                        {"secret": {"name": "s"}},
                        {"configMap": {"name": "a", "items": [{"key": "x", "path": "other"}]}},
                        {"configMap": {"name": "b", "items": [{"key": "y", "path": "prompt.txt"}]}},
                    ]
                }
            },
            {"mountPath": "/etc/agent"},
            ("b", "y"),
        ),
        ({"secret": {"secretName": "s"}}, {"mountPath": "/etc/agent"}, "secret"),
        ({"emptyDir": {}}, {"mountPath": "/etc/agent"}, "emptyDir"),
        ({"configMap": {"name": "cm"}}, {"mountPath": "/etc/agent/prompt.txt"}, "a directory"),
        (
            {"configMap": {"name": "cm", "items": [{"key": "k", "path": "other"}]}},
            {"mountPath": "/etc/agent"},
            "no ConfigMap",
        ),
        ({"configMap": {"name": "cm"}}, {"mountPath": "/var/other"}, "volume 'root'"),
    ],
)
def test_source_file(volume: dict[str, Any], mount: dict[str, Any], expected: Any) -> None:
    stable = stable_deployment()
    pod = stable["spec"]["template"]["spec"]
    pod["volumes"] = [{"name": "root", "emptyDir": {}}, {"name": "prompt", **volume}]
    pod["containers"][0]["volumeMounts"] = [
        {"name": "root", "mountPath": "/etc"},
        {"name": "prompt", **mount},
    ]
    found = source(stable, mountPath="/etc/agent/prompt.txt")
    if isinstance(expected, tuple):
        assert found.kind is PromptSourceKind.FILE
        assert (found.config_map, found.key, found.path) == (*expected, "/etc/agent/prompt.txt")
    else:
        assert found.kind is PromptSourceKind.UNKNOWN and expected in found.detail, found.detail


@pytest.mark.parametrize("prompt", [{}, {"env": "PROMPT"}, {"mountPath": "/etc/agent/prompt.txt"}])
def test_a_rendered_challenger_points_back_to_its_config_map(prompt: dict[str, Any]) -> None:
    rendered = render(rollout=make_rollout(**prompt))
    found = source(rendered.deployment, **prompt)
    assert found.kind in (PromptSourceKind.CONFIG_MAP_KEY, PromptSourceKind.FILE)
    assert (found.config_map, found.key) == (rendered.names.config_map, PROMPT_CONFIGMAP_KEY)


def test_source_errors() -> None:
    with pytest.raises(RenderError, match="no containers"):
        source(_without_containers())
    with pytest.raises(RenderError, match="'nope'"):
        source(stable_deployment(), container="nope")
    with pytest.raises(RenderError, match="not both"):
        source(stable_deployment(), env="A", mountPath="/p")
