"""A **deterministic simulator** of an OpenAI-compatible chat model, for tests and the keyless demo.

It is not a language model. It answers the two requests promptloop's loop makes with fixed,
documented rules, so that the demo's loop measurably improves a ticket classifier and every test is
reproducible. With ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` pointing at a real endpoint, the same
client code talks to a real model instead.

Routes
------
``POST /v1/chat/completions`` (also ``/chat/completions``)
    ``response_format`` may be ``{"type": "json_schema", "json_schema": {"name", "schema",
    "strict"}}`` (what ``openai``'s ``client.chat.completions.parse`` sends; the JSON answer is in
    ``choices[0].message.content``), ``{"type": "json_object"}``, or absent (plain text).
    ``stream: true`` is answered with one content chunk. ``usage`` counts tokens as characters / 4
    (rounded up), the same estimate the improver uses.
``GET /v1/models``
    The one model, ``promptloop-simulator`` (any requested model name is accepted).
``GET /health``
    ``{"status": "ok", "simulator": "deterministic", ...}``.
``POST /_control`` and ``GET /_control``
    Test switches (below) and request counters.

Role 1: the classifier
----------------------
Any request that is not an improver request (below) is a classification: the system message is the
agent's prompt, the last user message the ticket, and the answer one word among ``billing``,
``bug`` and ``other``. The simulator holds a fixed catalogue of keyword rules (:data:`RULES`); a
rule is **enabled by the prompt** when one sentence of the prompt mentions one of the rule's
trigger words *and* the rule's label word. The ticket gets the label with the most enabled rules
matching it; ties go to ``billing`` before ``bug``; no match is ``other``. A request without a
system message is classified under the seed's prompt (:data:`BASE_PROMPT`).

======================  ========  ============================  ===================================
rule                    label     enabled by a sentence naming  matches tickets mentioning
======================  ========  ============================  ===================================
``billing-basics``      billing   "billing"                     invoice, charged, payment, bill(ed)
``bug-basics``          bug       "bug"                         crash, error, bug, broken, exception
``refunds``             billing   refund                        refund, money back, reimburse
``chargebacks``         billing   chargeback, dispute           chargeback, disputed charge
``subscriptions``       billing   subscription, renewal         subscription, renew(al), plan change
``receipts-and-tax``    billing   receipt, VAT, tax             receipt, VAT, sales tax, tax ID
``not-loading``         bug       load, blank, spinner          doesn't/won't load, blank page
``freezes``             bug       freeze, hang, unresponsive    freezes, hangs, stops responding
``sync``                bug       sync                          not syncing, out of sync
======================  ========  ============================  ===================================

So the seed's base prompt "Classify the ticket as billing, bug, or other. One word." enables only
the two ``*-basics`` rules: refund, chargeback, subscription and receipt questions and pages that
don't load, freeze or don't sync come back ``other``.

Role 2: the improver
--------------------
A request whose text contains the improver template's marker (``promptloop-improver-request``) or
whose ``json_schema`` is named ``Proposal`` is an improver request. The simulator reads the current
prompt and the failures from the template's fenced, JSON-encoded blocks, finds the catalogue rules
that are not yet enabled, carry a failure's *expected* label and match its text, and answers
``{"revised_system_prompt": <current prompt + one guidance sentence per such rule, most frequent
first>, "rationale": "misses were refund and subscription questions labeled other not billing"}``.
Failures no rule explains (an ``other`` ticket mentioning "error") are left alone, as they would be
by a careful human.

Switches (for tests)
--------------------
``POST /_control {"mode": M, "count": N, "delay_s": S}`` sets a mode for the next ``N`` chat
requests (default: until changed); ``{"reset": true}`` also zeroes the counters. The environment
variable ``PROMPTLOOP_SIM_MODE`` sets the initial mode. Modes:

- ``normal``: the behaviour above.
- ``error500``: every chat request answers HTTP 500; ``error429`` answers 429; ``error401``
  answers 401 with the caller's key echoed masked, as OpenAI does.
- ``delay``: every chat request waits ``delay_s`` seconds (default 30) before answering normally
  (released at once by the next ``/_control`` call or shutdown).
- ``no_structured``: requests with a ``json_schema`` response format answer HTTP 400, as servers
  without structured outputs do; ``json_object`` and text requests are answered normally.
- ``malformed``, ``missing_fields``, ``empty_prompt``, ``unchanged``: improver requests are
  answered with non-JSON text, JSON without ``revised_system_prompt``, an empty prompt, or the
  current prompt unchanged. Classifier requests are unaffected.

``GET /_control`` returns ``{"mode", "requests", "chat_requests", "by_role", "by_format"}``
(``requests`` counts every API request, ``/health`` and ``/_control`` aside).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = [
    "BASE_PROMPT",
    "CLASSIFIER_LABELS",
    "IMPROVER_MARKER",
    "MODES",
    "RULES",
    "SIMULATOR_MODEL",
    "STATE_KEY",
    "InProcessSimulator",
    "Rule",
    "SimulatorState",
    "build_app",
    "classify",
    "enabled_rules",
    "estimate_tokens",
    "improve",
    "main",
    "run_in_thread",
    "serve",
]

SIMULATOR_MODEL = "promptloop-simulator"
# The seed's prompt; used when a classification request carries no system message.
BASE_PROMPT = "Classify the ticket as billing, bug, or other. One word."
# Must match promptloop.improver.llm.REQUEST_MARKER; duplicated so the simulator does not import
# the improver (it stands in for a third-party server).
IMPROVER_MARKER = "promptloop-improver-request"
CLASSIFIER_LABELS = ("billing", "bug", "other")
MODES = (
    "normal",
    "error500",
    "error429",
    "error401",
    "delay",
    "no_structured",
    "malformed",
    "missing_fields",
    "empty_prompt",
    "unchanged",
)
DESCRIPTION = (
    "promptloop deterministic LLM simulator: an OpenAI-compatible server answering with fixed "
    "keyword rules, not a language model"
)

# ---------------------------------------------------------------------------------------------
# The rule catalogue (pure)


@dataclass(frozen=True)
class Rule:
    """One keyword rule of the simulated classifier.

    Attributes
    ----------
    name
        A short identifier.
    label
        The label the rule votes for.
    triggers
        Word stems; a prompt sentence naming one of them and the label enables the rule.
    patterns
        Regular expressions (case-insensitive) matched against a ticket.
    guidance
        The sentence the simulated improver adds to a prompt to enable the rule.
    theme
        How the simulated improver's rationale names the tickets the rule covers.
    """

    name: str
    label: str
    triggers: tuple[str, ...]
    patterns: tuple[str, ...]
    guidance: str
    theme: str


RULES: tuple[Rule, ...] = (
    Rule(
        name="billing-basics",
        label="billing",
        triggers=("billing",),
        patterns=(
            r"\binvoic\w*",
            r"\b(over)?charged\b",
            r"\bcharges?\b",
            r"\bpayments?\b",
            r"\bbill(s|ed|ing)?\b",
            r"\bcredit card\b",
        ),
        guidance="Treat invoices, charges and payments as billing.",
        theme="invoice and payment questions",
    ),
    Rule(
        name="bug-basics",
        label="bug",
        triggers=("bug",),
        patterns=(
            r"\bcrash\w*",
            r"\berrors?\b",
            r"\bbugs?\b",
            r"\bbroken\b",
            r"\bexceptions?\b",
        ),
        guidance="Treat crashes and error messages as bug.",
        theme="crashes and error messages",
    ),
    Rule(
        name="refunds",
        label="billing",
        triggers=("refund",),
        patterns=(r"\brefund\w*", r"\bmoney back\b", r"\breimburs\w*"),
        guidance="Treat refund requests and money-back questions as billing.",
        theme="refund questions",
    ),
    Rule(
        name="chargebacks",
        label="billing",
        triggers=("chargeback", "dispute"),
        patterns=(r"\bchargebacks?\b", r"\bdisput\w*"),
        guidance="Treat chargebacks and disputed transactions as billing.",
        theme="chargebacks",
    ),
    Rule(
        name="subscriptions",
        label="billing",
        triggers=("subscription", "renewal"),
        patterns=(
            r"\bsubscri\w*",
            r"\brenew\w*",
            r"\b(upgrad|downgrad|switch|chang|cancel)\w* (from |to )?(my |our |the |a )?"
            r"(\w+ )?(plan|tier|seats?)\b",
            r"\b(annual|monthly|yearly) (plan|tier)\b",
        ),
        guidance=(
            "Treat subscriptions, renewals and upgrading, downgrading or cancelling a plan as "
            "billing."
        ),
        theme="subscription and renewal questions",
    ),
    Rule(
        name="receipts-and-tax",
        label="billing",
        triggers=("receipt", "vat", "tax"),
        patterns=(r"\breceipts?\b", r"\bvat\b", r"\bsales tax\b", r"\btax (id|number|exempt\w*)\b"),
        guidance="Treat receipts, VAT and tax questions as billing.",
        theme="receipt and tax questions",
    ),
    Rule(
        name="not-loading",
        label="bug",
        triggers=("load", "blank", "spinner"),
        patterns=(
            r"\b(doesn't|does not|won't|will not|didn't|never|fails to|failing to) load\b",
            r"\bnot loading\b",
            r"\bstuck (on|at) (the )?loading\b",
            r"\bblank (page|screen|white page)\b",
            r"\bspinner\b",
            r"\bspins forever\b",
        ),
        guidance="Treat pages or screens that don't load, stay blank or spin forever as bug.",
        theme="pages that don't load",
    ),
    Rule(
        name="freezes",
        label="bug",
        triggers=("freez", "hang", "unresponsive"),
        patterns=(
            r"\bfreez\w*",
            r"\bfrozen\b",
            r"\bhangs\b",
            r"\bhung\b",
            r"\bunresponsive\b",
            r"\bstops? responding\b",
            r"\bnot responding\b",
        ),
        guidance="Treat an app that freezes, hangs or stops responding as bug.",
        theme="apps that freeze",
    ),
    Rule(
        name="sync",
        label="bug",
        triggers=("sync",),
        patterns=(
            r"\b(not|isn't|aren't|doesn't|don't|won't|stopped|stop) sync\w*",
            r"\bout of sync\b",
            r"\bsync (fails|failed|is failing)\b",
        ),
        guidance="Treat data that doesn't sync or is out of sync between devices as bug.",
        theme="data that doesn't sync",
    ),
)

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;:])\s+|\n+")
_COMPILED: dict[str, tuple[re.Pattern[str], ...]] = {
    rule.name: tuple(re.compile(p, re.IGNORECASE) for p in rule.patterns) for rule in RULES
}
# Tie order: billing before bug (a ticket about being charged after a crash is about money).
_LABEL_ORDER = {"billing": 0, "bug": 1}


def _sentences(prompt: str) -> list[str]:
    return [s for s in _SENTENCE_SPLIT.split(prompt.lower()) if s.strip()]


def _names(sentence: str, stem: str) -> bool:
    # A stem names a word beginning with it ("refund" names "refunds"); a word boundary in front
    # stops "load" from naming "download".
    return re.search(r"\b" + re.escape(stem.lower()), sentence) is not None


@functools.lru_cache(maxsize=256)  # a run classifies many tickets under few prompts
def enabled_rules(prompt: str) -> tuple[Rule, ...]:
    """The rules a system prompt enables.

    Parameters
    ----------
    prompt
        The agent's system prompt.

    Returns
    -------
    tuple of Rule
        Every rule for which one sentence of the prompt names one of its triggers and its label.
    """
    sentences = _sentences(prompt)
    return tuple(
        rule
        for rule in RULES
        if any(
            _names(s, rule.label) and any(_names(s, t) for t in rule.triggers) for s in sentences
        )
    )


def _matches(rule: Rule, text: str) -> bool:
    return any(p.search(text) for p in _COMPILED[rule.name])


def classify(prompt: str, text: str) -> str:
    """Classify a ticket the way the simulator does.

    Parameters
    ----------
    prompt
        The system prompt; it decides which rules are enabled.
    text
        The ticket.

    Returns
    -------
    str
        ``billing``, ``bug`` or ``other``.
    """
    votes: Counter[str] = Counter()
    for rule in enabled_rules(prompt):
        if _matches(rule, text):
            votes[rule.label] += 1
    if not votes:
        return "other"
    best = max(votes.values())
    return min((label for label, n in votes.items() if n == best), key=_LABEL_ORDER.__getitem__)


def estimate_tokens(text: str) -> int:
    """Characters / 4, rounded up: the token estimate the simulator reports as usage."""
    return math.ceil(len(text) / 4)


def _fenced_block(text: str, name: str) -> Any:
    match = re.search(
        rf"<<<BEGIN {name} (\S+)\n(.*?)\nEND {name} \1>>>",
        text,
        re.DOTALL,
    )
    if match is None:
        return None
    try:
        return json.loads(match.group(2))
    except json.JSONDecodeError:
        return None


def improve(request_text: str) -> dict[str, str]:
    """Answer an improver request deterministically.

    Parameters
    ----------
    request_text
        The rendered improver request (the user message of ``request.j2``).

    Returns
    -------
    dict
        ``{"revised_system_prompt": str, "rationale": str}``.
    """
    current = _fenced_block(request_text, "CURRENT_PROMPT")
    current_prompt = current if isinstance(current, str) else ""
    failures = _fenced_block(request_text, "FAILURES")
    if not isinstance(failures, list):
        failures = []
    enabled = {rule.name for rule in enabled_rules(current_prompt)}
    hits: Counter[str] = Counter()
    predicted_by_rule: dict[str, Counter[str]] = {}
    for failure in failures:
        if not isinstance(failure, Mapping):
            continue
        text = str(failure.get("input", ""))
        expected = str(failure.get("expected", "")).strip().lower()
        predicted = str(failure.get("predicted", "")).strip().lower() or "other"
        for rule in RULES:
            if rule.name in enabled or rule.label != expected or not _matches(rule, text):
                continue
            hits[rule.name] += 1
            predicted_by_rule.setdefault(rule.name, Counter())[predicted] += 1
    order = {rule.name: i for i, rule in enumerate(RULES)}
    chosen = sorted(hits, key=lambda name: (-hits[name], order[name]))
    by_name = {rule.name: rule for rule in RULES}
    if not chosen:
        return {
            "revised_system_prompt": current_prompt.rstrip()
            + "\nRead the whole ticket before answering.",
            "rationale": "no common pattern found in the misses; asked for a closer reading",
        }
    guidance = " ".join(by_name[name].guidance for name in chosen)
    revised = f"{current_prompt.rstrip()}\n{guidance}".strip()
    # The rationale groups the themes by (predicted, expected), most frequent first.
    groups: dict[tuple[str, str], list[str]] = {}
    for name in chosen:
        rule = by_name[name]
        predicted = predicted_by_rule[name].most_common(1)[0][0]
        groups.setdefault((predicted, rule.label), []).append(rule.theme)
    parts = [
        f"{_join(themes)} labeled {predicted} not {label}"
        for (predicted, label), themes in groups.items()
    ]
    return {"revised_system_prompt": revised, "rationale": "misses were " + "; ".join(parts)}


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# ---------------------------------------------------------------------------------------------
# The server


@dataclass
class SimulatorState:
    """Mutable switches and counters of one simulator, shared across threads.

    Attributes
    ----------
    mode
        One of :data:`MODES`.
    remaining
        How many more chat requests the mode applies to (``None``: until changed).
    delay_s
        How long ``delay`` mode waits.
    """

    mode: str = "normal"
    remaining: int | None = None
    delay_s: float = 30.0
    requests: int = 0
    chat_requests: int = 0
    by_role: Counter[str] = field(default_factory=Counter)
    by_format: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_mode(self, mode: str, count: int | None = None, delay_s: float | None = None) -> None:
        """Switch the mode (thread-safe)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        with self.lock:
            self.mode = mode
            self.remaining = count
            if delay_s is not None:
                self.delay_s = delay_s

    def reset(self) -> None:
        """Back to normal mode with zeroed counters."""
        with self.lock:
            self.mode, self.remaining, self.delay_s = "normal", None, 30.0
            self.requests = self.chat_requests = 0
            self.by_role.clear()
            self.by_format.clear()

    def take_mode(self) -> str:
        """The mode for the chat request now arriving (consumes one of ``count``)."""
        with self.lock:
            mode = self.mode
            if self.remaining is not None:
                self.remaining -= 1
                if self.remaining <= 0:
                    self.mode, self.remaining = "normal", None
            return mode

    def snapshot(self) -> dict[str, Any]:
        """Counters and mode as JSON."""
        with self.lock:
            return {
                "mode": self.mode,
                "remaining": self.remaining,
                "requests": self.requests,
                "chat_requests": self.chat_requests,
                "by_role": dict(self.by_role),
                "by_format": dict(self.by_format),
            }


