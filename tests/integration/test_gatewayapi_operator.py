"""A canary on ``spec.router.gatewayAPI``, end to end on the real API server.

The operator runs as a subprocess under a ServiceAccount holding exactly the ClusterRole
``manifests/gateway-api`` ships; the HTTPRoute is a real ``gateway.networking.k8s.io/v1`` object
(upstream CRDs, CEL on). There is no Gateway API data plane here (README), so the simulated
agents' traffic driver splits by the HTTPRoute's weights **read back from the API server**, and
every assertion about weights reads the route from the API server too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import KubeCluster
from tests.integration.harness import AgentSim, OperatorProcess, wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
BETTER = "Classify the ticket as billing, bug, or other. Refunds are billing. One word."
WORSE = "Say other."


class GatewayWorld:
    """One agent on Gateway API: stable Deployment, HTTPRoute, rollout, simulated traffic."""

    def __init__(self, kube: KubeCluster, namespace: str, kubeconfig: Path, logs: Path) -> None:
        self.kube = kube
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.logs = logs
        self.operator: OperatorProcess | None = None
        # AgentField plays no part: nothing registers; the URL is never called.
        self.agents = AgentSim("http://127.0.0.1:9", "unused", "classifier")
        self.agents.weights_source = self.route_weights
        self.agents.add_version("2.0.0", 0.30)

    def apply(self, obj: dict[str, Any]) -> None:
        self.kube.kubectl("apply", "-n", self.namespace, "-f", "-", stdin=json.dumps(obj))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        out = self.kube.kubectl("get", kind, name, "-n", self.namespace, "-o", "json").stdout
        loaded: dict[str, Any] = json.loads(out)
        return loaded

    def setup(self) -> None:
        self.apply(
            yaml.safe_load((ROOT / "examples/samples/classifier-deployment.yaml").read_text())
        )
        self.apply(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "classifier"},
                "spec": {
                    "parentRefs": [{"name": "agents"}],
                    "rules": [
                        {
                            "backendRefs": [
                                {"name": "classifier-stable", "port": 8000, "weight": 100},
                                {"name": "classifier-canary", "port": 8000, "weight": 0},
                            ]
                        }
                    ],
                },
            }
        )
        self.apply(
            {
                "apiVersion": "promptloop.dev/v1alpha1",
                "kind": "AgentRollout",
                "metadata": {"name": "classifier"},
                "spec": {
                    "agent": {"nodeId": "classifier"},
                    "stable": {"version": "2.0.0", "deploymentName": "classifier"},
                    "router": {"gatewayAPI": {"httpRoute": "classifier", "port": 8000}},
                    "metrics": {"http": {"url": self.agents.metrics_url}},
                    "canary": {
                        "initialWeight": 10,
                        "maxStep": 20,
                        "ceiling": 50,
                        "floor": 0,
                        "interval": "1s",
                        "minSamples": 30,
                        "alpha": 0.05,
                        "progressDeadline": "60s",
                    },
                },
            }
        )
        self.operator = OperatorProcess(
            kubeconfig=self.kubeconfig, namespace=self.namespace, log_path=self.logs / "op.log"
        )
        self.operator.start()

    def route_weights(self) -> dict[str, int]:
        """The split as the API server holds it: backendRef weights, Services to versions."""
        route = self.get("httproute", "classifier")
        refs = {r["name"]: r.get("weight", 1) for r in route["spec"]["rules"][0]["backendRefs"]}
        weights: dict[str, int] = {}
        for service in ("classifier-stable", "classifier-canary"):
            selector = self.get("service", service)["spec"]["selector"]
            version = (
                selector.get("promptloop.dev/version") or selector["app.kubernetes.io/version"]
            )
            weights[version] = weights.get(version, 0) + refs[service]
        return weights

    def rollout(self) -> dict[str, Any]:
        return self.get("agentrollout", "classifier")

    def wait(self, predicate: Any, what: str, timeout: float = 60) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            rollout = self.rollout()
            return rollout if predicate(rollout) else None

        try:
            found: dict[str, Any] = wait_for(reached, timeout=timeout, what=what, interval=0.2)
        except AssertionError as error:
            tail = self.operator.log_tail(40) if self.operator else ""
            status = json.dumps(self.rollout().get("status", {}))[-2500:]
            raise AssertionError(f"{error}\nstatus: {status}\nlog:\n{tail}") from None
        return found

    def proposal_phase(self, name: str) -> str | None:
        phase: str | None = self.get("promptproposal", name).get("status", {}).get("phase")
        return phase

    def propose(self, name: str, version: str, prompt: str) -> None:
        self.apply(
            {
                "apiVersion": "promptloop.dev/v1alpha1",
                "kind": "PromptProposal",
                "metadata": {"name": name},
                "spec": {
                    "rolloutRef": {"name": "classifier"},
                    "version": version,
                    "systemPrompt": prompt,
                    "rationale": "test",
                },
            }
        )

    def close(self) -> None:
        if self.operator is not None:
            self.operator.stop()
        self.agents.close()
        for kind in ("agentrollout", "promptproposal"):
            self.kube.kubectl(
                "patch",
                kind,
                "--all",
                "-n",
                self.namespace,
                "--type",
                "merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )


@pytest.fixture
def world(kube: KubeCluster, router_kubeconfig: Path, tmp_path: Path) -> Iterator[GatewayWorld]:
    namespace = f"gw-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", namespace)
    found = GatewayWorld(kube, namespace, router_kubeconfig, tmp_path)
    try:
        yield found
    finally:
        found.close()
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def _canary_weight(rollout: dict[str, Any]) -> int:
    return int((_status(rollout).get("canary") or {}).get("weight") or 0)


def _status_raw(rollout: dict[str, Any]) -> dict[str, int]:
    return {w["version"]: w["raw"] for w in _status(rollout).get("weights") or []}


def test_steps_awaits_approval_promotes_then_rolls_back(world: GatewayWorld) -> None:
    world.setup()
    world.wait(lambda r: _status(r).get("phase") == "Stable", "Stable")
    assert world.route_weights() == {"2.0.0": 100}

    world.propose("classifier-2-1-0", "2.1.0", BETTER)
    world.agents.add_version("2.1.0", 0.02)
    seen: set[int] = set()

    def stepping(rollout: dict[str, Any]) -> bool:
        weight = _canary_weight(rollout)
        if weight:
            seen.add(weight)
            # Every weight status reports is the one the API server holds (read back).
            raw = _status_raw(rollout)
            if raw.get("2.1.0") == weight:
                assert raw["2.0.0"] == 100 - weight
        return _status(rollout).get("phase") == "AwaitingApproval"

    waiting = world.wait(stepping, "AwaitingApproval", timeout=120)
    weight = _canary_weight(waiting)
    assert 0 < weight < 50
    assert world.route_weights() == {"2.0.0": 100 - weight, "2.1.0": weight}
    assert min(seen) == 10 and len(seen) >= 2  # seeded, then stepped
    assert (
        world.get("service", "classifier-canary")["spec"]["selector"]["promptloop.dev/version"]
        == "2.1.0"
    )

    world.kube.kubectl(
        "patch",
        "pp",
        "classifier-2-1-0",
        "-n",
        world.namespace,
        "--type",
        "merge",
        "-p",
        '{"spec":{"approved":true}}',
    )
    world.wait(lambda r: _canary_weight(r) >= 50, "the ceiling after approval", timeout=15)
    assert world.route_weights()["2.1.0"] >= 50
    world.wait(lambda r: _status(r).get("stableVersion") == "2.1.0", "promoted", timeout=120)
    assert world.proposal_phase("classifier-2-1-0") == "Promoted"
    # Promotion: the stable Service selects 2.1.0 and carries the whole weight.
    stable = world.get("service", "classifier-stable")["spec"]["selector"]
    assert stable["promptloop.dev/version"] == "2.1.0"
    world.wait(lambda r: world.route_weights() == {"2.1.0": 100}, "2.1.0 takes it all", 30)

    # A worse challenger is rolled back, and weight 0 drains it on this router.
    world.propose("classifier-2-2-0", "2.2.0", WORSE)
    world.agents.add_version("2.2.0", 0.60)
    world.wait(lambda r: _canary_weight(r) > 0, "2.2.0 seeded", timeout=60)
    world.wait(
        lambda r: world.proposal_phase("classifier-2-2-0") == "RolledBack",
        "2.2.0 rolled back",
        timeout=90,
    )
    route = world.get("httproute", "classifier")
    weights = {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"classifier-stable": 100, "classifier-canary": 0}
    assert world.route_weights() == {"2.1.0": 100}
