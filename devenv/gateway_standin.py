"""A STAND-IN for a Gateway API data plane: one HTTPRoute's weighted split, served on loopback.

Not a product component and not a gateway: the local environment has no Gateway API
implementation that can forward a request (Envoy-based ones need an Envoy binary no registry here
ships, NGINX Gateway Fabric is not served by the Go module proxy; Traefik v3.6.12 builds and
programs the route but cannot reach a pod, which has no reachable IP here; README, "Which
routers split traffic for real"). This small HTTP proxy plays the data plane's part for ONE
HTTPRoute, so that the "AgentField in front" pattern can run here end to end: every agent
version advertises this proxy's address as its AgentField callback URL, AgentField's execute
route calls it (whatever version row it picked), and the proxy splits the calls by the route's
weights.

What it does, and where that comes from in the Gateway API (``sigs.k8s.io/gateway-api`` v1.6.3,
the module ``devenv.gatewayapi`` installs the CRDs from):

- It reads the HTTPRoute **back from the real API server** every ``refresh`` seconds (a short
  poll), with each backendRef's Service (its ``selector``) and the Ready pods that selector
  picks. Weights are never taken from anywhere else.
- Per request it picks the rule (path ``Exact`` before the longest ``PathPrefix``, then a method
  match, then the most header and query matches, then the first rule in list order;
  ``apis/v1/httproute_types.go:184-206``; no ``matches`` is a prefix match on ``/``), then a
  backendRef with probability ``weight / sum of weights``, weight 0 never, absent weight 1
  (``apis/v1/shared_types.go:315-327``), then one of that Service's Ready pods.
- A backendRef that is not a Service of this namespace, or whose Service does not exist, is
  invalid: its share of the requests gets 500; a Service with no Ready pod gets 503; a rule whose
  weights are all 0 answers 500 (``apis/v1/httproute_types.go:266-290``). No rule matching: 404.

Simplifications, on purpose: no Gateway or listener (the route's ``parentRefs`` and
``hostnames`` are not checked: the proxy IS the route's address); no filters; ``RegularExpression``
matches never match; the pick is random (a real data plane's epsilon). Pods have no network here,
so a pod's address comes from the caller's ``address_of(pod)``, which knows how the tests or the
demo run the pod's process on loopback (the AgentSim's ``/agent/<version>`` path, the process
kubelet's port). Every answer carries ``X-Gateway-Standin: <service>`` (``none`` when the proxy
answered itself) so that it is never taken for a real gateway's.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

__all__ = [
    "STANDIN_HEADER",
    "Backend",
    "GatewayStandin",
    "Rule",
    "choose_backend",
    "choose_rule",
    "rules_from_route",
]

STANDIN_HEADER = "X-Gateway-Standin"
_GROUP, _VERSION, _PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the forwarding client sets itself.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass(frozen=True)
class Backend:
    """One backendRef as the API server holds it, resolved to addresses.

    Attributes
    ----------
    service
        The Service's name.
    weight
        The backendRef's weight (absent means 1).
    valid
        False when it is not a Service of the route's namespace or the Service does not exist.
    addresses
        Base URLs of the Service's Ready pods (empty: no ready endpoint).
    """

    service: str
    weight: int
    valid: bool = True
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    """One rule of the route: its matches (as written) and its backends."""

    matches: tuple[Mapping[str, Any], ...]
    backends: tuple[Backend, ...]


def _is_local_service(ref: Mapping[str, Any], namespace: str) -> bool:
    return (
        ref.get("kind", "Service") == "Service"
        and ref.get("group", "") in ("", "core")
        and ref.get("namespace", namespace) == namespace
    )


def rules_from_route(
    route: Mapping[str, Any],
    *,
    namespace: str,
    resolve: Callable[[str], tuple[bool, tuple[str, ...]]],
) -> tuple[Rule, ...]:
    """The route's rules with every backendRef resolved.

    Parameters
    ----------
    route
        The HTTPRoute as read from the API server.
    namespace
        The route's namespace (a backendRef to another namespace would need a ReferenceGrant,
        which this stand-in does not read: it is treated as invalid).
    resolve
        A Service name to (exists, base URLs of its Ready pods).
    """
    rules = []
    for raw in route.get("spec", {}).get("rules") or []:
        backends = []
        for ref in raw.get("backendRefs") or []:
            name = str(ref.get("name", ""))
            weight = int(ref.get("weight", 1))
            if not _is_local_service(ref, namespace):
                backends.append(Backend(name, weight, valid=False))
                continue
            exists, addresses = resolve(name)
            backends.append(Backend(name, weight, valid=exists, addresses=addresses))
        rules.append(Rule(tuple(raw.get("matches") or ()), tuple(backends)))
    return tuple(rules)


def _path_matches(match: Mapping[str, Any], path: str) -> tuple[bool, int, int]:
    """Whether the path matches, and its precedence (exact first, then prefix length)."""
    spec = match.get("path") or {"type": "PathPrefix", "value": "/"}
    kind, value = spec.get("type", "PathPrefix"), spec.get("value", "/")
    if kind == "Exact":
        return path == value, 1, len(value)
    if kind == "PathPrefix":
        prefix = value.rstrip("/")
        # A prefix matches whole path elements: /abc matches /abc and /abc/x, not /abcd.
        hit = not prefix or path == prefix or path.startswith(prefix + "/")
        return hit, 0, len(prefix)
    return False, 0, 0  # RegularExpression: implementation-specific; not implemented here


def _exact_all(
    wanted: Sequence[Mapping[str, Any]], have: Mapping[str, str], *, fold_case: bool
) -> bool:
    """Every ``Exact`` match holds (another match type never matches here)."""
    for match in wanted:
        name = str(match.get("name", ""))
        key = name.lower() if fold_case else name
        if match.get("type", "Exact") != "Exact" or have.get(key) != match.get("value"):
            return False
    return True


def choose_rule(
    rules: Sequence[Rule],
    *,
    method: str,
    path: str,
    headers: Mapping[str, str],
    query: Mapping[str, str],
) -> Rule | None:
    """The rule a request goes to, by the Gateway API's precedence; None when none matches.

    ``headers`` are keyed in lower case; header names in matches are case-insensitive, query
    parameter names are not.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    best: tuple[tuple[int, int, int, int, int], int] | None = None
    for index, rule in enumerate(rules):
        for match in rule.matches or ({},):
            hit, exact, length = _path_matches(match, path)
            if not hit:
                continue
            if match.get("method") and match["method"] != method:
                continue
            header_matches = match.get("headers") or []
            query_matches = match.get("queryParams") or []
            if not _exact_all(header_matches, lowered, fold_case=True):
                continue
            if not _exact_all(query_matches, query, fold_case=False):
                continue
            key = (
                exact,
                length,
                int(bool(match.get("method"))),
                len(header_matches),
                len(query_matches),
            )
            # Strictly greater: on a tie the earlier rule (list order) stays.
            if best is None or key > best[0]:
                best = (key, index)
    return rules[best[1]] if best is not None else None


