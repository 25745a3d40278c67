"""The demo's pure parts: what the process kubelet gives an agent process for a Deployment, how
the traffic driver turns AgentField's versions list into routes, and the demo's manifests (they
must pass the API models the operator validates with)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devenv.demo import agent_rollout, http_route, stable_deployment, wilson
from devenv.kubelet import (
    PodSpecError,
    describe_process,
    expand_references,
    is_available,
    pod_network,
    referenced_objects,
)
from devenv.traffic import Route, Ticket, TrafficDriver, choose, routes_from_listing
from promptloop.api.agentrollout import AgentRollout
from promptloop.api.promptproposal import PromptProposal
from promptloop.constants import API_VERSION as PROPOSAL_API
from promptloop.render.challenger import OwnerRef, render_challenger

__all__: list[str] = []

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def deployment(
    env: list[dict[str, Any]],
    *,
    mounts: list[dict[str, Any]] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "agent", "image": "example/agent:1", "env": env}
    if mounts:
        container["volumeMounts"] = mounts
    return {
        "metadata": {"name": "classifier", "labels": labels or {}},
        "spec": {
            "replicas": 1,
            "template": {
                "metadata": {"labels": {"promptloop.dev/version": "2.0.0"}},
                "spec": {"containers": [container], "volumes": volumes or []},
            },
        },
        "status": {"availableReplicas": 1},
    }


# ---------------------------------------------------------------------------------------------
# the process kubelet


def test_env_values_references_and_secrets(tmp_path: Path) -> None:
    """Literal values (with ``$(VAR)`` expanded), ConfigMap and Secret keys and fieldRefs become
    the process environment; Secret values are resolved but never shown, and neither are
    literals whose names look like credentials."""
    spec = describe_process(
        deployment(
            [
                {"name": "AGENT_VERSION", "value": "2.0.0"},
                {"name": "BANNER", "value": "v$(AGENT_VERSION) $$(AGENT_VERSION) $(NOPE)"},
                {
                    "name": "SYSTEM_PROMPT",
                    "valueFrom": {"configMapKeyRef": {"name": "prompt", "key": "system-prompt"}},
                },
                {
                    "name": "OPENAI_API_KEY",
                    "valueFrom": {"secretKeyRef": {"name": "model", "key": "api-key"}},
                },
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "MY_TOKEN", "value": "literal-secret"},
            ]
        ),
        namespace="demo",
        config_maps={"prompt": {"system-prompt": "Refunds are billing.\nOne word."}},
        secrets={"model": {"api-key": "sk-test-123"}},
        volume_root=tmp_path,
    )
    assert spec.env["BANNER"] == "v2.0.0 $(AGENT_VERSION) $(NOPE)"
    assert spec.env["SYSTEM_PROMPT"] == "Refunds are billing.\nOne word."
    assert spec.env["OPENAI_API_KEY"] == "sk-test-123"
    assert spec.env["POD"] == "demo"
    assert "NODE" not in spec.env
    assert any("spec.nodeName" in note for note in spec.notes)
    shown = dict(spec.shown)
    assert "sk-test-123" not in "".join(shown.values())
    assert "literal-secret" not in "".join(shown.values())
    assert shown["OPENAI_API_KEY"] == "<hidden: Secret model, key api-key>"
    assert spec.prompt == ("ConfigMap prompt, key system-prompt", "Refunds are billing.\nOne word.")
    assert spec.version == "2.0.0"  # from the pod template's label
    assert spec.image == "example/agent:1"


def test_missing_references_fail_like_a_pod_would(tmp_path: Path) -> None:
    """A missing ConfigMap, Secret or key stops the pod (CreateContainerConfigError) unless the
    reference is optional."""
    ref = {"configMapKeyRef": {"name": "absent", "key": "k"}}
    with pytest.raises(PodSpecError, match="ConfigMap absent"):
        describe_process(
            deployment([{"name": "X", "valueFrom": ref}]),
            namespace="d",
            config_maps={},
            secrets={},
            volume_root=tmp_path,
        )
    with pytest.raises(PodSpecError, match="key 'k' of Secret s"):
        describe_process(
            deployment([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
            namespace="d",
            config_maps={},
            secrets={"s": {"other": "v"}},
            volume_root=tmp_path,
        )
    optional = {"configMapKeyRef": {"name": "absent", "key": "k", "optional": True}}
    spec = describe_process(
        deployment([{"name": "X", "valueFrom": optional}]),
        namespace="d",
        config_maps={},
        secrets={},
        volume_root=tmp_path,
    )
    assert "X" not in spec.env


def test_mounted_prompt_is_written_locally_and_env_paths_follow(tmp_path: Path) -> None:
    """A configMap volume mounted with subPath is materialised under the state directory, and an
    env value naming the mount path is rewritten to the local copy (a process cannot read
    ``/etc/...``); the prompt file is what is shown as the prompt."""
    spec = describe_process(
        deployment(
            [{"name": "SYSTEM_PROMPT_FILE", "value": "/etc/classifier/prompt.txt"}],
            mounts=[
                {
                    "name": "promptloop-prompt",
                    "mountPath": "/etc/classifier/prompt.txt",
                    "subPath": "prompt.txt",
                    "readOnly": True,
                }
            ],
            volumes=[
                {
                    "name": "promptloop-prompt",
                    "configMap": {
                        "name": "classifier-v2-1-0-abc",
                        "items": [{"key": "system-prompt", "path": "prompt.txt"}],
                    },
                },
                {"name": "unmounted", "emptyDir": {}},
            ],
        ),
        namespace="d",
        config_maps={"classifier-v2-1-0-abc": {"system-prompt": "Be precise."}},
        secrets={},
        volume_root=tmp_path,
    )
    local = tmp_path / "promptloop-prompt" / "prompt.txt"
    assert spec.files == {local: "Be precise."}
    assert spec.env["SYSTEM_PROMPT_FILE"] == str(local)
    assert spec.mounts == [("/etc/classifier/prompt.txt", local)]
    assert spec.prompt == (
        "ConfigMap classifier-v2-1-0-abc, mounted at /etc/classifier/prompt.txt",
        "Be precise.",
    )


def test_what_a_challenger_gets_from_the_operators_rendering(tmp_path: Path) -> None:
    """The operator's real rendering of the demo's stable Deployment: the process kubelet gives
    the challenger the new version and the proposal's prompt from its ConfigMap, and a changed
    prompt changes the digest (the process is restarted)."""
    stable = stable_deployment(
        agentfield_url="http://127.0.0.1:1", model_base_url="http://127.0.0.1:2/v1", model="m"
    )
    rollout = AgentRollout.model_validate(
        {
            "metadata": {"name": "classifier", "namespace": "d"},
            **agent_rollout(agentfield_url="http://127.0.0.1:1"),
        }
    )
    proposal = PromptProposal.model_validate(
        {
            "metadata": {"name": "classifier-2-1-0", "namespace": "d", "uid": "u-1"},
            "spec": {
                "rolloutRef": {"name": "classifier"},
                "version": "2.1.0",
                "systemPrompt": "Refunds are billing.",
            },
        }
    )
    rendered = render_challenger(
        rollout=rollout,
        proposal=proposal,
        stable_deployment=stable,
        owner=OwnerRef(PROPOSAL_API, "PromptProposal", "classifier-2-1-0", "u-1"),
    )
    config_map, challenger = rendered.config_map, rendered.deployment
    challenger["status"] = {"availableReplicas": 1}
    names, secret_names = referenced_objects(challenger)
    assert names == {config_map["metadata"]["name"]}
    assert secret_names == {"classifier-model"}
    spec = describe_process(
        challenger,
        namespace="d",
        config_maps={config_map["metadata"]["name"]: config_map["data"]},
        secrets={"classifier-model": {"api-key": "k"}},
        volume_root=tmp_path,
    )
    assert spec.env["AGENT_VERSION"] == "2.1.0"
    assert spec.env["PROMPTLOOP_VERSION"] == "2.1.0"
    assert spec.env["SYSTEM_PROMPT"] == "Refunds are billing."
    assert spec.version == "2.1.0"
    assert spec.prompt is not None and spec.prompt[1] == "Refunds are billing."
    changed = describe_process(
        challenger,
        namespace="d",
        config_maps={config_map["metadata"]["name"]: {"system-prompt": "Other."}},
        secrets={"classifier-model": {"api-key": "k"}},
        volume_root=tmp_path,
    )
    assert changed.digest != spec.digest


def test_availability_and_reference_expansion() -> None:
    available = deployment([])
    assert is_available(available)
    assert not is_available({**available, "status": {}})
    assert not is_available({**available, "spec": {**available["spec"], "replicas": 0}})
    assert expand_references("$(A)-$(B)", {"A": "x"}) == "x-$(B)"


# ---------------------------------------------------------------------------------------------
# the traffic driver's routing


def listing(*entries: tuple[str, int, float]) -> dict[str, Any]:
    """A connector versions list; each entry is (version, weight, heartbeat age in seconds)."""
    return {
        "id": "classifier",
        "versions": [
            {
                "version": version,
                "traffic_weight": weight,
                "base_url": f"http://127.0.0.1:{9000 + i}",
                "last_heartbeat": (NOW - timedelta(seconds=age)).isoformat().replace("+00:00", "Z"),
            }
            for i, (version, weight, age) in enumerate(entries)
        ],
    }


def test_routes_follow_weights_and_drop_stale_versions() -> None:
    """Shares are weight / sum; the repeated smallest version is de-duplicated; a version whose
    heartbeat is stale (its process is gone) gets nothing; weight 0 counts as 100, as
    AgentField's router treats it (execute.go:1591-1596)."""
    routes = routes_from_listing(
        listing(("2.0.0", 9000, 1), ("2.1.0", 1000, 1), ("2.0.0", 9000, 1), ("1.0.0", 50, 60)),
        now=NOW,
    )
    assert [(r.version, r.weight) for r in routes] == [("2.0.0", 9000), ("2.1.0", 1000)]
    assert [round(r.share, 3) for r in routes] == [0.9, 0.1]
    zero = routes_from_listing(listing(("2.0.0", 0, 1), ("2.1.0", 100, 1)), now=NOW)
    assert [r.share for r in zero] == [0.5, 0.5]
    assert routes_from_listing({"versions": []}, now=NOW) == []


