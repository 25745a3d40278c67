"""Shards by namespace: two operator releases, each with its own namespaces and its own Lease,
each reconciling its own rollouts and never the other's (docs/scale-and-ha.md)."""

from __future__ import annotations

import re
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import KubeCluster
from tests.integration.conftest import Scenario
from tests.integration.harness import OperatorProcess, wait_for
from tests.integration.test_failover import LEADING

pytestmark = pytest.mark.cluster


@pytest.fixture
def other_scenario(
    kube: KubeCluster, agentfield: object, operator_kubeconfig: Path, tmp_path: Path
) -> Iterator[Scenario]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", name)
    (tmp_path / "other").mkdir()
    world = Scenario(kube, name, agentfield, operator_kubeconfig, tmp_path / "other")  # type: ignore[arg-type]
    try:
        yield world
    finally:
        world.close()
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _rollout_namespaces(operator: OperatorProcess) -> set[str]:
    """Namespaces of the rollouts this operator has reconciled (its own phase gauges)."""
    assert operator.proc is not None
    args = Path(f"/proc/{operator.proc.pid}/cmdline").read_bytes().split(b"\0")
    port = int(args[args.index(b"--metrics-port") + 1])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return set(re.findall(r'^promptloop_rollout_phase\{namespace="([^"]+)"', text, re.M))


def test_two_shards_each_own_their_namespace(scenario: Scenario, other_scenario: Scenario) -> None:
    shards = []
    for world in (scenario, other_scenario):
        world.setup()
        shards.append(
            world.start_operator(
                "--leader-election",
                "--lease-name",
                f"shard-{world.namespace}",
                "--lease-namespace",
                "promptloop-system",
            )
        )
    for world, operator in zip((scenario, other_scenario), shards, strict=True):
        # Each shard leads on its own Lease: neither waits for the other.
        wait_for(lambda o=operator: LEADING in o.log_text(), timeout=30, what="a shard leading")  # type: ignore[misc]
        world.wait_rollout(
            lambda r: r.get("status", {}).get("phase") == "Stable", "Stable", timeout=60
        )
    for world, operator in zip((scenario, other_scenario), shards, strict=True):
        wait_for(
            lambda o=operator: bool(_rollout_namespaces(o)),  # type: ignore[misc]
            timeout=30,
            what="the shard's phase gauge",
        )
        assert _rollout_namespaces(operator) == {world.namespace}
    leases = {
        name: scenario.kube.kubectl(
            "get",
            "lease",
            name,
            "-n",
            "promptloop-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ).stdout
        for name in (f"shard-{scenario.namespace}", f"shard-{other_scenario.namespace}")
    }
    assert all(leases.values()) and len(set(leases.values())) == 2, leases
    for name in leases:
        scenario.kube.kubectl("delete", "lease", name, "-n", "promptloop-system", check=False)
