"""The chart's observability, CRD-management and Argo CD options, rendered with real helm.

- the metrics Service selects the operator's pod and its ``metrics`` port; the ServiceMonitor
  (opt-in) selects that Service; the dashboard ConfigMap (opt-in) carries the dashboard file
  that tests/unit/test_dashboard.py checks against the exported metrics;
- ``observability.logFormat=json`` reaches the operator's arguments;
- ``crds.manage`` renders the CRDs of crds/ as templates, with ``helm.sh/resource-policy: keep``
  unless ``crds.keep=false``; off by default (Helm's crds/ directory does the install);
- ``argocd.customizations`` renders the same keys as manifests/argocd/argocd-cm.yaml, and the
  actions and health checks rendered from the chart pass the tests the Lua files pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helmtool import CHART, ROOT, Helm, helm
from tests.unit import test_argocd_actions, test_argocd_health, test_dashboard

__all__ = ["helm"]


def only(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_lint_strict_with_every_option_of_these_blocks_on(helm: Helm) -> None:
    helm.run(
        "lint",
        "--strict",
        str(CHART),
        "--set",
        "observability.logFormat=json",
        "--set",
        "observability.serviceMonitor.enabled=true",
        "--set",
        "observability.dashboard.enabled=true",
        "--set",
        "crds.manage=true",
        "--set",
        "argocd.customizations.enabled=true",
    )


def test_metrics_service_selects_the_operator_and_its_metrics_port(helm: Helm) -> None:
    objects = helm.template()
    [service] = only(objects, "Service")
    [deployment] = only(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [port] = service["spec"]["ports"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["targetPort"] == "metrics" and named["metrics"] == 9090
    assert "--metrics-port=9090" in container["args"]
    assert not only(objects, "ServiceMonitor") and not only(objects, "CustomResourceDefinition")
    off = helm.template("--set", "observability.service.enabled=false")
    assert not only(off, "Service")


def test_service_monitor_selects_the_metrics_service(helm: Helm) -> None:
    objects = helm.template(
        "--set",
        "observability.serviceMonitor.enabled=true",
        "--set",
        "observability.serviceMonitor.labels.release=kube-prometheus-stack",
        "--set",
        "observability.serviceMonitor.namespace=monitoring",
    )
    [monitor] = only(objects, "ServiceMonitor")
    [service] = only(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["promptloop-system"]}
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert (endpoint["path"], endpoint["interval"]) == ("/metrics", "30s")
    proc = helm.run(
        "template",
        "x",
        str(CHART),
        "--set",
        "observability.serviceMonitor.enabled=true",
        "--set",
        "observability.service.enabled=false",
        check=False,
    )
    assert proc.returncode != 0 and "needs observability.service.enabled" in proc.stderr


def test_dashboard_configmap_carries_the_tested_dashboard(helm: Helm) -> None:
    assert not only(helm.template(), "ConfigMap")
    objects = helm.template("--set", "observability.dashboard.enabled=true")
    [config_map] = only(objects, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    rendered = json.loads(config_map["data"]["promptloop.json"])
    assert rendered == json.loads((CHART / "dashboards" / "promptloop.json").read_text())
    # ...which is the file whose queries test_dashboard.py checks against the exported metrics.
    assert test_dashboard.DASHBOARD == CHART / "dashboards" / "promptloop.json"


def test_json_logs_reach_the_operator(helm: Helm) -> None:
    [deployment] = only(helm.template("--set", "observability.logFormat=json"), "Deployment")
    assert "--log-format=json" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    proc = helm.run(
        "template", "x", str(CHART), "--set", "observability.logFormat=xml", check=False
    )
    assert proc.returncode != 0 and "at '/observability/logFormat'" in proc.stderr


def _crds_on_disk() -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for doc in (yaml.safe_load(p.read_text()) for p in sorted((CHART / "crds").glob("*.yaml")))
    }


def test_crds_as_templates_are_the_crds_with_a_keep_policy(helm: Helm) -> None:
    objects = helm.template("--set", "crds.manage=true")
    rendered = {o["metadata"]["name"]: o for o in only(objects, "CustomResourceDefinition")}
    on_disk = _crds_on_disk()
    assert (
        set(rendered)
        == set(on_disk)
        == {
            "agentrollouts.promptloop.dev",
            "promptproposals.promptloop.dev",
        }
    )
    for name, crd in rendered.items():
        assert crd["spec"] == on_disk[name]["spec"], f"{name}: the template changed the schema"
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    dropped = helm.template("--set", "crds.manage=true", "--set", "crds.keep=false")
    for crd in only(dropped, "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})
    extra = helm.template("--set", "crds.manage=true", "--set", "crds.annotations.team=ml")
    for crd in only(extra, "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"] == {"team": "ml", "helm.sh/resource-policy": "keep"}


def _customizations(helm: Helm) -> dict[str, str]:
    objects = helm.template("--set", "argocd.customizations.enabled=true")
    [config_map] = only(objects, "ConfigMap")
    assert config_map["metadata"]["name"] == "promptloop-argocd-cm"
    data: dict[str, str] = config_map["data"]
    return data


def test_argocd_customizations_render_the_snippets_keys(helm: Helm) -> None:
    rendered = _customizations(helm)
    snippet = yaml.safe_load((ROOT / "manifests" / "argocd" / "argocd-cm.yaml").read_text())["data"]
    assert set(rendered) == set(snippet)
    for key, value in snippet.items():
        # Argo CD reads health keys as Lua and action keys as YAML: compare what it reads.
        if ".health." in key:
            assert rendered[key] == value, key
        else:
            assert yaml.safe_load(rendered[key]) == yaml.safe_load(value), key


@pytest.mark.parametrize("kind", ["AgentRollout", "PromptProposal"])
def test_actions_rendered_from_the_chart_pass_the_action_tests(
    helm: Helm, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = _customizations(helm)
    actions = yaml.safe_load(rendered[f"resource.customizations.actions.promptloop.dev_{kind}"])
    folder = tmp_path / "actions" / kind.lower()
    folder.mkdir(parents=True)
    (folder / "discovery.lua").write_text(actions["discovery.lua"])
    for definition in actions["definitions"]:
        (folder / f"{definition['name']}.lua").write_text(definition["action.lua"])
    health = tmp_path / "health"
    health.mkdir()
    (health / f"{kind.lower()}.lua").write_text(
        rendered[f"resource.customizations.health.promptloop.dev_{kind}"]
    )
    # The same assertions as for the files in manifests/argocd, on the rendered text.
    monkeypatch.setattr(test_argocd_actions, "ARGOCD", tmp_path)
    monkeypatch.setitem(test_argocd_health.SCRIPTS, kind, health / f"{kind.lower()}.lua")
    if kind == "PromptProposal":
        for phase in test_argocd_actions.PROPOSAL_PHASES:
            for approved in (None, False, True):
                for marked in (False, True):
                    test_argocd_actions.test_proposal_actions_are_offered_exactly_when_the_cli_would_act(
                        phase, approved, marked
                    )
        test_argocd_actions.test_proposal_approve_patches_only_spec_approved()
        test_argocd_actions.test_proposal_reject_marks_it_and_withdraws_an_approval()
    else:
        for phase, expected in test_argocd_actions.ROLLOUT_OFFERS.items():
            test_argocd_actions.test_rollout_actions_follow_its_canary(phase, expected)
        for action, annotation in (
            ("approve", test_argocd_actions.APPROVE_CANARY),
            ("reject", test_argocd_actions.REJECT_CANARY),
        ):
            test_argocd_actions.test_rollout_action_names_the_canarys_proposal_and_prompt_digest(
                action, annotation
            )
    for obj in test_argocd_health.captured():
        if obj["kind"] == kind:
            test_argocd_health.test_captured_status_gets_the_documented_health(obj)