def test_choice_matches_the_shares() -> None:
    routes = [Route("2.0.0", 7000, 0.7, "http://a"), Route("2.1.0", 3000, 0.3, "http://b")]
    rng = random.Random(1)
    picks = Counter(choose(routes, rng).version for _ in range(20000))
    assert abs(picks["2.1.0"] / 20000 - 0.3) < 0.015
    with pytest.raises(ValueError):
        choose([], rng)


def test_wilson_interval() -> None:
    assert wilson(0, 0) is None
    low, high = wilson(28, 100) or (0.0, 0.0)
    assert low < 0.28 < high
    assert 0.19 < low < 0.21 and 0.37 < high < 0.39


def test_the_demo_rollout_reads_prometheus_when_it_runs_and_memory_otherwise(
    tmp_path: Path,
) -> None:
    import json

    from devenv.demo import PROMETHEUS_FAILED, PROMETHEUS_TOTAL
    from devenv.prometheus import write_targets

    with_server = AgentRollout.model_validate(
        agent_rollout(agentfield_url="http://127.0.0.1:1", prometheus_url="http://127.0.0.1:9")
    )
    prometheus = with_server.spec.metrics.prometheus
    assert prometheus is not None and prometheus.url == "http://127.0.0.1:9"
    assert (prometheus.total_query, prometheus.failed_query) == (
        PROMETHEUS_TOTAL,
        PROMETHEUS_FAILED,
    )
    without = AgentRollout.model_validate(agent_rollout(agentfield_url="http://127.0.0.1:1"))
    assert without.spec.metrics.agentfield_memory is not None
    # The process kubelet's target list, in Prometheus' file_sd format.
    targets = tmp_path / "prom" / "targets.json"
    write_targets(targets, ["127.0.0.1:9002", "127.0.0.1:9001"])
    assert json.loads(targets.read_text()) == [
        {"targets": ["127.0.0.1:9001", "127.0.0.1:9002"], "labels": {}}
    ]