def _message_text(content: Any) -> str:
    # Content may be a string or a list of parts ({"type": "text", "text": ...}).
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def _error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.json_response(body, status=status)


class _Handlers:
    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.release = asyncio.Event()
        self.counter = 0

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "simulator": "deterministic",
                "model": SIMULATOR_MODEL,
                "description": DESCRIPTION,
            }
        )

    async def models(self, _request: web.Request) -> web.Response:
        with self.state.lock:
            self.state.requests += 1
        model = {"id": SIMULATOR_MODEL, "object": "model", "created": 0, "owned_by": "promptloop"}
        return web.json_response({"object": "list", "data": [model]})

    async def control_get(self, _request: web.Request) -> web.Response:
        return web.json_response(self.state.snapshot())

    async def control_post(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "body must be JSON")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        if body.get("reset"):
            self.state.reset()
        try:
            if "mode" in body:
                delay = body.get("delay_s")
                count = body.get("count")
                self.state.set_mode(
                    str(body["mode"]),
                    count=int(count) if count is not None else None,
                    delay_s=float(delay) if delay is not None else None,
                )
        except (TypeError, ValueError) as error:
            return _error(400, str(error))
        # Any control call releases requests parked by ``delay`` mode.
        self.release.set()
        self.release = asyncio.Event()
        return web.json_response(self.state.snapshot())

    async def chat(self, request: web.Request) -> web.StreamResponse:
        with self.state.lock:
            self.state.requests += 1
            self.state.chat_requests += 1
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "request body must be JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "messages is required")
        messages = [m for m in body["messages"] if isinstance(m, Mapping)]
        response_format = body.get("response_format") or {}
        format_type = (
            str(response_format.get("type", "text"))
            if isinstance(response_format, Mapping)
            else "text"
        )
        schema_name = ""
        if format_type == "json_schema" and isinstance(response_format, Mapping):
            spec = response_format.get("json_schema") or {}
            schema_name = str(spec.get("name", "")) if isinstance(spec, Mapping) else ""
        all_text = "\n".join(_message_text(m.get("content")) for m in messages)
        is_improver = IMPROVER_MARKER in all_text or schema_name == "Proposal"
        role = "improver" if is_improver else "classifier"
        with self.state.lock:
            self.state.by_role[role] += 1
            self.state.by_format[format_type] += 1

        mode = self.state.take_mode()
        if mode == "error500":
            return _error(500, "simulated internal error", "server_error")
        if mode == "error429":
            return _error(429, "simulated rate limit", "rate_limit_error")
        if mode == "error401":
            # As real servers do, echo the key masked: clients must not print even that.
            key = request.headers.get("Authorization", "").removeprefix("Bearer ")
            masked = f"{key[:6]}***{key[-4:]}" if len(key) > 10 else "***"
            return _error(401, f"Incorrect API key provided: {masked}.", "invalid_api_key")
        if mode == "delay":
            release = self.release
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), self.state.delay_s)
        if mode == "no_structured" and format_type == "json_schema":
            return _error(400, "response_format json_schema is not supported by this server")

        if is_improver:
            content = self._improver_content(messages, mode)
        else:
            content = self._classifier_content(messages, format_type)

        prompt_tokens = sum(estimate_tokens(_message_text(m.get("content"))) for m in messages)
        completion_tokens = estimate_tokens(content)
        finish_reason = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and limit > 0 and completion_tokens > limit:
            content, completion_tokens, finish_reason = content[: limit * 4], limit, "length"
        model = str(body.get("model") or SIMULATOR_MODEL)
        self.counter += 1
        completion_id = f"chatcmpl-sim-{self.counter}"
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if body.get("stream"):
            return await self._stream(request, completion_id, model, content, finish_reason, usage)
        message = {"role": "assistant", "content": content, "refusal": None}
        choice = {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
        return web.json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [choice],
                "usage": usage,
                "system_fingerprint": "promptloop-simulator",
            }
        )

    @staticmethod
    def _improver_content(messages: Sequence[Mapping[str, Any]], mode: str) -> str:
        user = next(
            (
                _message_text(m.get("content"))
                for m in messages
                if m.get("role") == "user" and IMPROVER_MARKER in _message_text(m.get("content"))
            ),
            "\n".join(_message_text(m.get("content")) for m in messages),
        )
        answer = improve(user)
        if mode == "malformed":
            return "Sure! Here is a better prompt: " + answer["revised_system_prompt"]
        if mode == "missing_fields":
            return json.dumps({"rationale": answer["rationale"]})
        if mode == "empty_prompt":
            return json.dumps({"revised_system_prompt": "", "rationale": answer["rationale"]})
        if mode == "unchanged":
            current = _fenced_block(user, "CURRENT_PROMPT")
            unchanged = current if isinstance(current, str) else ""
            return json.dumps({"revised_system_prompt": unchanged, "rationale": "no change"})
        return json.dumps(answer)

    @staticmethod
    def _classifier_content(messages: Sequence[Mapping[str, Any]], format_type: str) -> str:
        system_parts = [
            _message_text(m.get("content"))
            for m in messages
            if m.get("role") in ("system", "developer")
        ]
        # Without a system message the seed's base prompt applies (handy for a quick curl).
        system = "\n".join(system_parts) if system_parts else BASE_PROMPT
        users = [_message_text(m.get("content")) for m in messages if m.get("role") == "user"]
        label = classify(system, users[-1] if users else "")
        if format_type in ("json_object", "json_schema"):
            return json.dumps({"label": label})
        return label

    @staticmethod
    async def _stream(
        request: web.Request,
        completion_id: str,
        model: str,
        content: str,
        finish_reason: str,
        usage: dict[str, int],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        chunks = [
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": content},
                        "finish_reason": None,
                    }
                ],
            },
            {
                **base,
                "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}],
                "usage": usage,
            },
        ]
        for chunk in chunks:
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


