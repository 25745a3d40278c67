"""The demo's traffic driver: labelled tickets, split by the weights the operator set.

AgentField's ``POST /api/v1/execute/{node}.{reasoner}`` does **not** route by weight: in every
control-plane version read it calls the unversioned row or the lexicographically smallest version
(``shared/notes/agentfield-api.md`` §0.1; the stand-in does the same). Sending the demo's traffic
through it would give the challenger nothing. So this driver does what a weight-honouring router
would do, and says so: every half second it reads the weights back from the connector API
(``GET /api/v1/connector/reasoners/{node}/versions`` with ``X-Connector-Token``), keeps the
versions whose heartbeat is fresh, and sends each ticket straight to one version's ``base_url``
(``POST {base_url}/reasoners/{reasoner}``) with probability ``weight / sum of weights`` (a weight
of 0 counts as 100, as AgentField's router would treat it).

With ``via_execute`` (the demo's ``--router gateway``) it sends every ticket through AgentField's
execute route instead, and reads no weight: each version has advertised the route's address as its
callback URL, so the split is the gateway's (:mod:`devenv.gateway_standin`), and the version that
answered (the agent's reply names it) is counted.

Every request carries the ticket's label as ``correct_label``, so the agents grade themselves and
record their misses; the driver keeps its own tally per version (sent, right, wrong, errors,
tokens) for the demo's summary. :func:`routes_from_listing` and :func:`choose` are pure.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "EXECUTE_NOTE",
    "ROUTING_NOTE",
    "Route",
    "Ticket",
    "TrafficDriver",
    "VersionTally",
    "choose",
    "load_tickets",
    "routes_from_listing",
]

ROUTING_NOTE = (
    "AgentField's /api/v1/execute ignores traffic weights (it always calls the smallest "
    "version), so the traffic driver reads the weights back from the connector API "
    "(GET /api/v1/connector/reasoners/{node}/versions) every 0.5 s and sends each ticket straight "
    "to one version's base_url with probability weight / sum of weights"
)
EXECUTE_NOTE = (
    "every ticket goes through AgentField's execute route (POST /api/v1/execute/{node}."
    "{reasoner}); AgentField calls one version row's base_url, and every version has registered "
    "the route's address there (AGENT_CALLBACK_URL), so the split is done by the gateway "
    "stand-in (devenv/gateway_standin.py) by the HTTPRoute's weights read back from the API "
    "server; the version that answered is counted"
)
# A version whose heartbeat is older than this is taken as gone (the SDK beats every 2 s).
STALE_AFTER_S = 10.0
# AgentField treats a weight <= 0 as 100 when it routes (execute.go:1591-1596).
_ZERO_WEIGHT_AS = 100


@dataclass(frozen=True)
class Ticket:
    """One labelled ticket."""

    id: str
    text: str
    label: str


def load_tickets(path: Path) -> list[Ticket]:
    """Read ``tickets.jsonl`` (``{"id", "text", "label"}`` per line).

    Raises
    ------
    ValueError
        When a line is not such an object, or the file holds no ticket.
    """
    tickets = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            tickets.append(Ticket(str(raw["id"]), str(raw["text"]), str(raw["label"])))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: not a ticket ({error})") from None
    if not tickets:
        raise ValueError(f"{path}: no tickets")
    return tickets


@dataclass(frozen=True)
class Route:
    """A version the driver may send to.

    Attributes
    ----------
    version
        The agent version.
    weight
        Its raw AgentField weight (a relative share).
    share
        Its fraction of the traffic, 0..1, among the live versions.
    base_url
        Where the agent listens.
    """

    version: str
    weight: int
    share: float
    base_url: str


def _heartbeat_age(stamp: Any, now: datetime) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    with contextlib.suppress(ValueError):
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        return (now - moment).total_seconds()
    return None


def routes_from_listing(
    listing: Mapping[str, Any],
    *,
    now: datetime,
    stale_after: float = STALE_AFTER_S,
    alive: Callable[[str], bool] | None = None,
) -> list[Route]:
    """The live versions and their shares, from the connector's versions list.

    The list can repeat a version (the smallest, when there is no unversioned row): entries
    are de-duplicated by version. A version without a ``base_url`` or whose ``last_heartbeat``
    is older than ``stale_after`` seconds is left out (its process is gone).

    Parameters
    ----------
    listing
        The body of ``GET /api/v1/connector/reasoners/{node}/versions``.
    now
        The current time (UTC).
    stale_after
        Heartbeat age beyond which a version is not sent to.

    Returns
    -------
    list of Route
        Sorted by version; shares sum to 1 (empty when nothing is live).
    """
    seen: dict[str, tuple[int, str]] = {}
    for entry in listing.get("versions") or []:
        version = entry.get("version")
        base_url = entry.get("base_url")
        if not isinstance(version, str) or not version or version in seen:
            continue
        if not isinstance(base_url, str) or not base_url:
            continue
        if alive is not None:
            # A version's heartbeat is no liveness signal on a faithful AgentField (one write
            # per node id every 2 s; status beats land on the smallest version's row), so the
            # driver asks the version's own address, as the operator's readiness check does.
            if not alive(base_url):
                continue
        else:
            age = _heartbeat_age(entry.get("last_heartbeat"), now)
            if age is None or age > stale_after:
                continue
        raw = entry.get("traffic_weight")
        weight = raw if isinstance(raw, int) and not isinstance(raw, bool) else 0
        seen[version] = (weight, base_url)
    effective = {v: (w if w > 0 else _ZERO_WEIGHT_AS) for v, (w, _) in seen.items()}
    total = sum(effective.values())
    return [
        Route(version, seen[version][0], effective[version] / total, seen[version][1])
        for version in sorted(seen)
    ]


def choose(routes: Sequence[Route], rng: random.Random) -> Route:
    """Pick a route with probability equal to its share.

    Raises
    ------
    ValueError
        When there is no route.
    """
    if not routes:
        raise ValueError("no live version to send to")
    point = rng.random()
    cumulative = 0.0
    for route in routes:
        cumulative += route.share
        if point < cumulative:
            return route
    return routes[-1]


@dataclass
class VersionTally:
    """What one version did with the driver's tickets."""

    sent: int = 0
    right: int = 0
    wrong: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def graded(self) -> int:
        """Answers that could be graded (errors excluded)."""
        return self.right + self.wrong

    @property
    def failure_rate(self) -> float | None:
        """Wrong answers and errors over answers and errors (what the rollout measures)."""
        total = self.graded + self.errors
        return (self.wrong + self.errors) / total if total else None