# ---------------------------------------------------------------------------------------------
# --router gateway: AgentField in front of the route


def test_the_gateway_demo_gives_every_version_the_routes_address(tmp_path: Path) -> None:
    """The stable template names the route's address; the operator's challenger clones it; the
    process kubelet keeps it (and still gives a pod's own address when the template has none)."""
    from promptloop.routers.gatewayapi import canary_service, stable_service

    stable = stable_deployment(
        agentfield_url="http://127.0.0.1:1",
        model_base_url="http://127.0.0.1:2/v1",
        model="m",
        callback_url="http://127.0.0.2",
    )
    rollout = AgentRollout.model_validate(
        {
            "metadata": {"name": "classifier", "namespace": "d"},
            **agent_rollout(agentfield_url="http://127.0.0.1:1", router="gateway"),
        }
    )
    gateway = rollout.spec.router.gateway_api
    assert gateway is not None and rollout.spec.router.agentfield is None
    route = http_route()
    assert gateway.http_route == route["metadata"]["name"]
    refs = route["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["port"], r["weight"]) for r in refs] == [
        (stable_service("classifier"), gateway.port, 100),
        (canary_service("classifier"), gateway.port, 0),
    ]
    proposal = PromptProposal.model_validate(
        {
            "metadata": {"name": "classifier-2-1-0", "namespace": "d", "uid": "u-1"},
            "spec": {"rolloutRef": {"name": "classifier"}, "version": "2.1.0", "systemPrompt": "x"},
        }
    )
    rendered = render_challenger(
        rollout=rollout,
        proposal=proposal,
        stable_deployment=stable,
        owner=OwnerRef(PROPOSAL_API, "PromptProposal", "classifier-2-1-0", "u-1"),
    )
    spec = describe_process(
        rendered.deployment,
        namespace="d",
        config_maps={rendered.config_map["metadata"]["name"]: rendered.config_map["data"]},
        secrets={"classifier-model": {"api-key": "k"}},
        volume_root=tmp_path,
    )
    assert spec.env["AGENT_CALLBACK_URL"] == "http://127.0.0.2"
    assert pod_network(4100, spec.env) == {"HOST": "127.0.0.1", "PORT": "4100"}
    plain = stable_deployment(
        agentfield_url="http://127.0.0.1:1", model_base_url="http://127.0.0.1:2/v1", model="m"
    )
    assert all(
        e["name"] != "AGENT_CALLBACK_URL"
        for e in plain["spec"]["template"]["spec"]["containers"][0]["env"]
    )
    assert pod_network(4100, {})["AGENT_CALLBACK_URL"] == "http://127.0.0.1:4100"


