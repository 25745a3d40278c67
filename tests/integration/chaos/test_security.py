"""Least privilege, tried for real (issue 15, Deliver 6): every verb on every resource outside
the operator's and the improver's ClusterRoles is attempted with their ServiceAccount tokens
and must answer 403; every verb inside them is confirmed allowed by a SelfSubjectAccessReview
(so the table is exactly the roles we ship, not a guess). Attempts are real requests to the API
server; refused requests change nothing, and allowed ones are never sent.

The secret-grep half of Deliver 6 runs inside every other chaos test (``sweep_for_secrets``).
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import KubeCluster
from tests.integration.chaos.ledger import LEDGER
from tests.integration.harness import service_account_kubeconfig

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[3]

VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
# (group, version, resource, namespaced)
RESOURCES: list[tuple[str, str, str, bool]] = [
    ("promptloop.dev", "v1alpha1", "agentrollouts", True),
    ("promptloop.dev", "v1alpha1", "agentrollouts/status", True),
    ("promptloop.dev", "v1alpha1", "promptproposals", True),
    ("promptloop.dev", "v1alpha1", "promptproposals/status", True),
    ("promptloop.dev", "v1alpha1", "promptproposals/finalizers", True),
    ("apps", "v1", "deployments", True),
    ("apps", "v1", "deployments/scale", True),
    ("apps", "v1", "replicasets", True),
    ("", "v1", "configmaps", True),
    ("", "v1", "secrets", True),
    ("", "v1", "pods", True),
    ("", "v1", "pods/exec", True),
    ("", "v1", "services", True),
    ("", "v1", "serviceaccounts", True),
    ("", "v1", "serviceaccounts/token", True),
    ("", "v1", "events", True),
    ("events.k8s.io", "v1", "events", True),
    ("coordination.k8s.io", "v1", "leases", True),
    ("rbac.authorization.k8s.io", "v1", "roles", True),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", True),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", False),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", False),
    ("", "v1", "namespaces", False),
    ("", "v1", "nodes", False),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", False),
    ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", False),
]
SUBRESOURCE_VERBS = {"get", "update", "patch", "create"}


def _allowed(role_file: Path) -> set[tuple[str, str, str]]:
    """(group, resource, verb) triples the ClusterRole in ``role_file`` grants."""
    granted: set[tuple[str, str, str]] = set()
    for doc in yaml.safe_load_all(role_file.read_text()):
        if not doc or doc.get("kind") != "ClusterRole":
            continue
        for rule in doc["rules"]:
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        granted.add((group, resource, verb))
    return granted


class Identity:
    """Raw HTTP to the API server as a ServiceAccount, from its kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        context = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
        token = config["users"][0]["user"]["token"]
        self.http = httpx.Client(
            base_url=cluster["server"],
            verify=context,
            headers={"Authorization": f"Bearer {token}"},
            timeout=15,
        )

    def attempt(
        self, group: str, version: str, resource: str, namespaced: bool, verb: str, namespace: str
    ) -> int:
        """Send the request ``verb`` means; returns the HTTP status."""
        base = "/api/v1" if not group else f"/apis/{group}/{version}"
        plural, _, sub = resource.partition("/")
        collection = f"{base}/namespaces/{namespace}/{plural}" if namespaced else f"{base}/{plural}"
        item = f"{collection}/chaos-probe" + (f"/{sub}" if sub else "")
        method, url, params = {
            "get": ("GET", item, {}),
            "list": ("GET", collection, {}),
            "watch": ("GET", collection, {"watch": "true", "timeoutSeconds": "1"}),
            "create": ("POST", item if sub else collection, {}),
            "update": ("PUT", item, {}),
            "patch": ("PATCH", item, {}),
            "delete": ("DELETE", item, {}),
            "deletecollection": ("DELETE", collection, {}),
        }[verb]
        headers = {
            "Content-Type": "application/merge-patch+json"
            if verb == "patch"
            else "application/json"
        }
        body = None if method in ("GET", "DELETE") else b"{}"
        response = self.http.request(method, url, params=params, content=body, headers=headers)
        return response.status_code

    def can_i(self, group: str, resource: str, verb: str, namespace: str, namespaced: bool) -> bool:
        """A SelfSubjectAccessReview: what the authorizer says without trying."""
        plural, _, sub = resource.partition("/")
        attributes: dict[str, Any] = {"group": group, "resource": plural, "verb": verb}
        if sub:
            attributes["subresource"] = sub
        if namespaced:
            attributes["namespace"] = namespace
        review = self.http.post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            json={
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes},
            },
        )
        review.raise_for_status()
        return bool(review.json()["status"].get("allowed"))


@pytest.mark.parametrize(
    ("account", "role_file"),
    [
        ("promptloop-operator", "manifests/base/rbac.yaml"),
        ("promptloop-improver", "manifests/base/improver-rbac.yaml"),
    ],
)
def test_service_accounts_are_refused_everything_outside_their_roles(
    kube: KubeCluster, namespace: str, tmp_path: Path, account: str, role_file: str
) -> None:
    kube.kubectl("apply", "-f", str(ROOT / "manifests/base/namespace.yaml"))
    kube.kubectl("apply", "-f", str(ROOT / role_file))
    identity = Identity(service_account_kubeconfig(kube, tmp_path / "kubeconfig", account=account))
    granted = _allowed(ROOT / role_file)
    row = LEDGER.row(f"RBAC: {account} outside its role")
    table: list[tuple[str, str, str]] = []
    for group, version, resource, namespaced in RESOURCES:
        verbs = SUBRESOURCE_VERBS if "/" in resource else VERBS
        for verb in VERBS:
            if verb not in verbs:
                continue
            label = f"{group or 'core'}/{resource}"
            if (group, resource, verb) in granted:
                allowed = identity.can_i(group, resource, verb, namespace, namespaced)
                table.append((label, verb, "allowed" if allowed else "DENIED (but granted)"))
                if not allowed:
                    row.violations.append(
                        f"{label} {verb}: granted by the role, denied by the server"
                    )
                continue
            row.injected += 1
            status = identity.attempt(group, version, resource, namespaced, verb, namespace)
            table.append((label, verb, str(status)))
            if status == 403:
                row.recovered += 1
            else:
                row.violations.append(f"{label} {verb}: HTTP {status}, expected 403")
    row.notes["table"] = [" ".join(entry) for entry in table]
    print(f"\n{account}:\n" + "\n".join(f"  {r:48} {v:17} {s}" for r, v, s in table))
    assert row.injected > 50
    assert not row.violations, "\n".join(row.violations)
