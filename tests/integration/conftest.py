"""Fixtures for the operator on the real API server: the operator's ServiceAccount identity, the
AgentField stand-in, and a scenario builder that lays out one agent's objects in a namespace."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv import gatewayapi
from devenv.agentfield import AgentFieldHandle, start_agentfield, stop_agentfield
from tests.conftest import KUBECTL, KubeCluster
from tests.integration.harness import (
    AgentSim,
    OperatorProcess,
    gateway_operator_kubeconfig,
    service_account_kubeconfig,
    wait_for,
)
from tests.integration.status_capture import STATUS_DIR, StatusRecorder, capture_enabled

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def operator_kubeconfig(kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig that authenticates as the operator's ServiceAccount (manifests/base)."""
    kube.kubectl("apply", "-f", str(ROOT / "manifests" / "base" / "namespace.yaml"))
    kube.kubectl("apply", "-f", str(ROOT / "manifests" / "base" / "rbac.yaml"))
    return service_account_kubeconfig(kube, tmp_path_factory.mktemp("operator") / "kubeconfig")


@pytest.fixture(scope="session")
def agentfield(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentFieldHandle]:
    """The AgentField stand-in (the registry refuses the real control plane's module)."""
    handle = start_agentfield(tmp_path_factory.mktemp("agentfield"))
    yield handle
    stop_agentfield(handle)


