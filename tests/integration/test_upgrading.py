"""The chart managing the CRDs as templates (``crds.manage``), on the real API server with helm.

docs/upgrading.md B: an existing set of CRDs (here the session's, installed from crds/ by the
test harness, as a first ``helm install`` would have) is adopted into a release, ``helm upgrade``
then changes them (what Helm never does for crds/), and ``helm uninstall`` leaves them, and the
objects of both kinds, in place because of ``helm.sh/resource-policy: keep``. The destructive
``crds.keep=false`` uninstall is not exercised: it would delete the CRDs every other test uses.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import yaml

from tests.conftest import KubeCluster
from tests.helmtool import CHART, ROOT, Helm, helm

__all__ = ["helm"]

pytestmark = pytest.mark.cluster

CRDS = ("agentrollouts.promptloop.dev", "promptproposals.promptloop.dev")
HELM_KEYS = ("meta.helm.sh/release-name", "meta.helm.sh/release-namespace")


def crd(kube: KubeCluster, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads(kube.kubectl("get", "crd", name, "-o", "json").stdout)  # type: ignore[no-any-return]


@pytest.fixture
def release_owned_crds(kube: KubeCluster) -> Iterator[None]:
    """Afterwards, the CRDs belong to no release again (other tests install the chart too)."""
    yield
    for name in CRDS:
        kube.kubectl(
            "annotate",
            "crd",
            name,
            *(f"{k}-" for k in HELM_KEYS),
            "helm.sh/resource-policy-",
            "team-",
            check=False,
        )
        kube.kubectl("label", "crd", name, "app.kubernetes.io/managed-by-", check=False)


def test_crds_as_templates_are_adopted_upgraded_and_kept(
    helm: Helm, kube: KubeCluster, namespace: str, release_owned_crds: None
) -> None:
    release = f"crd{uuid.uuid4().hex[:6]}"
    # Adopt the existing CRDs, as docs/upgrading.md says.
    for name in CRDS:
        kube.kubectl("label", "crd", name, "app.kubernetes.io/managed-by=Helm", "--overwrite")
        kube.kubectl(
            "annotate",
            "crd",
            name,
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
            "--overwrite",
        )
    values = ("--set", "crds.manage=true", "--set", "improver.denyApproval=false")
    installed = helm.run(
        "install",
        release,
        str(CHART),
        "-n",
        namespace,
        "--skip-crds",
        *values,
        kubeconfig=kube.kubeconfig,
    )
    assert "managed by this release (crds.manage=true) and kept on uninstall" in installed.stdout
    for name in CRDS:
        metadata = crd(kube, name)["metadata"]
        assert metadata["annotations"]["helm.sh/resource-policy"] == "keep"
        assert metadata["labels"]["app.kubernetes.io/instance"] == release

    # An object of each kind exists across the upgrade and the uninstall.
    sample = yaml.safe_load((ROOT / "examples" / "samples" / "agentrollout.yaml").read_text())
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(sample))

    # helm upgrade reaches the CRDs (a crds/ directory it would never touch).
    helm.run(
        "upgrade",
        release,
        str(CHART),
        "-n",
        namespace,
        *values,
        "--set",
        "crds.annotations.team=ml",
        kubeconfig=kube.kubeconfig,
    )
    for name in CRDS:
        assert crd(kube, name)["metadata"]["annotations"]["team"] == "ml"

    helm.run("uninstall", release, "-n", namespace, kubeconfig=kube.kubeconfig)
    for name in CRDS:
        kept = crd(kube, name)
        assert kept["metadata"].get("deletionTimestamp") is None, f"{name} is being deleted"
    still = kube.kubectl("get", "agentrollout", sample["metadata"]["name"], "-n", namespace)
    assert still.returncode == 0