STATE_KEY: web.AppKey[SimulatorState] = web.AppKey("state", SimulatorState)
HANDLERS_KEY: web.AppKey[_Handlers] = web.AppKey("handlers", _Handlers)


def build_app(state: SimulatorState | None = None) -> web.Application:
    """The simulator as an aiohttp application.

    Parameters
    ----------
    state
        Shared switches and counters; a fresh one by default.

    Returns
    -------
    aiohttp.web.Application
        The application; ``app[STATE_KEY]`` is the :class:`SimulatorState`.
    """
    state = state or SimulatorState()
    handlers = _Handlers(state)
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[STATE_KEY] = state
    app[HANDLERS_KEY] = handlers
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/v1/models", handlers.models)
    app.router.add_get("/models", handlers.models)
    app.router.add_post("/v1/chat/completions", handlers.chat)
    app.router.add_post("/chat/completions", handlers.chat)
    app.router.add_get("/_control", handlers.control_get)
    app.router.add_post("/_control", handlers.control_post)

    async def _release_on_shutdown(_app: web.Application) -> None:
        # Parked ``delay`` requests must not hold shutdown hostage.
        handlers.release.set()

    app.on_shutdown.append(_release_on_shutdown)
    return app


def _bind(host: str, port: int) -> socket.socket:
    # Binding the socket ourselves lets port 0 pick a free port without a probe-then-bind race.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    port_file: Path | None = None,
    state: SimulatorState | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT when none is given).

    Parameters
    ----------
    host, port
        Where to listen; port 0 picks a free port.
    port_file
        Written (atomically) with the bound port once the server accepts connections.
    state
        Shared switches and counters.
    stop
        Set it to stop the server.
    """
    app = build_app(state)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    sock = _bind(host, port)
    site = web.SockSite(runner, sock)
    await site.start()
    bound = sock.getsockname()[1]
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(bound))
        tmp.replace(port_file)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    print(f"{DESCRIPTION}; listening on http://{host}:{bound}/v1", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


class InProcessSimulator:
    """The simulator on a free loopback port in a background thread, for tests.

    Use it as a context manager; :attr:`base_url` is what ``OPENAI_BASE_URL`` should be.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.state = SimulatorState()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The server's root URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``/v1``)."""
        return f"{self.url}/v1"

    def start(self, timeout: float = 10.0) -> InProcessSimulator:
        """Start the server and return once it accepts connections."""
        self._thread = threading.Thread(target=self._run, name="llm-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the LLM simulator did not start in time")
        if self._error is not None:
            raise RuntimeError("the LLM simulator failed to start") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as error:  # surfaced to start() through _error
            self._error = error
            self._ready.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = build_app(self.state)
        self._handlers: _Handlers = app[HANDLERS_KEY]
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = _bind(self.host, 0)
        site = web.SockSite(runner, sock)
        await site.start()
        self.port = sock.getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def control(
        self, mode: str = "normal", *, count: int | None = None, delay_s: float | None = None
    ) -> None:
        """Switch the mode (see the module docstring) and release parked requests."""
        self.state.set_mode(mode, count=count, delay_s=delay_s)
        self._release()

    def reset(self) -> None:
        """Normal mode, zeroed counters."""
        self.state.reset()
        self._release()

    def stats(self) -> dict[str, Any]:
        """The counters (``requests``, ``chat_requests``, ``by_role``, ``by_format``, ``mode``)."""
        return self.state.snapshot()

    def _release(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            handlers = self._handlers

            def swap() -> None:
                handlers.release.set()
                handlers.release = asyncio.Event()

            loop.call_soon_threadsafe(swap)

    def stop(self) -> None:
        """Stop the server and join its thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and loop.is_running():
            self._release()
            loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> InProcessSimulator:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def run_in_thread(host: str = "127.0.0.1") -> Iterator[InProcessSimulator]:
    """Run the simulator in a background thread for the duration of a ``with`` block.

    Yields
    ------
    InProcessSimulator
        The running simulator (``.base_url``, ``.control()``, ``.stats()``).
    """
    simulator = InProcessSimulator(host).start()
    try:
        yield simulator
    finally:
        simulator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devenv.llm_simulator``: serve in the foreground."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, default=None, help="write the bound port here")
    parser.add_argument("--mode", choices=MODES, default=os.environ.get("PROMPTLOOP_SIM_MODE"))
    args = parser.parse_args(argv)
    state = SimulatorState()
    if args.mode:
        state.set_mode(args.mode)
    asyncio.run(serve(args.host, args.port, port_file=args.port_file, state=state))
    return 0


if __name__ == "__main__":
    sys.exit(main())
