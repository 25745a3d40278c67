"""The reconciler carries effects out: order, idempotence, partial failure.

Fakes stand in for the two interfaces it talks to (``k8s.client.Kube`` and a ``TrafficRouter``);
they record every call so that the tests can check what reached the cluster and the router, and
in which order. The decisions themselves are tested in ``test_rollout_advance.py``; the real API
server and stand-in in ``tests/integration``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from promptloop.api import AgentRollout, PromptProposalStatus, VersionWeight
from promptloop.k8s.client import KubeError, NotFound
from promptloop.observe import Gatherer
from promptloop.reconciler import Reconciler
from promptloop.rollout.effects import (
    ApplyManifests,
    AssertWeights,
    CountDecision,
    PostEvent,
    ScaleToZero,
    Step,
    WriteProposalStatus,
    WriteRolloutStatus,
)
from promptloop.routers.base import Readiness, RouterUnavailable, Split

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NS = "agents"


def rollout_raw(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "promptloop.dev/v1alpha1",
        "kind": "AgentRollout",
        "metadata": {"name": "classifier", "namespace": NS, "generation": 1, "uid": "r"},
        "spec": {
            "agent": {"nodeId": "classifier"},
            "stable": {"version": "2.0.0", "deploymentName": "classifier"},
            "router": {
                "agentfield": {
                    "url": "http://127.0.0.1:1",
                    "tokenSecretRef": {"name": "af", "key": "token"},
                }
            },
            "metrics": {"http": {"url": "http://127.0.0.1:1/{{ version }}"}},
            "canary": {"initialWeight": 10, "maxStep": 20, "ceiling": 50, "interval": "10s"},
        },
        "status": status or {},
    }


def proposal_raw(name: str = "p1", version: str = "2.1.0") -> dict[str, Any]:
    return {
        "apiVersion": "promptloop.dev/v1alpha1",
        "kind": "PromptProposal",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"u-{name}",
            "generation": 1,
            "creationTimestamp": "2026-03-01T11:00:00Z",
        },
        "spec": {
            "rolloutRef": {"name": "classifier"},
            "version": version,
            "systemPrompt": "Classify the ticket, carefully.",
        },
    }


STABLE_DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "classifier", "namespace": NS, "labels": {"app": "classifier"}},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "classifier"}},
        "template": {
            "metadata": {"labels": {"app": "classifier"}},
            "spec": {
                "containers": [
                    {
                        "name": "agent",
                        "image": "agent:1",
                        "env": [
                            {"name": "SYSTEM_PROMPT", "value": "Classify the ticket."},
                            {"name": "AGENT_VERSION", "value": "2.0.0"},
                        ],
                    }
                ]
            },
        },
    },
}


class FakeKube:
    """Records every call; objects live in dicts; ``fail`` names calls that raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.rollout = rollout_raw()
        self.proposals: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, dict[str, Any]] = {"classifier": STABLE_DEPLOYMENT}
        self.secrets = {("af", "token"): "s3cr3t"}
        self.fail: dict[str, Exception] = {}

    def _call(self, *call: str) -> None:
        self.calls.append(call)
        for key in (call[0], ":".join(call[:2])):
            if key in self.fail:
                raise self.fail[key]

    async def get_rollout(self, namespace: str, name: str) -> dict[str, Any]:
        return self.rollout

    async def list_proposals(self, namespace: str, rollout: str) -> list[dict[str, Any]]:
        return list(self.proposals.values())

    async def get_secret_value(self, namespace: str, name: str, key: str) -> str | None:
        return self.secrets.get((name, key))

    async def get_config_map_value(self, namespace: str, name: str, key: str) -> str | None:
        return None

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        if name not in self.deployments:
            raise NotFound(f"deployment {name}")
        return self.deployments[name]

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self._call("apply", manifest["kind"], manifest["metadata"]["name"])
        return manifest

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        self._call("scale", name, str(replicas))
        if name not in self.deployments:
            raise NotFound(name)

    async def patch_status(
        self, plural: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> None:
        self._call("status", plural, name)
        if plural == "agentrollouts":
            self.rollout = {**self.rollout, "status": patch}
        else:
            self.proposals[name] = {**self.proposals[name], "status": patch}

    async def post_event(
        self, *, involved: dict[str, Any], reason: str, message: str, warning: bool = False
    ) -> None:
        self._call("event", involved["kind"], reason)


class FakeRouter:
    """A traffic router that remembers the split; ``down`` makes every call fail."""

    kind = "fake"
    drains_by_weight = False
    orders_by_version_string = True

    def __init__(self, calls: list[tuple[str, ...]]) -> None:
        self.calls = calls
        self.weights: dict[str, int] = {"2.0.0": 100}
        self.down = False

    async def known_versions(self) -> list[str]:
        if self.down:
            raise RouterUnavailable("connection refused")
        return list(self.weights)

    async def apply(self, split: Split) -> list[VersionWeight]:
        self.calls.append(("router", split.stable, str(split.canary), str(split.canary_percent)))
        if self.down:
            raise RouterUnavailable("connection refused")
        self.weights[split.stable] = 100 - split.canary_percent
        if split.canary:
            self.weights[split.canary] = split.canary_percent
        return await self.read()

    async def read(self) -> list[VersionWeight]:
        return [VersionWeight(version=v, percent=float(w), raw=w) for v, w in self.weights.items()]

    async def version_ready(self, version: str) -> Readiness:
        return Readiness(version in self.weights, "Ready", "fake")

    async def drain(self, version: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


class FakeGatherer(Gatherer):
    """The real gatherer with the router swapped: what a watch-cache gatherer would also do."""

    def __init__(self, kube: FakeKube, router: FakeRouter) -> None:
        super().__init__(kube, httpx.AsyncClient(), clock=lambda: NOW)  # type: ignore[arg-type]
        self.fake_router = router

    def router(self, rollout: AgentRollout, token: str | None, **_: Any) -> Any:
        return self.fake_router


def reconciler() -> tuple[Reconciler, FakeKube, FakeRouter]:
    kube = FakeKube()
    router = FakeRouter(kube.calls)
    gatherer = FakeGatherer(kube, router)
    return (
        Reconciler(kube, httpx.AsyncClient(), clock=lambda: NOW, gatherer=gatherer),  # type: ignore[arg-type]
        kube,
        router,
    )


def full_step(rollout: AgentRollout) -> Step:
    status = rollout.status.model_copy(update={"message": "intent"})
    proposal_status = PromptProposalStatus(message="rendered")
    return Step(
        status=status,
        effects=(
            ApplyManifests(
                (
                    {"kind": "ConfigMap", "metadata": {"name": "cm"}},
                    {"kind": "Deployment", "metadata": {"name": "d"}},
                )
            ),
            ScaleToZero("old"),
            WriteRolloutStatus(status),
            AssertWeights("classifier", "2.0.0", "2.1.0", 10),
            WriteProposalStatus("p1", proposal_status),
            PostEvent({"kind": "PromptProposal", "metadata": {}}, "Rendered", "m"),
            PostEvent({"kind": "AgentRollout", "metadata": {}}, "Stepped", "m"),
            CountDecision("step"),
        ),
    )


async def test_effects_are_carried_out_in_the_order_given() -> None:
    rec, kube, _ = reconciler()
    kube.proposals["p1"] = proposal_raw()
    kube.deployments["old"] = {}
    rollout = AgentRollout.model_validate(kube.rollout)
    await rec.execute(full_step(rollout), rollout=rollout, router=_router(rec), now=NOW)
    assert kube.calls == [
        ("apply", "ConfigMap", "cm"),
        ("apply", "Deployment", "d"),
        ("scale", "old", "0"),
        ("status", "agentrollouts", "classifier"),
        ("router", "2.0.0", "2.1.0", "10"),
        # The read-back changed status (weights, RouterReachable, Ready): written after the router.
        ("status", "agentrollouts", "classifier"),
        ("status", "promptproposals", "p1"),
        ("event", "PromptProposal", "Rendered"),
        ("event", "AgentRollout", "Stepped"),
    ]
    weights = {w["version"]: w["percent"] for w in kube.rollout["status"]["weights"]}
    assert weights == {"2.0.0": 90.0, "2.1.0": 10.0}


def _router(rec: Reconciler) -> FakeRouter:
    assert isinstance(rec.gatherer, FakeGatherer)
    return rec.gatherer.fake_router


async def test_a_render_that_fails_writes_no_intent() -> None:
    rec, kube, _ = reconciler()
    kube.fail["apply"] = KubeError("admission webhook said no")
    rollout = AgentRollout.model_validate(kube.rollout)
    with pytest.raises(KubeError):
        await rec.execute(full_step(rollout), rollout=rollout, router=_router(rec), now=NOW)
    assert [c[0] for c in kube.calls] == ["apply"]


async def test_an_unreachable_router_is_recorded_and_the_rest_still_happens() -> None:
    rec, kube, router = reconciler()
    kube.proposals["p1"] = proposal_raw()
    router.down = True
    rollout = AgentRollout.model_validate(kube.rollout)
    await rec.execute(full_step(rollout), rollout=rollout, router=router, now=NOW)
    reachable = next(
        c for c in kube.rollout["status"]["conditions"] if c["type"] == "RouterReachable"
    )
    assert (reachable["status"], reachable["reason"]) == ("False", "Unavailable")
    assert ("status", "promptproposals", "p1") in kube.calls
    assert ("event", "AgentRollout", "Stepped") in kube.calls


async def test_scaling_a_deployment_that_is_gone_is_fine() -> None:
    rec, kube, _ = reconciler()
    step = Step(status=None, effects=(ScaleToZero("gone"), PostEvent({"kind": "X"}, "R", "m")))
    await rec.execute(step, namespace=NS)
    assert kube.calls == [("scale", "gone", "0"), ("event", "X", "R")]


async def test_whole_passes_render_then_seed_and_an_unchanged_world_writes_nothing_new() -> None:
    rec, kube, router = reconciler()
    kube.proposals["p1"] = proposal_raw()
    await rec.reconcile(NS, "classifier", cause="proposal")
    kinds = [c[:2] for c in kube.calls]
    assert kinds[:2] == [("apply", "ConfigMap"), ("apply", "Deployment")]
    assert kube.rollout["status"]["phase"] == "Progressing"
    assert kube.proposals["p1"]["status"]["phase"] == "Rendered"
    challenger = kube.rollout["status"]["canary"]["deployment"]

    # Nothing changed (the challenger is not up yet): the router is re-asserted, nothing else.
    kube.calls.clear()
    await rec.reconcile(NS, "classifier", cause="tick")
    kube.calls.clear()
    await rec.reconcile(NS, "classifier", cause="tick")
    assert kube.calls == [("router", "2.0.0", "None", "0")]

    # The challenger comes up and registers: seeded at the initial weight.
    kube.deployments[challenger] = {
        "metadata": {"generation": 1},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "availableReplicas": 1},
    }
    router.weights["2.1.0"] = 100
    kube.calls.clear()
    await rec.reconcile(NS, "classifier", cause="tick")
    assert ("router", "2.0.0", "2.1.0", "10") in kube.calls
    assert kube.rollout["status"]["canary"]["weight"] == 10
    assert kube.proposals["p1"]["status"]["phase"] == "Canary"
    assert router.weights == {"2.0.0": 90, "2.1.0": 10}


async def test_a_pass_killed_after_the_intent_is_finished_by_the_next() -> None:
    rec, kube, _ = reconciler()
    kube.proposals["p1"] = proposal_raw()
    # The rollout's status (the intent) is written, then the proposal's write fails: killed.
    kube.fail["status:promptproposals"] = KubeError("etcd timeout")
    with pytest.raises(KubeError):
        await rec.reconcile(NS, "classifier", cause="proposal")
    del kube.fail["status:promptproposals"]
    assert kube.rollout["status"]["canary"]["proposal"] == "p1"
    assert "status" not in kube.proposals["p1"]
    # The next pass repairs the proposal from the rollout's status; nothing is rendered twice.
    kube.calls.clear()
    await rec.reconcile(NS, "classifier", cause="tick")
    assert not [c for c in kube.calls if c[0] == "apply"]
    assert kube.rollout["status"]["phase"] == "Progressing"
    assert kube.proposals["p1"]["status"]["phase"] == "Rendered"


async def test_the_weight_guard_sees_a_reset_weight() -> None:
    rec, kube, _ = reconciler()
    await rec.reconcile(NS, "classifier", cause="tick")
    assert kube.rollout["status"]["weights"]
    # The guard uses its own one-shot client against the URL; no server there: no drift claimed.
    assert not await rec.weights_drifted(
        NS, "classifier", node_id="classifier", status=kube.rollout["status"]
    )
