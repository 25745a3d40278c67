"""AgentField in front of a Gateway API route: execute → the route's address → the weighted split.

The pattern of README "AgentField in front of the gateway": every version registers with
AgentField with the HTTPRoute's address as its callback URL (``base_url``). AgentField's execute
route ignores weights and calls ``GetAgent``'s row (the smallest version string; the stand-in does
the same, pinned in tests/unit/test_agentfield_standin.py), but every row now points at the route,
so the split is the route's. Here:

- the operator runs as a subprocess under the ClusterRole ``manifests/gateway-api`` ships, with
  ``spec.router.gatewayAPI``, against the real API server and the upstream CRDs;
- the route's address is served by ``devenv.gateway_standin`` (a stand-in for a gateway data
  plane: none runs here, README), which reads the HTTPRoute, its Services and their Ready pods
  back from the API server and splits each request by the backendRefs' weights;
- traffic goes ONLY through the AgentField stand-in's ``POST /api/v1/execute/<node>.classify``;
  each version counts what reaches it, and those counts are the rollout's evidence;
- the challenger's version string sorts first (2.10.0 against 2.9.0), the case refused on the
  ``agentfield`` router: here it is not refused and gets its weight, neither 0 % nor 100 %.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from devenv.agentfield import AgentFieldHandle
from devenv.gateway_standin import GatewayStandin
from tests.conftest import KubeCluster
from tests.integration.harness import AgentSim, OperatorProcess, wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
BETTER = "Classify the ticket as billing, bug, or other. Refunds are billing. One word."
WORSE = "Say other."
STABLE, CHALLENGER, WORSE_CHALLENGER = "2.9.0", "2.10.0", "2.11.0"


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def _canary_weight(rollout: dict[str, Any]) -> int:
    return int((_status(rollout).get("canary") or {}).get("weight") or 0)


def _condition(rollout: dict[str, Any], kind: str) -> dict[str, Any]:
    found = (c for c in _status(rollout).get("conditions") or [] if c["type"] == kind)
    return next(found, {})


def sdk_base_url(agent_callback_url: str, listen_port: int) -> str:
    """The ``base_url`` the AgentField Python SDK registers when ``AGENT_CALLBACK_URL`` is set:
    its scheme and host, and the port the agent itself listens on (agentfield 0.1.144,
    ``agent_server.py:835-856``; an explicit ``callback_url`` has its port replaced the same way,
    ``:860-867``)."""
    parsed = urlsplit(agent_callback_url)
    return f"{parsed.scheme or 'http'}://{parsed.hostname}:{listen_port}"


class FrontedWorld:
    """One agent behind AgentField and a Gateway API route, in its own namespace."""

    def __init__(
        self,
        kube: KubeCluster,
        namespace: str,
        kubeconfig: Path,
        agentfield: AgentFieldHandle,
        logs: Path,
    ) -> None:
        from kubernetes import config

        self.kube = kube
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.logs = logs
        self.operator: OperatorProcess | None = None
        self.agents = AgentSim(agentfield.url, agentfield.token, f"gw-{uuid.uuid4().hex[:8]}")
        # Every call goes through AgentField's execute route, one at a time (as in
        # tests/integration/test_exposure.py: about 50 a second on two shared cores).
        self.agents.via_execute = True
        self.agents.requests_per_tick = 5
        self.api_client = config.new_client_from_config(config_file=str(kube.kubeconfig))
        agent_port = int(self.agents.server.server_address[1])
        # The route's address: another loopback address on the agents' own port, because the
        # SDK registers its listening port whatever port AGENT_CALLBACK_URL names (below).
        self.gateway = GatewayStandin(
            api_client=self.api_client,
            namespace=namespace,
            http_route="classifier",
            # A pod's process is the simulated agent of the version its labels name.
            address_of=lambda pod: self.agents.version_url(
                pod["metadata"]["labels"]["promptloop.dev/version"]
            ),
            seed=11,
            host="127.0.0.2",
            port=agent_port,
        )
        # What every version registers: AGENT_CALLBACK_URL=http://127.0.0.2 (the route's
        # host) as the SDK turns it into a base_url.
        self.callback = sdk_base_url("http://127.0.0.2", agent_port)

    def apply(self, obj: dict[str, Any]) -> None:
        self.kube.kubectl("apply", "-n", self.namespace, "-f", "-", stdin=json.dumps(obj))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        out = self.kube.kubectl("get", kind, name, "-n", self.namespace, "-o", "json").stdout
        loaded: dict[str, Any] = json.loads(out)
        return loaded

    def setup(self) -> None:
        text = (ROOT / "examples/samples/classifier-deployment.yaml").read_text()
        self.apply(yaml.safe_load(text.replace('"2.0.0"', f'"{STABLE}"')))
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
        self.gateway.start()
        assert self.callback == self.gateway.url
        # The stable version registers with the route's address as its callback URL.
        self.agents.register(STABLE, 0.30, base_url=self.callback)
        self.apply(
            {
                "apiVersion": "promptloop.dev/v1alpha1",
                "kind": "AgentRollout",
                "metadata": {"name": "classifier"},
                "spec": {
                    "agent": {"nodeId": self.agents.node_id},
                    "stable": {"version": STABLE, "deploymentName": "classifier"},
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
        """Service to weight, as the API server holds the HTTPRoute."""
        route = self.get("httproute", "classifier")
        return {r["name"]: r.get("weight", 1) for r in route["spec"]["rules"][0]["backendRefs"]}

    def served(self) -> dict[str, int]:
        """Requests each version answered so far (what its own counters say)."""
        with self.agents.lock:
            return {v.version: v.total for v in self.agents.versions.values()}

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

    def traffic_after(self, requests: int, timeout: float = 30) -> dict[str, int]:
        """Per version, what the next ``requests`` calls through execute reached."""
        before = self.served()

        def enough() -> dict[str, int] | None:
            now = self.served()
            delta = {v: now[v] - before.get(v, 0) for v in now}
            return delta if sum(delta.values()) >= requests else None

        return wait_for(enough, timeout=timeout, what=f"{requests} requests through execute")

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
        self.gateway.stop()
        self.api_client.close()
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
def world(
    kube: KubeCluster, router_kubeconfig: Path, agentfield: AgentFieldHandle, tmp_path: Path
) -> Iterator[FrontedWorld]:
    namespace = f"gwaf-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", namespace)
    found = FrontedWorld(kube, namespace, router_kubeconfig, agentfield, tmp_path)
    try:
        yield found
    finally:
        found.close()
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _within_binomial(hits: int, total: int, percent: int) -> bool:
    """``hits`` of ``total`` is within 5 standard errors of ``percent`` (a false alarm is
    about 1 in 1.7 million)."""
    p = percent / 100
    return abs(hits / total - p) <= 5 * math.sqrt(p * (1 - p) / total)


def test_execute_reaches_the_weighted_split_even_when_the_challenger_sorts_first(
    world: FrontedWorld,
) -> None:
    world.setup()
    world.wait(lambda r: _status(r).get("phase") == "Stable", "Stable")
    first = world.traffic_after(50)
    assert first == {STABLE: first[STABLE]}, first

    world.propose("classifier-2-10-0", CHALLENGER, BETTER)
    # The challenger's process registers too, with the same callback URL: the route's. Its
    # row is now GetAgent's (2.10.0 < 2.9.0 as strings), and execute calls the route.
    world.agents.register(CHALLENGER, 0.02, base_url=world.callback)
    seen: set[int] = set()

    def stepping(rollout: dict[str, Any]) -> bool:
        assert world.proposal_phase("classifier-2-10-0") != "Invalid", "refused on gatewayAPI"
        if weight := _canary_weight(rollout):
            seen.add(weight)
        return _status(rollout).get("phase") == "AwaitingApproval"

    waiting = world.wait(stepping, "AwaitingApproval", timeout=120)
    weight = _canary_weight(waiting)
    assert 0 < weight < 50 and min(seen) == 10 and len(seen) >= 2, (weight, seen)
    # The operator's own check: the share it measures since the last step matches the weight.
    world.wait(
        lambda r: (
            _status(r).get("phase") == "AwaitingApproval"
            and _condition(r, "TrafficVerified").get("status") == "True"
        ),
        "TrafficVerified at the held weight",
        timeout=30,
    )
    assert world.route_weights() == {"classifier-stable": 100 - weight, "classifier-canary": weight}
    assert world.gateway.weights() == world.route_weights()  # read back by the data plane
    # While the operator waits for a person the weights stay put: the challenger's observed
    # share through execute is its weight, neither starved nor everything.
    share = world.traffic_after(400)
    total = sum(share.values())
    assert set(share) <= {STABLE, CHALLENGER}
    assert _within_binomial(share.get(CHALLENGER, 0), total, weight), (share, weight)
    assert 0 < share.get(CHALLENGER, 0) < total

    world.kube.kubectl(
        "patch",
        "pp",
        "classifier-2-10-0",
        "-n",
        world.namespace,
        "--type",
        "merge",
        "-p",
        '{"spec":{"approved":true}}',
    )
    world.wait(lambda r: _status(r).get("stableVersion") == CHALLENGER, "promoted", timeout=90)
    assert world.proposal_phase("classifier-2-10-0") == "Promoted"
    wait_for(
        lambda: (
            world.gateway.weights() == {"classifier-stable": 100, "classifier-canary": 0} or None
        ),
        timeout=30,
        what="the route read back at 100/0 after promotion",
    )
    after = world.traffic_after(100)
    assert after.get(CHALLENGER, 0) == sum(after.values()), after

    # A worse challenger is rolled back; weight 0 drains it, and execute keeps reaching the
    # stable version (now 2.10.0).
    world.propose("classifier-2-11-0", WORSE_CHALLENGER, WORSE)
    world.agents.register(WORSE_CHALLENGER, 0.60, base_url=world.callback)
    world.wait(
        lambda r: world.proposal_phase("classifier-2-11-0") == "RolledBack",
        "2.11.0 rolled back",
        timeout=90,
    )
    assert world.served().get(WORSE_CHALLENGER, 0) > 0  # it did receive its canary share
    assert world.route_weights() == {"classifier-stable": 100, "classifier-canary": 0}
    wait_for(
        lambda: (
            world.gateway.weights() == {"classifier-stable": 100, "classifier-canary": 0} or None
        ),
        timeout=30,
        what="the drained route read back",
    )
    drained = world.traffic_after(100)
    assert drained.get(CHALLENGER, 0) == sum(drained.values()), drained