@dataclass
class Scenario:
    """One agent's world in one namespace: stable Deployment, Secret, rollout, agents, operator."""

    kube: KubeCluster
    namespace: str
    agentfield: AgentFieldHandle
    operator_kubeconfig: Path
    log_dir: Path
    node_id: str = field(default_factory=lambda: f"agent-{uuid.uuid4().hex[:8]}")
    agents: AgentSim | None = None
    operators: list[OperatorProcess] = field(default_factory=list)

    # -- objects -----------------------------------------------------------------------------

    def apply(self, obj: dict[str, Any]) -> None:
        """kubectl apply one object into the namespace (as the admin user)."""
        self.kube.kubectl("apply", "-n", self.namespace, "-f", "-", stdin=json.dumps(obj))

    def setup(
        self,
        *,
        stable_failure_rate: float = 0.3,
        canary: dict[str, Any] | None = None,
        token: str | None = None,
        honour_weights: bool = True,
        metrics: Callable[[AgentSim], dict[str, Any]] | None = None,
        stable_version: str = "2.0.0",
        via_execute: bool = False,
    ) -> None:
        """Stable Deployment, token Secret, simulated agents (stable registered), rollout.

        ``via_execute`` sends the traffic through the stand-in's execute route, so AgentField
        picks the version as it does for real (the smallest version string)."""
        self.agents = AgentSim(self.agentfield.url, self.agentfield.token, self.node_id)
        self.agents.honour_weights = honour_weights
        if via_execute:
            # One request at a time through AgentField and back: fewer per tick keep the rate
            # (about 50 per second) within what two shared cores serve.
            self.agents.requests_per_tick = 5
            self.agents.via_execute = True
        self.agents.register(stable_version, stable_failure_rate)
        deployment = yaml.safe_load(
            (ROOT / "examples/samples/classifier-deployment.yaml").read_text()
        )
        self.apply(deployment)
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "agentfield-connector"},
                "stringData": {"token": token if token is not None else self.agentfield.token},
            }
        )
        policy = {
            "initialWeight": 10,
            "maxStep": 20,
            "ceiling": 50,
            "floor": 0,
            "interval": "1s",
            "minSamples": 30,
            "alpha": 0.05,
            "progressDeadline": "60s",
        }
        policy.update(canary or {})
        self.apply(
            {
                "apiVersion": "promptloop.dev/v1alpha1",
                "kind": "AgentRollout",
                "metadata": {"name": "classifier"},
                "spec": {
                    "agent": {"nodeId": self.node_id},
                    "stable": {"version": stable_version, "deploymentName": "classifier"},
                    "router": {
                        "agentfield": {
                            "url": self.agentfield.url,
                            "tokenSecretRef": {"name": "agentfield-connector", "key": "token"},
                        }
                    },
                    "metrics": (
                        metrics(self.agents)
                        if metrics is not None
                        else {"http": {"url": self.agents.metrics_url}}
                    ),
                    "canary": policy,
                },
            }
        )

    def propose(
        self, name: str, version: str, prompt: str, *, approved: bool | None = None
    ) -> None:
        """File a PromptProposal, as the improver would."""
        spec: dict[str, Any] = {
            "rolloutRef": {"name": "classifier"},
            "version": version,
            "systemPrompt": prompt,
            "rationale": "test",
        }
        if approved is not None:
            spec["approved"] = approved
        self.apply(
            {
                "apiVersion": "promptloop.dev/v1alpha1",
                "kind": "PromptProposal",
                "metadata": {"name": name},
                "spec": spec,
            }
        )

    def start_operator(
        self, *extra_args: str, env: dict[str, str] | None = None
    ) -> OperatorProcess:
        """Start an operator (watching only this namespace) and wait until it is live.

        ``env`` adds environment variables (the operator's notification sinks, say)."""
        process = OperatorProcess(
            kubeconfig=self.operator_kubeconfig,
            namespace=self.namespace,
            log_path=self.log_dir / f"operator-{len(self.operators)}.log",
            extra_args=extra_args,
            env=env,
        )
        self.operators.append(process)
        process.start()
        return process

    # -- reading ------------------------------------------------------------------------------

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """An object as JSON."""
        out = self.kube.kubectl("get", kind, name, "-n", self.namespace, "-o", "json").stdout
        loaded: dict[str, Any] = json.loads(out)
        return loaded

    def rollout(self) -> dict[str, Any]:
        """The AgentRollout."""
        return self.get("agentrollout", "classifier")

    def proposal(self, name: str) -> dict[str, Any]:
        """A PromptProposal."""
        return self.get("promptproposal", name)

    def wait_proposal_phase(self, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until a proposal reaches a phase; returns it."""

        def reached() -> dict[str, Any] | None:
            proposal = self.proposal(name)
            return proposal if proposal.get("status", {}).get("phase") == phase else None

        return self._wait(reached, timeout, f"proposal {name} phase {phase}")

    def wait_rollout(self, predicate: Any, what: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until the rollout satisfies a predicate; returns it."""

        def reached() -> dict[str, Any] | None:
            rollout = self.rollout()
            return rollout if predicate(rollout) else None

        return self._wait(reached, timeout, what)

    def _wait(self, condition: Any, timeout: float, what: str) -> dict[str, Any]:
        try:
            result: dict[str, Any] = wait_for(condition, timeout=timeout, what=what, interval=0.2)
        except AssertionError as error:
            status = json.dumps(self.rollout().get("status", {}), indent=1)[-3000:]
            logs = "\n".join(op.log_tail(40) for op in self.operators)
            raise AssertionError(
                f"{error}\nrollout status: {status}\noperator log:\n{logs}"
            ) from None
        return result

    def events(self, name: str) -> str:
        """The Events about an object, as text."""
        return self.kube.kubectl(
            "get",
            "events",
            "-n",
            self.namespace,
            "--field-selector",
            f"involvedObject.name={name}",
            "-o",
            "custom-columns=REASON:.reason,MESSAGE:.message",
        ).stdout

    def close(self) -> None:
        """Stop the operators and the simulated agents, and drop kopf's finalizers so that the
        namespace can be deleted without an operator (as kopf's own test clean-up does)."""
        for process in self.operators:
            process.stop()
        if self.agents:
            self.agents.close()
        for kind in ("promptproposals", "agentrollouts"):
            names = self.kube.kubectl(
                "get", kind, "-n", self.namespace, "-o", "name", check=False
            ).stdout.split()
            for name in names:
                self.kube.kubectl(
                    "patch",
                    name,
                    "-n",
                    self.namespace,
                    "--type",
                    "merge",
                    "-p",
                    '{"metadata":{"finalizers":null}}',
                    check=False,
                )


@pytest.fixture
def scenario(
    kube: KubeCluster,
    namespace: str,
    agentfield: AgentFieldHandle,
    operator_kubeconfig: Path,
    tmp_path: Path,
) -> Iterator[Scenario]:
    """A fresh scenario per test; the operator's token never appears in its logs."""
    world = Scenario(kube, namespace, agentfield, operator_kubeconfig, tmp_path)
    try:
        yield world
    finally:
        world.close()
    for process in world.operators:
        assert agentfield.token not in process.log_text(), "connector token leaked into the log"


@pytest.fixture(autouse=True)
def capture_status(request: pytest.FixtureRequest) -> Iterator[None]:
    """With PROMPTLOOP_CAPTURE_STATUS=1, record each phase's status to tests/data/status/.

    The Argo CD health-check tests run the Lua against these captured objects (see
    tests/integration/status_capture.py); without the variable this fixture does nothing.
    """
    if not capture_enabled() or "namespace" not in request.fixturenames:
        yield
        return
    kube: KubeCluster = request.getfixturevalue("kube")
    namespace: str = request.getfixturevalue("namespace")
    with StatusRecorder(KUBECTL, kube.kubeconfig, namespace, STATUS_DIR):
        yield


# -- Gateway API --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gateway_api(kube: KubeCluster) -> list[str]:
    """The Gateway API CRDs installed (server-side apply, then Established)."""
    return gatewayapi.install(kube.kubeconfig, kubectl=KUBECTL)


@pytest.fixture(scope="session")
def router_kubeconfig(
    kube: KubeCluster, gateway_api: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A ServiceAccount holding the operator's ClusterRole as manifests/gateway-api ships it."""
    return gateway_operator_kubeconfig(kube, tmp_path_factory.mktemp("gateway") / "kubeconfig")
