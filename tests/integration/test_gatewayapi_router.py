"""The Gateway API router against the real API server, with the upstream CRDs (and their CEL).

The CRDs are the standard channel of ``sigs.k8s.io/gateway-api`` (devenv/gatewayapi.py, from the
Go module proxy). The router runs as a ServiceAccount bound to exactly the rules
``manifests/gateway-api`` ships, so a missing verb fails here. Every weight is read back from the
API server.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptloop.k8s.client import ROUTER_FIELD_MANAGER, connected
from promptloop.routers.base import RouterError, Split
from promptloop.routers.gatewayapi import GatewayApiRouter, route_weights
from tests.conftest import KubeCluster

ROOT = Path(__file__).resolve().parents[2]


def _route(name: str, rollout: str, *, stable: int = 100, canary: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "agents"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [
                        {"name": f"{rollout}-stable", "port": 8000, "weight": stable},
                        {"name": f"{rollout}-canary", "port": 8000, "weight": canary},
                    ],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                    "backendRefs": [{"name": "admin", "port": 80}],
                },
            ],
        },
    }


def _rollout(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "promptloop.dev/v1alpha1",
        "kind": "AgentRollout",
        "metadata": {"name": name},
        "spec": {
            "agent": {"nodeId": "classifier"},
            "stable": {"version": "2.0.0", "deploymentName": "classifier"},
            "router": {"gatewayAPI": {"httpRoute": "classifier", "port": 8000}},
            "metrics": {"http": {"url": "http://127.0.0.1:1/{{ version }}"}},
        },
    }


def _get(kube: KubeCluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    out = kube.kubectl(
        "get", kind, name, "-n", namespace, "-o", "json", "--show-managed-fields"
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.fixture
def route_setup(kube: KubeCluster, namespace: str, router_kubeconfig: Path) -> Iterator[str]:
    kube.kubectl(
        "apply", "-n", namespace, "-f", "-", stdin=json.dumps(_route("classifier", "classifier"))
    )
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(_rollout("classifier")))
    yield namespace


SELECTORS = {
    "2.0.0": {"app": "classifier", "app.kubernetes.io/version": "2.0.0"},
    "2.1.0": {"promptloop.dev/rollout": "classifier", "promptloop.dev/version": "2.1.0"},
}


def test_the_crds_are_the_standard_channel_with_cel(
    kube: KubeCluster, gateway_api: list[str]
) -> None:
    assert "httproutes.gateway.networking.k8s.io" in gateway_api
    namespace = f"gw-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", namespace)
    try:
        bad = _route("bad", "x")
        bad["spec"]["rules"][0]["matches"][0]["path"]["value"] = "no-leading-slash"
        refused = kube.kubectl(
            "apply", "-n", namespace, "-f", "-", stdin=json.dumps(bad), check=False
        )
        assert refused.returncode != 0
        # The upstream CEL rule on path matches, enforced by the API server.
        assert "must be an absolute path" in refused.stderr
    finally:
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_steps_drain_promote_read_back_from_the_api_server(
    kube: KubeCluster, route_setup: str, router_kubeconfig: Path
) -> None:
    namespace = route_setup
    uid = _get(kube, namespace, "agentrollout", "classifier")["metadata"]["uid"]

    async def scenario() -> None:
        async with connected(str(router_kubeconfig)) as k:
            router = GatewayApiRouter(
                k,
                namespace=namespace,
                rollout="classifier",
                rollout_uid=uid,
                http_route="classifier",
                port=8000,
                selectors=SELECTORS,
            )
            for percent in (10, 30, 50, 0):
                weights = await router.apply(Split("2.0.0", "2.1.0", percent))
                assert [(w.version, w.raw, w.role) for w in weights] == [
                    ("2.0.0", 100 - percent, "stable"),
                    ("2.1.0", percent, "canary"),
                ]
                stored = _get(kube, namespace, "httproute", "classifier")
                assert route_weights(stored["spec"]["rules"], rollout="classifier") == (
                    100 - percent,
                    percent,
                )
                canary_service = _get(kube, namespace, "service", "classifier-canary")
                assert canary_service["spec"]["selector"] == SELECTORS["2.1.0"]
            # Promotion: the stable Service selects the new version, then the weight moves back.
            weights = await router.apply(Split("2.1.0", None, 0))
            assert [(w.version, w.raw) for w in weights] == [("2.1.0", 100)]
            stable_service = _get(kube, namespace, "service", "classifier-stable")
            assert stable_service["spec"]["selector"] == SELECTORS["2.1.0"]
            assert stable_service["metadata"]["ownerReferences"][0]["uid"] == uid
            assert stable_service["spec"]["ports"][0]["port"] == 8000
            # Idempotent: the same split again writes nothing new.
            before = _get(kube, namespace, "httproute", "classifier")["metadata"]["resourceVersion"]
            await router.apply(Split("2.1.0", None, 0))
            after = _get(kube, namespace, "httproute", "classifier")["metadata"]["resourceVersion"]
            assert before == after

    asyncio.run(scenario())
    route = _get(kube, namespace, "httproute", "classifier")
    # Nothing but the weights changed: the rest of the user's route is as applied from git.
    original = _route("classifier", "classifier")["spec"]
    assert route["spec"]["rules"][1]["backendRefs"][0]["name"] == "admin"
    assert route["spec"]["rules"][0]["matches"] == original["rules"][0]["matches"]
    assert route["spec"]["parentRefs"][0]["name"] == "agents"
    managers = {entry["manager"] for entry in route["metadata"]["managedFields"]}
    assert ROUTER_FIELD_MANAGER in managers
    ours = next(
        e for e in route["metadata"]["managedFields"] if e["manager"] == ROUTER_FIELD_MANAGER
    )
    assert ours["operation"] == "Apply"
    assert "f:rules" in ours["fieldsV1"]["f:spec"]
    assert "f:parentRefs" not in ours["fieldsV1"]["f:spec"]


def test_drift_is_re_asserted_and_a_missing_route_is_a_clear_error(
    kube: KubeCluster, route_setup: str, router_kubeconfig: Path
) -> None:
    namespace = route_setup
    uid = _get(kube, namespace, "agentrollout", "classifier")["metadata"]["uid"]

    async def scenario() -> None:
        async with connected(str(router_kubeconfig)) as k:
            router = GatewayApiRouter(
                k,
                namespace=namespace,
                rollout="classifier",
                rollout_uid=uid,
                http_route="classifier",
                port=8000,
                selectors=SELECTORS,
            )
            written = await router.apply(Split("2.0.0", "2.1.0", 20))
            # Someone (a git sync without the ignore rule) puts the weights back.
            kube.kubectl(
                "apply",
                "-n",
                namespace,
                "-f",
                "-",
                "--server-side",
                "--force-conflicts",
                stdin=json.dumps(_route("classifier", "classifier")),
            )
            drifted = await router.read()
            assert [w.raw for w in drifted] != [w.raw for w in written]
            again = await router.apply(Split("2.0.0", "2.1.0", 20))
            assert [w.raw for w in again] == [80, 20]
            missing = GatewayApiRouter(
                k,
                namespace=namespace,
                rollout="classifier",
                rollout_uid=uid,
                http_route="nope",
                port=8000,
                selectors=SELECTORS,
            )
            with pytest.raises(RouterError, match="HTTPRoute nope not found"):
                await missing.apply(Split("2.0.0", "2.1.0", 20))
            ready = await missing.version_ready("2.1.0")
            assert (ready.ready, ready.reason) == (False, "RouteNotFound")

    asyncio.run(scenario())
