"""Shared fixtures: the real local control plane and a namespace per test.

The session fixture reuses the cluster ``KUBECONFIG`` points at when it answers ``/readyz``
(``make test`` points it at ``.cluster/kubeconfig``; ``make cluster-up`` beforehand makes repeated
runs fast), and otherwise builds (cached) and starts the local control plane, stopping it at the
end of the session. Only tests that ask for these fixtures touch a cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devenv import cluster

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = str(Path(sys.executable).parent / "kubectl")


@dataclass(frozen=True)
class KubeCluster:
    """The cluster the tests run against."""

    kubeconfig: Path

    def kubectl(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (as admin unless another kubeconfig is given)."""
        proc = subprocess.run(
            [KUBECTL, "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
        return proc


def _reachable(kubeconfig: str) -> bool:
    if not Path(kubeconfig).exists():
        return False
    try:
        proc = subprocess.run(
            [KUBECTL, "--kubeconfig", kubeconfig, "get", "--raw", "/readyz"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and proc.stdout.strip() == "ok"


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeCluster]:
    """The real API server, with promptloop's CRDs installed and Established."""
    configured = os.environ.get("KUBECONFIG", "")
    started = False
    if configured and _reachable(configured):
        kubeconfig = Path(configured)
    else:
        cluster.build()
        state = cluster.up()
        kubeconfig, started = state.kubeconfig, True
    kube_cluster = KubeCluster(kubeconfig)
    crds = [
        arg
        for path in sorted((ROOT / "crds").glob("promptloop.dev_*.yaml"))
        for arg in ("-f", str(path))
    ]
    kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", *crds)
    kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *crds)
    yield kube_cluster
    if started and not os.environ.get("PROMPTLOOP_KEEP_CLUSTER"):
        cluster.down()


@pytest.fixture
def namespace(kube: KubeCluster) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for it to go)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)
