"""The Gateway API data-plane stand-in (devenv/gateway_standin.py): rule precedence, the weighted
pick, invalid and empty backends, and forwarding over loopback.

Each rule is pinned to the Gateway API source it follows (sigs.k8s.io/gateway-api v1.6.3):
weights in apis/v1/shared_types.go:315-327, failure answers in apis/v1/httproute_types.go:266-290,
match precedence in apis/v1/httproute_types.go:184-206. Reading the route back from a real API
server is exercised by tests/integration/test_gateway_behind_agentfield.py.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from devenv.gateway_standin import (
    STANDIN_HEADER,
    Backend,
    GatewayStandin,
    Rule,
    choose_backend,
    choose_rule,
    rules_from_route,
)


def route(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"rules": list(rules)}}


def refs(**weights: int | None) -> list[dict[str, Any]]:
    return [
        {"name": name, "port": 8000, **({} if weight is None else {"weight": weight})}
        for name, weight in weights.items()
    ]


def resolved(rules: tuple[Rule, ...]) -> list[list[tuple[str, int, bool]]]:
    return [[(b.service, b.weight, b.valid) for b in r.backends] for r in rules]


def test_weights_as_read_absent_is_one_and_other_kinds_are_invalid() -> None:
    found = rules_from_route(
        route(
            {"backendRefs": refs(a=90, b=10)},
            {
                "backendRefs": [
                    {"name": "c"},
                    {"name": "d", "namespace": "elsewhere", "weight": 5},
                    {"name": "e", "kind": "ServiceImport", "group": "multicluster.x-k8s.io"},
                    {"name": "gone", "weight": 1},
                ]
            },
        ),
        namespace="ns",
        resolve=lambda name: (name != "gone", (f"http://127.0.0.1:1/{name}",)),
    )
    assert resolved(found) == [
        [("a", 90, True), ("b", 10, True)],
        [("c", 1, True), ("d", 5, False), ("e", 1, False), ("gone", 1, False)],
    ]
    assert found[0].backends[0].addresses == ("http://127.0.0.1:1/a",)


def test_the_pick_follows_the_weights_and_never_picks_weight_zero() -> None:
    backends = [Backend("stable", 70), Backend("canary", 30), Backend("off", 0)]
    rng = random.Random(7)
    picks = [choose_backend(backends, rng) for _ in range(20_000)]
    names = [p.service for p in picks if p is not None]
    assert len(names) == 20_000
    assert "off" not in names
    share = names.count("canary") / len(names)
    # 20,000 draws at p = 0.3: the standard error is 0.0032; 5 of them.
    assert abs(share - 0.30) < 0.016, share
    assert choose_backend([Backend("stable", 100), Backend("canary", 0)], rng) == Backend(
        "stable", 100
    )
    assert choose_backend([Backend("a", 0), Backend("b", 0)], rng) is None


def _rule(name: str, *matches: dict[str, Any]) -> Rule:
    return Rule(tuple(matches), (Backend(name, 1),))


def _chosen(rules: list[Rule], path: str, method: str = "POST", **headers: str) -> str | None:
    rule = choose_rule(rules, method=method, path=path, headers=headers, query={})
    return rule.backends[0].service if rule is not None else None


def test_rule_precedence_exact_then_longest_prefix_then_method_then_list_order() -> None:
    rules = [
        _rule("catch-all"),
        _rule("reasoners", {"path": {"type": "PathPrefix", "value": "/reasoners"}}),
        _rule("classify", {"path": {"type": "PathPrefix", "value": "/reasoners/classify/"}}),
        _rule("exact", {"path": {"type": "Exact", "value": "/reasoners/classify"}}),
        _rule("get-only", {"path": {"type": "PathPrefix", "value": "/health"}, "method": "GET"}),
        _rule("health", {"path": {"type": "PathPrefix", "value": "/health"}}),
        _rule("second-catch-all"),
    ]
    assert _chosen(rules, "/reasoners/classify") == "exact"
    assert _chosen(rules, "/reasoners/classify/x") == "classify"
    assert _chosen(rules, "/reasoners/other") == "reasoners"
    # A prefix matches whole path elements only.
    assert _chosen(rules, "/reasonersX") == "catch-all"
    assert _chosen(rules, "/health", method="GET") == "get-only"
    assert _chosen(rules, "/health", method="POST") == "health"
    assert _chosen(rules, "/") == "catch-all"  # a tie: the first rule in list order


def test_header_matches_count_and_are_case_insensitive_by_name() -> None:
    rules = [
        _rule("plain", {"path": {"type": "PathPrefix", "value": "/"}}),
        _rule(
            "canary-header",
            {"headers": [{"name": "X-Canary", "value": "yes"}]},
        ),
        _rule("regex", {"path": {"type": "RegularExpression", "value": ".*"}}),
    ]
    assert _chosen(rules, "/x", **{"x-canary": "yes"}) == "canary-header"
    assert _chosen(rules, "/x", **{"x-canary": "no"}) == "plain"
    assert _chosen([rules[2]], "/x") is None  # RegularExpression is not implemented: no match


class _Agent:
    """A backend on loopback that says who it is."""

    def __init__(self, name: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                payload = json.dumps(
                    {"agent": name, "path": self.path, "body": body, "run": self.headers["X-Run"]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _StaticStandin(GatewayStandin):
    """The stand-in with its route given here instead of read from an API server."""

    fixed: Mapping[str, Any] = {}
    services: Mapping[str, tuple[str, ...] | None] = {}

    def read_once(self) -> None:
        rules = rules_from_route(
            self.fixed,
            namespace=self.namespace,
            resolve=lambda name: (
                self.services.get(name) is not None,
                self.services.get(name) or (),
            ),
        )
        with self._lock:
            self._table.rules, self._table.error = rules, None


@pytest.fixture
def agents() -> Iterator[dict[str, _Agent]]:
    started = {name: _Agent(name) for name in ("stable", "canary")}
    yield started
    for agent in started.values():
        agent.close()


def _standin(fixed: Mapping[str, Any], services: Mapping[str, tuple[str, ...] | None]) -> Any:
    standin = _StaticStandin(
        api_client=None, namespace="ns", http_route="r", address_of=lambda _pod: None, seed=3
    )
    standin.fixed, standin.services = fixed, services
    standin.refresh = 60.0
    standin.start()
    return standin


def test_forwards_path_body_and_headers_by_weight(agents: dict[str, _Agent]) -> None:
    standin = _standin(
        route({"backendRefs": refs(stable=75, canary=25)}),
        {"stable": (agents["stable"].url,), "canary": (agents["canary"].url,)},
    )
    try:
        seen: dict[str, int] = {}
        with httpx.Client(base_url=standin.url) as client:
            for n in range(400):
                answer = client.post(
                    "/reasoners/classify", json={"text": n}, headers={"X-Run": str(n)}
                )
                assert answer.status_code == 200
                body = answer.json()
                assert (body["path"], body["body"], body["run"]) == (
                    "/reasoners/classify",
                    {"text": n},
                    str(n),
                )
                assert answer.headers[STANDIN_HEADER] == body["agent"]
                seen[body["agent"]] = seen.get(body["agent"], 0) + 1
        assert seen == standin.routed()
        # 400 draws at p = 0.25: standard error 0.022; 5 of them.
        assert abs(seen["canary"] / 400 - 0.25) < 0.11, seen
        assert standin.weights() == {"stable": 75, "canary": 25}
        # Another listener (the demo's agents each have a port) serves the same route.
        extra = standin.listen(0)
        assert extra != standin.port and standin.listen(extra) == extra
        answer = httpx.post(f"http://127.0.0.1:{extra}/reasoners/classify", headers={"X-Run": "x"})
        assert answer.status_code == 200 and answer.json()["agent"] in ("stable", "canary")
    finally:
        standin.stop()


def test_invalid_empty_and_all_zero_backends_answer_as_the_spec_says(
    agents: dict[str, _Agent],
) -> None:
    standin = _standin(
        route(
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/missing"}}],
                "backendRefs": refs(gone=1),
            },
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/empty"}}],
                "backendRefs": refs(nopods=1),
            },
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/zero"}}],
                "backendRefs": refs(stable=0, canary=0),
            },
        ),
        {
            "nopods": (),
            "stable": (agents["stable"].url,),
            "canary": (agents["canary"].url,),
        },
    )
    try:
        with httpx.Client(base_url=standin.url) as client:
            assert client.post("/missing").status_code == 500
            empty = client.post("/empty")
            assert empty.status_code == 503
            assert "no ready endpoint" in empty.json()["error"]
            assert client.post("/zero").status_code == 500
            unrouted = client.post("/elsewhere")
            assert unrouted.status_code == 404
            assert unrouted.headers[STANDIN_HEADER] == "none"
        assert standin.routed() == {}
    finally:
        standin.stop()