@dataclass
class _Routing:
    routes: list[Route] = field(default_factory=list)
    error: str | None = None
    read_at: float = 0.0


class TrafficDriver:
    """Sends labelled tickets to the agents at a steady rate, split by AgentField weights.

    Parameters
    ----------
    agentfield_url
        AgentField's base URL.
    token
        The connector token (sent as ``X-Connector-Token``; never printed).
    node_id
        The agent's node id.
    reasoner
        The reasoner to call.
    tickets
        The labelled tickets, sent in a seeded shuffled order, round and round.
    rate
        Requests per second, overall.
    concurrency
        Requests in flight at most.
    seed
        Seeds the ticket order and the weighted choice.
    say
        Where it reports.
    via_execute
        Send through AgentField's execute route and count the version that answered, instead
        of splitting here by the connector's weights.
    """

    def __init__(
        self,
        *,
        agentfield_url: str,
        token: str,
        node_id: str,
        reasoner: str,
        tickets: Sequence[Ticket],
        rate: float,
        concurrency: int,
        seed: int,
        say: Callable[[str], None],
        via_execute: bool = False,
    ) -> None:
        self.agentfield_url = agentfield_url.rstrip("/")
        self.via_execute = via_execute
        self._unanswered = 0
        self._token = token
        self.node_id = node_id
        self.reasoner = reasoner
        self.rate = rate
        self.concurrency = concurrency
        self.say = say
        order = list(tickets)
        random.Random(seed).shuffle(order)
        self._tickets = order
        self._rng = random.Random(seed + 1)
        self._next_ticket = 0
        self._next_send = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._routing = _Routing()
        self._tallies: dict[str, VersionTally] = {}
        self._threads: list[threading.Thread] = []

    # -- reading -----------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The routes last read back from AgentField."""
        with self._lock:
            return list(self._routing.routes)

    def tallies(self) -> dict[str, VersionTally]:
        """A copy of the per-version tallies."""
        with self._lock:
            return {version: replace(tally) for version, tally in self._tallies.items()}

    @property
    def sent(self) -> int:
        """Requests sent so far."""
        with self._lock:
            return sum(tally.sent for tally in self._tallies.values()) + self._unanswered

    @property
    def unanswered(self) -> int:
        """Through execute: requests no version answered (an error before or at the agent)."""
        with self._lock:
            return self._unanswered

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the weight reader and the senders."""
        if self.via_execute:
            note = EXECUTE_NOTE.replace("{node}", self.node_id)
            self.say(note.replace("{reasoner}", self.reasoner) + ".")
            self._threads = []
        else:
            self.say(ROUTING_NOTE.replace("{node}", self.node_id) + ".")
            self._threads = [threading.Thread(target=self._read_weights, daemon=True)]
        self._threads += [
            threading.Thread(target=self._send_loop, daemon=True) for _ in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop sending and wait for requests in flight."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=35)

    def _read_weights(self) -> None:
        url = f"{self.agentfield_url}/api/v1/connector/reasoners/{self.node_id}/versions"
        with httpx.Client(timeout=5.0) as client:

            def alive(base_url: str) -> bool:
                try:
                    return client.get(f"{base_url}/health", timeout=1.0).status_code == 200
                except httpx.HTTPError:
                    return False

            while not self._stop.is_set():
                routes: list[Route] | None = None
                error: str | None = None
                try:
                    response = client.get(url, headers={"X-Connector-Token": self._token})
                    if response.status_code == 200:
                        routes = routes_from_listing(
                            response.json(), now=datetime.now(UTC), alive=alive
                        )
                    elif response.status_code == 404:
                        routes = []  # the node has not registered yet
                    else:
                        error = f"HTTP {response.status_code}"
                except (httpx.HTTPError, ValueError) as problem:
                    error = f"{type(problem).__name__}: {problem}"
                with self._lock:
                    if routes is not None:
                        self._routing = _Routing(routes, None, time.monotonic())
                    elif error != self._routing.error:
                        self._routing.error = error
                        self.say(f"cannot read the weights back from AgentField: {error}")
                self._stop.wait(0.5)

    def _next(self) -> tuple[Ticket, Route | None] | None:
        """The next ticket and where to send it (None: through execute), paced to the rate;
        None when stopping."""
        while not self._stop.is_set():
            with self._lock:
                now = time.monotonic()
                if now < self._next_send:
                    wait = self._next_send - now
                elif not self.via_execute and not self._routing.routes:
                    wait = 0.2  # nothing registered yet, or every version went stale
                else:
                    # At most a second's worth of catching up after a stall, never a flood.
                    self._next_send = max(self._next_send, now - 1.0) + 1.0 / self.rate
                    ticket = self._tickets[self._next_ticket % len(self._tickets)]
                    self._next_ticket += 1
                    if self.via_execute:
                        return ticket, None
                    route = choose(self._routing.routes, self._rng)
                    self._tallies.setdefault(route.version, VersionTally()).sent += 1
                    return ticket, route
            self._stop.wait(wait)
        return None

    def _send_loop(self) -> None:
        with httpx.Client(timeout=30.0) as client:
            while True:
                chosen = self._next()
                if chosen is None:
                    return
                ticket, route = chosen
                if route is None:
                    self._execute(client, ticket)
                else:
                    self._send(client, ticket, route)

    def _execute(self, client: httpx.Client, ticket: Ticket) -> None:
        url = f"{self.agentfield_url}/api/v1/execute/{self.node_id}.{self.reasoner}"
        body: Any = None
        try:
            response = client.post(
                url, json={"input": {"text": ticket.text, "correct_label": ticket.label}}
            )
            body = response.json().get("result") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            body = None
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, str):
            with self._lock:
                self._unanswered += 1
            return
        with self._lock:
            self._tallies.setdefault(version, VersionTally()).sent += 1
        self._grade(version, ticket, body)

    def _send(self, client: httpx.Client, ticket: Ticket, route: Route) -> None:
        url = f"{route.base_url.rstrip('/')}/reasoners/{self.reasoner}"
        body: Any = None
        try:
            response = client.post(url, json={"text": ticket.text, "correct_label": ticket.label})
            if response.status_code == 200:
                body = response.json()
        except (httpx.HTTPError, ValueError):
            body = None
        self._grade(route.version, ticket, body)

    def _grade(self, version: str, ticket: Ticket, body: Any) -> None:
        with self._lock:
            tally = self._tallies.setdefault(version, VersionTally())
            if not isinstance(body, dict) or not isinstance(body.get("label"), str):
                tally.errors += 1
                return
            if body["label"] == ticket.label:
                tally.right += 1
            else:
                tally.wrong += 1
            raw_usage = body.get("usage")
            usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
            tally.prompt_tokens += _count(usage.get("prompt_tokens"))
            tally.completion_tokens += _count(usage.get("completion_tokens"))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