def choose_backend(backends: Sequence[Backend], rng: random.Random) -> Backend | None:
    """A backend with probability weight / sum of weights; None when every weight is 0."""
    total = sum(max(b.weight, 0) for b in backends)
    if total <= 0:
        return None
    point = rng.uniform(0, total)
    cumulative = 0
    for backend in backends:
        cumulative += max(backend.weight, 0)
        if backend.weight > 0 and point < cumulative:
            return backend
    return next(b for b in reversed(backends) if b.weight > 0)


def _ready(pod: Mapping[str, Any]) -> bool:
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass
class _Table:
    rules: tuple[Rule, ...] = ()
    error: str | None = "not read yet"
    reads: int = 0


@dataclass
class GatewayStandin:
    """Serves one HTTPRoute's split on ``http://<host>:<port>`` (see the module docstring).

    Parameters
    ----------
    api_client
        A ``kubernetes.client.ApiClient`` allowed to get the HTTPRoute and Services and list
        Pods in ``namespace``.
    namespace, http_route
        The route it serves.
    address_of
        A Ready pod (as a dict) to the base URL its process answers on, or None.
    refresh
        Seconds between two reads of the route, its Services and their pods.
    seed
        Seeds the weighted pick (None: unseeded).
    say
        Where it reports a read that failed (and the first read that worked again).
    host, port
        Where it listens (a loopback address; port 0: a free one). The AgentField SDK registers
        the agent's own listening port with the host of ``AGENT_CALLBACK_URL``, so a route's
        address works as a callback URL only on the agents' port: give it that port on another
        loopback address (127.0.0.2) when the agents listen on 127.0.0.1.
    """

    api_client: Any
    namespace: str
    http_route: str
    address_of: Callable[[Mapping[str, Any]], str | None]
    refresh: float = 0.25
    seed: int | None = None
    say: Callable[[str], None] = lambda _message: None
    host: str = "127.0.0.1"
    port: int = 0
    _table: _Table = field(default_factory=_Table, init=False, repr=False)
    _routed: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rng = random.Random(self.seed)
        self._client = httpx.Client(timeout=30.0)
        self._servers: dict[int, ThreadingHTTPServer] = {}
        self._handler: type[BaseHTTPRequestHandler] | None = None
        self._threads: list[threading.Thread] = []

    # -- reading the route back ----------------------------------------------------------------

    def read_once(self) -> None:
        """Read the route, its Services and their Ready pods from the API server, once."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.api_client)
        custom = client.CustomObjectsApi(self.api_client)
        serialize = self.api_client.sanitize_for_serialization

        def resolve(service: str) -> tuple[bool, tuple[str, ...]]:
            try:
                found = serialize(core.read_namespaced_service(service, self.namespace))
            except ApiException as error:
                if error.status == 404:
                    return False, ()
                raise
            selector = found.get("spec", {}).get("selector") or {}
            if not selector:
                return True, ()  # endpoints managed by hand: not followed by this stand-in
            pods = serialize(
                core.list_namespaced_pod(
                    self.namespace,
                    label_selector=",".join(f"{k}={v}" for k, v in sorted(selector.items())),
                )
            )
            addresses = []
            for pod in pods.get("items") or []:
                address = self.address_of(pod) if _ready(pod) else None
                if address:
                    addresses.append(address.rstrip("/"))
            return True, tuple(sorted(addresses))

        try:
            route: Any = custom.get_namespaced_custom_object(
                _GROUP, _VERSION, self.namespace, _PLURAL, self.http_route
            )
            rules = rules_from_route(route, namespace=self.namespace, resolve=resolve)
            error = None
        except Exception as problem:  # any failed read (API, network): keep the last table
            reason = problem.reason if isinstance(problem, ApiException) else problem
            rules, error = (), f"cannot read HTTPRoute {self.http_route}: {reason}"
        with self._lock:
            previous = self._table.error
            # A failed read keeps serving the last good table, as a data plane keeps its config.
            self._table = _Table(
                rules if error is None else self._table.rules, error, self._table.reads + 1
            )
        if error is not None and error != previous:
            self.say(error)
        elif error is None and previous is not None and self._table.reads > 1:
            self.say(f"HTTPRoute {self.http_route} read again")

    def weights(self) -> dict[str, int]:
        """Service to weight, as last read back (every rule's backendRefs; later rules win)."""
        with self._lock:
            return {b.service: b.weight for r in self._table.rules for b in r.backends}

    def routed(self) -> dict[str, int]:
        """Requests forwarded so far, per Service."""
        with self._lock:
            return dict(self._routed)

    @property
    def url(self) -> str:
        """The route's address (what every version advertises as its callback URL)."""
        return f"http://{self.host}:{self.port}"

    # -- serving -------------------------------------------------------------------------------

    def _pick(
        self, method: str, target: str, headers: Mapping[str, str]
    ) -> tuple[int, str, str | None]:
        """(status, Service, address) where a request goes, or (status, why not, None)."""
        parts = urlsplit(target)
        with self._lock:
            rules = self._table.rules
            rule = choose_rule(
                rules,
                method=method,
                path=parts.path or "/",
                headers=headers,
                query=dict(parse_qsl(parts.query)),
            )
            if rule is None:
                return 404, "no rule of the route matches", None
            backend = choose_backend(rule.backends, self._rng)
            if backend is None:
                return 500, "every backendRef of the rule has weight 0", None
            if not backend.valid:
                return 500, f"backendRef {backend.service} is invalid", None
            if not backend.addresses:
                return 503, f"Service {backend.service} has no ready endpoint", None
            self._routed[backend.service] = self._routed.get(backend.service, 0) + 1
            return 200, backend.service, self._rng.choice(backend.addresses)

    def start(self) -> None:
        """Read the route once, then serve and keep reading it in the background."""
        self.read_once()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as AgentField's client expects
            # One buffered write per answer, no Nagle: headers and body in separate segments
            # would wait for the client's delayed ACK (~40 ms) on every kept-alive request.
            wbufsize = -1
            disable_nagle_algorithm = True

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items()}
                status, service, address = standin._pick(self.command, self.path, headers)
                if address is None:
                    self._reply(status, "none", json.dumps({"error": service}).encode())
                    return
                forwarded = {k: v for k, v in headers.items() if k.lower() not in _NOT_FORWARDED}
                try:
                    answer = standin._client.request(
                        self.command, address + self.path, content=body, headers=forwarded
                    )
                except httpx.HTTPError as error:
                    message = f"upstream {service} failed: {type(error).__name__}"
                    self._reply(503, service, json.dumps({"error": message}).encode())
                    return
                self._reply(
                    answer.status_code,
                    service,
                    answer.content,
                    answer.headers.get("content-type", "application/json"),
                )

            def _reply(
                self,
                status: int,
                service: str,
                payload: bytes,
                content_type: str = "application/json",
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header(STANDIN_HEADER, service)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *_: Any) -> None:
                pass

        self._handler = Handler
        self.port = self.listen(self.port)
        poller = threading.Thread(target=self._poll, daemon=True)
        self._threads.append(poller)
        poller.start()

    def listen(self, port: int) -> int:
        """Also serve the route on ``host:port`` (once per port); returns the port.

        A real Gateway listens on the agents' port and every pod has its own IP; the demo's agent
        processes share 127.0.0.1 on a port each, and the SDK registers its own port, so the
        demo gives the stand-in one listener per agent port (the same split on every one).
        """
        if self._handler is None:
            raise RuntimeError("start() first")
        with self._lock:
            if port and port in self._servers:
                return port
        server = ThreadingHTTPServer((self.host, port), self._handler)
        server.daemon_threads = True
        bound = int(server.server_address[1])
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        with self._lock:
            self._servers[bound] = server
            self._threads.append(thread)
        thread.start()
        return bound

    def _poll(self) -> None:
        while not self._stop.wait(self.refresh):
            self.read_once()

    def stop(self) -> None:
        """Stop reading and serving; close the forwarding client."""
        self._stop.set()
        with self._lock:
            servers = list(self._servers.values())
        for server in servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._client.close()
