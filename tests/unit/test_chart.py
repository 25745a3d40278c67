"""The Helm chart without a cluster: lint, render, schema, and equivalence with manifests/.

helm is built from the Go module proxy on first use (tests/helmtool.py); kustomize is kubectl's.
What is checked here and why:

- ``helm lint --strict`` with the defaults and with every optional part switched on;
- the rendered operator Deployment has what the issue asks for (one replica, Recreate, liveness
  probe, requests, non-root, read-only root filesystem) and the RBAC shape of each mode;
- bad values fail with the offending key's path and what was wrong;
- the chart's defaults and ``manifests/base`` grant exactly the same rules to the same accounts,
  and the optional pieces under ``manifests/`` are what the chart renders;
- the chart's ``crds/`` are the generated CRDs, byte for byte;
- the Dockerfile installs the package and runs it as the chart's non-root user.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptloop.api import crdgen
from tests.helmtool import CHART, ROOT, Helm, helm

__all__ = ["helm"]

KUBECTL = str(Path(sys.executable).parent / "kubectl")
MAP_API = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
# Labels only Helm adds; everything else must match manifests/ exactly.
HELM_LABELS = {
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
}
FULL_VALUES = [
    "--set",
    r"watchNamespace=team-a\,team-b",
    "--set",
    "improver.enabled=true",
    "--set",
    "improver.targets[0].rollout=classifier",
    "--set",
    "improver.targets[0].namespace=team-a",
    "--set",
    "approvalPolicy.enabled=true",
]


def kustomize(path: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(ROOT / path)], capture_output=True, text=True, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects
    }


def only(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def strip_helm_labels(obj: Any) -> Any:
    """A copy without Helm's bookkeeping labels, at any depth (pod templates included)."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if key in ("labels", "matchLabels") and isinstance(value, dict):
                value = {k: v for k, v in value.items() if k not in HELM_LABELS}
            out[key] = strip_helm_labels(value)
        return out
    if isinstance(obj, list):
        return [strip_helm_labels(item) for item in obj]
    return obj


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


# -- lint and render ----------------------------------------------------------------------------


def test_lint_strict_with_defaults_and_with_everything_on(helm: Helm) -> None:
    helm.run("lint", "--strict", str(CHART))
    helm.run("lint", "--strict", str(CHART), *FULL_VALUES)