def test_traffic_through_execute_counts_the_version_that_answered() -> None:
    """--router gateway: every ticket goes to AgentField's execute route; the tally follows the
    version named in the agent's reply, and a call no version answered is counted apart."""
    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    calls: list[dict[str, Any]] = []

    class Execute(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append({"path": self.path, **body})
            n = len(calls)
            if n % 5 == 0:  # the stand-in's 502 for an agent error: no version named
                status, reply = 502, {"error": "agent error (500)", "status": "failed"}
            else:
                version = "2.1.0" if n % 5 == 1 else "2.0.0"
                label = body["input"]["correct_label"] if n % 2 else "other"
                reply = {"status": "succeeded", "result": {"label": label, "version": version}}
                status = 200
            payload = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Execute)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    said: list[str] = []
    driver = TrafficDriver(
        agentfield_url=f"http://127.0.0.1:{server.server_address[1]}",
        token="unused",
        node_id="classifier",
        reasoner="classify",
        tickets=[Ticket("t1", "refund please", "billing")],
        rate=200.0,
        concurrency=1,
        seed=1,
        say=said.append,
        via_execute=True,
    )
    try:
        driver.start()
        deadline = time.monotonic() + 20
        while driver.sent < 20:
            assert time.monotonic() < deadline, driver.sent
            time.sleep(0.01)
    finally:
        driver.stop()
        server.shutdown()
        server.server_close()
    assert "execute route" in said[0] and "gateway_standin" in said[0]
    assert {c["path"] for c in calls} == {"/api/v1/execute/classifier.classify"}
    assert calls[0]["input"] == {"text": "refund please", "correct_label": "billing"}
    tallies = driver.tallies()
    answered = sum(t.sent for t in tallies.values())
    assert answered + driver.unanswered == driver.sent == len(calls)
    assert driver.unanswered == len(calls) // 5
    assert set(tallies) == {"2.0.0", "2.1.0"}
    assert tallies["2.1.0"].sent == sum(1 for n in range(1, len(calls) + 1) if n % 5 == 1)
    assert all(t.right + t.wrong == t.sent for t in tallies.values())
    assert driver.routes() == []  # no weight is read on this path