def test_default_render_operator_deployment(helm: Helm) -> None:
    objects = helm.template()
    [deployment] = only(objects, "Deployment")
    spec = deployment["spec"]
    # One acts, one waits on the Lease with warm caches; an upgrade starts the new pod as a
    # standby before the old one goes (it releases the Lease on SIGTERM).
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "promptloop-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    main = container(deployment)
    assert main["args"] == [
        "operator",
        "--liveness-port=8080",
        "--metrics-port=9090",
        "--leader-election",
        "--lease-name=promptloop-operator",
    ]
    assert main["env"][0]["name"] == "POD_NAME"  # the Lease holder's identity
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert main["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert main["image"] == "ghcr.io/promptloop/operator:0.1.0"  # the chart's appVersion
    kinds = {o["kind"] for o in objects}
    # Off by default: the CronJob and the approval policies. On: the improver cannot approve.
    assert kinds == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    # The only namespaced grant: the Lease, in the release namespace, nothing else.
    [role] = only(objects, "Role")
    assert role["metadata"] == {**role["metadata"], "namespace": "promptloop-system"}
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    [policy] = only(objects, "ValidatingAdmissionPolicy")
    assert policy["metadata"]["name"] == "promptloop-improver-cannot-approve"
    assert "system:serviceaccount:promptloop-system:promptloop-improver" in str(policy["spec"])


def test_watch_namespace_gets_roles_and_no_cluster_rbac(helm: Helm) -> None:
    objects = helm.template(*FULL_VALUES, release="team", namespace="ops")
    assert not only(objects, "ClusterRole") and not only(objects, "ClusterRoleBinding")
    roles = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in only(objects, "Role")}
    assert roles == {
        (ns, f"team-promptloop-{who}")
        for ns in ("team-a", "team-b")
        for who in ("operator", "improver")
    } | {("ops", "team-promptloop-operator-leader-election")}
    for binding in only(objects, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        [subject] = binding["subjects"]
        assert subject["namespace"] == "ops"  # the accounts live in the release namespace
    [deployment] = only(objects, "Deployment")
    assert container(deployment)["args"][-2:] == ["--namespace=team-a", "--namespace=team-b"]
    # The namespaced Roles carry exactly the ClusterRole's rules.
    cluster_rules = only(helm.template(), "ClusterRole")
    operator_rules = next(r for r in cluster_rules if r["metadata"]["name"].endswith("operator"))
    for role in only(objects, "Role"):
        if role["metadata"]["name"].endswith("operator"):
            assert role["rules"] == operator_rules["rules"]


def test_improver_target_outside_watched_namespaces_fails(helm: Helm) -> None:
    proc = helm.run(
        "template",
        "x",
        str(CHART),
        *FULL_VALUES,
        "--set",
        "improver.targets[0].namespace=elsewhere",
        check=False,
    )
    assert proc.returncode != 0
    assert 'namespace "elsewhere" is not in watchNamespace' in proc.stderr


def test_cluster_scoped_names_derive_from_the_release(helm: Helm) -> None:
    names = {
        o["metadata"]["name"]
        for o in helm.template(
            "--set", "approvalPolicy.enabled=true", "--api-versions", MAP_API, release="canary-7"
        )
        if "namespace" not in o["metadata"]
    }
    assert names and all(name.startswith("canary-7-promptloop-") for name in names)


# -- values.schema.json -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "path", "reason"),
    [
        (["--set", "watchNamespace=Team A"], "/watchNamespace", "does not match pattern"),
        (["--set", "operator.replicas=0"], "/operator/replicas", "minimum: got 0, want 1"),
        (["--set", "operator.replica=2"], "/operator", "additional properties 'replica'"),
        (["--set", "improver.enabled=true"], "/improver/targets", "minItems: got 0, want 1"),
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy", "must be one of"),
        (["--set", "operator.livenessPort=0"], "/operator/livenessPort", "minimum: got 0"),
        (
            [
                "--set",
                "improver.enabled=true",
                "--set",
                "improver.schedule=hourly",
                "--set",
                "improver.targets[0].rollout=a",
                "--set",
                "improver.targets[0].namespace=b",
            ],
            "/improver/schedule",
            "does not match pattern",
        ),
        (
            ["--set", 'approvalPolicy.groups[0]=ops" || true'],
            "/approvalPolicy/groups/0",
            "does not match pattern",
        ),
        (
            ["--set", "approvalPolicy.enabled=true", "--set-json", "approvalPolicy.groups=[]"],
            "/approvalPolicy/groups",
            "minItems: got 0, want 1",
        ),
        (["--set", "improver.targets[0].rollout=a"], "/improver/targets/0", "missing property"),
    ],
)
def test_schema_rejects_bad_values_naming_the_key(
    helm: Helm, values: list[str], path: str, reason: str
) -> None:
    proc = helm.run("template", "x", str(CHART), *values, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert f"at '{path}'" in proc.stderr, proc.stderr
    assert reason in proc.stderr, proc.stderr


# -- equivalence with manifests/ ----------------------------------------------------------------


def test_rbac_and_operator_equal_manifests_base(helm: Helm) -> None:
    chart = by_key(strip_helm_labels(helm.template()))
    base = by_key(kustomize("manifests/base"))
    chart_rbac = {k: v for k, v in chart.items() if k[0] in RBAC_KINDS}
    base_rbac = {k: v for k, v in base.items() if k[0] in RBAC_KINDS}
    assert sorted(chart_rbac) == sorted(base_rbac)
    for key, obj in base_rbac.items():
        for field in ("rules", "roleRef", "subjects"):
            assert chart_rbac[key].get(field) == obj.get(field), (key, field)
    # The same Deployment, up to Helm's labels, its instance selector and the pull policy.
    key = ("Deployment", "promptloop-system", "promptloop-operator")
    chart_pod = chart[key]["spec"]["template"]["spec"]
    base_pod = base[key]["spec"]["template"]["spec"]
    chart_pod["containers"][0].pop("imagePullPolicy")
    assert chart_pod == base_pod
    for field in ("replicas", "strategy"):
        assert chart[key]["spec"][field] == base[key]["spec"][field]
    # The improver-cannot-approve policy and its binding.
    for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        key = (kind, "", "promptloop-improver-cannot-approve")
        assert chart[key]["spec"] == base[key]["spec"]
    # Helm never creates the release namespace; the base does. Nothing else differs.
    extra = {k for k in base if k[0] not in ("Namespace", "CustomResourceDefinition")}
    assert extra == set(chart)


def test_improver_cronjob_equals_the_manifest_example(helm: Helm) -> None:
    rendered = strip_helm_labels(
        helm.template(
            "--set",
            "improver.enabled=true",
            "--set",
            "improver.targets[0].rollout=classifier",
            "--set",
            "improver.targets[0].namespace=demo",
            "--set",
            "improver.extraArgs[0]=--evaluate",
            "--set",
            "improver.openai.baseUrl=https://api.openai.com/v1",
            "--set",
            "improver.openai.apiKeySecret.name=promptloop-openai",
        )
    )
    [chart_job] = only(rendered, "CronJob")
    [example] = only(kustomize("manifests/improver"), "CronJob")
    assert chart_job["metadata"]["name"] == example["metadata"]["name"]
    chart_container = chart_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    chart_container.pop("imagePullPolicy")
    assert chart_job["spec"] == example["spec"]
    assert chart_job["metadata"]["labels"] == example["metadata"]["labels"]


def test_approval_policy_manifest_equals_the_chart(helm: Helm) -> None:
    rendered = helm.template(
        "--set",
        "approvalPolicy.enabled=true",
        "--api-versions",
        MAP_API,
        "--show-only",
        "templates/approval-policy.yaml",
    )
    assert by_key(strip_helm_labels(rendered)) == by_key(kustomize("manifests/approval-policy"))


def test_mutating_policy_only_where_the_cluster_serves_it(helm: Helm) -> None:
    without = {o["kind"] for o in helm.template("--set", "approvalPolicy.enabled=true")}
    assert "ValidatingAdmissionPolicy" in without and "MutatingAdmissionPolicy" not in without
    off = helm.template(
        "--set",
        "approvalPolicy.enabled=true",
        "--set",
        "approvalPolicy.recordApprover=false",
        "--api-versions",
        MAP_API,
    )
    assert "MutatingAdmissionPolicy" not in {o["kind"] for o in off}


def test_improver_rules_cannot_approve_or_deploy(helm: Helm) -> None:
    [role] = [
        o
        for o in only(helm.template(), "ClusterRole")
        if o["metadata"]["name"].endswith("improver")
    ]
    grants = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # Exactly what operator/promptloop/k8s/proposals.py says `promptloop improve` needs.
    assert grants == {
        ("promptloop.dev", "agentrollouts", "get"),
        ("promptloop.dev", "promptproposals", "list"),
        ("promptloop.dev", "promptproposals", "create"),
        ("apps", "deployments", "get"),
        ("", "configmaps", "get"),
    }


def test_chart_crds_are_the_generated_crds() -> None:
    generated = crdgen.render_all()
    chart_crds = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert chart_crds == generated, "run `make crds` (it copies crds/ into the chart)"
    for name, text in generated.items():
        assert (ROOT / "crds" / name).read_text() == text


# -- the image ----------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, per stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    stages: list[list[tuple[str, str]]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def test_dockerfile_installs_the_package_and_runs_as_the_charts_user(helm: Helm) -> None:
    stages = dockerfile_stages()
    assert all(stage[0] == ("FROM", stage[0][1]) for stage in stages)
    assert all(stage[0][1].split()[0] == "python:3.11-slim" for stage in stages)
    runtime = dict(stages[-1])
    build_steps = " ".join(rest for stage in stages for ins, rest in stage if ins == "RUN")
    assert "pip install ." in build_steps
    # Every COPY source from the build context exists.
    for stage in stages:
        for instruction, rest in stage:
            if instruction == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    assert (ROOT / source).exists(), source
    user = runtime["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "USER must be numeric and not root"
    [deployment] = only(helm.template(), "Deployment")
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(user)
    assert runtime["ENTRYPOINT"] == '["promptloop"]'
    assert runtime["CMD"] == '["operator"]'
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'promptloop = "promptloop.cli:main"' in scripts
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"operator", "pyproject.toml", "README.md"} & set(ignored)


def test_gateway_api_rbac_only_when_enabled_and_equal_to_its_kustomization(helm: Helm) -> None:
    def rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        [role] = [
            o for o in only(objects, "ClusterRole") if o["metadata"]["name"].endswith("-operator")
        ]
        return list(role["rules"])

    gateway_rules = [
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create", "patch"]},
        {
            "apiGroups": ["gateway.networking.k8s.io"],
            "resources": ["httproutes"],
            "verbs": ["get", "patch"],
        },
    ]
    off = rules(helm.template())
    on = rules(helm.template("--set", "routers.gatewayAPI.enabled=true"))
    assert not any("services" in r["resources"] or "httproutes" in r["resources"] for r in off)
    assert on == off + gateway_rules
    assert rules(kustomize("manifests/gateway-api")) == on
    # Only what the router needs: no delete, no list or watch, no other Gateway API kind.
    assert all("delete" not in r["verbs"] for r in on)
