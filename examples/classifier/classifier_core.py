"""The example classifier's logic that does not need the AgentField SDK: configuration, label
parsing and the outcome recorder.

Kept apart from ``classifier.py`` (the SDK wiring) so that promptloop's own test suite, whose
environment does not install the SDK, can test it (``tests/unit/test_classifier_core.py``).

What the agent records, and where
---------------------------------
Every graded request (one that carries ``correct_label``) and every request whose model call
failed updates two things in AgentField's **global** memory scope:

``<outcomes prefix>.<node id>.<version>`` (default prefix ``promptloop.outcomes``)
    ``{"total": int, "failed": int}``, cumulative: what promptloop's ``agentfieldMemory`` metrics
    provider reads for each version.
``failures`` (configurable)
    A list, oldest first, of ``{"text", "predicted", "expected", "version"}``, one per miss,
    bounded to the newest 500: what ``promptloop improve --source agentfield`` reads.

The counters follow promptloop's counter contract: a request is counted in ``total`` in the
same write as ``failed``, once its outcome is known (the model answered and was graded, or the
call failed), never when it arrives; and once per task: the agent makes one model call per
request and does not retry it, and a caller that retries a failed request should send the
retry without ``correct_label`` (ungraded, so uncounted) or count the task itself.

Global scope on purpose: a plain ``app.memory.set`` inside a reasoner writes to the per-run
*workflow* scope (the SDK always sends ``X-Workflow-ID``), where neither the operator nor the
improver would ever find it.

Concurrency
-----------
AgentField's memory API has get and set but no increment or append, so each update is a
read-modify-write. Two concurrent requests in one process would both read ``total = 41`` and
both write 42, losing a count; the recorder therefore serialises its updates with one
``asyncio.Lock`` per process. That does **not** protect against another process: two replicas of
the same version share one counter key and can still lose counts to each other, and every
version appends to the same ``failures`` list. Run one replica per version when its counters
feed a rollout (the demo does), or use the Prometheus counters (one series per pod, summed by
PromQL, never lost) with promptloop's ``prometheus`` metrics provider. A lost entry in the
``failures`` list costs the improver one example, nothing more.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "DEFAULT_FAILURES_KEY",
    "DEFAULT_FAILURES_LIMIT",
    "DEFAULT_OUTCOMES_PREFIX",
    "LABELS",
    "ClassifierConfig",
    "ConfigError",
    "Memory",
    "Outcome",
    "OutcomeRecorder",
    "outcome_key",
    "parse_label",
]

LABELS = ("billing", "bug", "other")
DEFAULT_FAILURES_KEY = "failures"
DEFAULT_FAILURES_LIMIT = 500
DEFAULT_OUTCOMES_PREFIX = "promptloop.outcomes"
# A predicted label longer than this is a model that ignored "one word": keep enough to see it.
_PREDICTED_CHARS = 64
# A ticket stored in the failure log; the improver truncates further (2,000 by default).
_TEXT_CHARS = 4000


class ConfigError(ValueError):
    """The environment does not describe a runnable agent."""


@dataclass(frozen=True)
class ClassifierConfig:
    """What the agent reads from its environment (the pod template, or the demo's kubelet).

    Attributes
    ----------
    node_id
        ``AGENT_NODE_ID`` (default ``classifier``).
    version
        ``PROMPTLOOP_VERSION`` (set by the operator on every challenger), else ``AGENT_VERSION``.
    system_prompt
        The file named by ``SYSTEM_PROMPT_FILE`` (the operator's ``prompt.mountPath`` delivery),
        else ``SYSTEM_PROMPT`` (its ``prompt.env`` delivery).
    prompt_source
        Where the prompt came from, for the start-up log line.
    model
        ``OPENAI_MODEL`` (default ``gpt-4o-mini``); base URL and key are the ``openai`` SDK's own
        ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``.
    host, port
        Where the agent listens: ``HOST`` (default ``0.0.0.0``) and ``PORT`` (default 8001).
    failures_key, failures_limit, outcomes_prefix
        ``FAILURES_KEY``, ``FAILURES_LIMIT`` and ``OUTCOMES_PREFIX``.
    max_tokens, temperature
        ``CLASSIFIER_MAX_TOKENS`` (default 16, the cap the improver's evaluation uses) and
        ``CLASSIFIER_TEMPERATURE`` (not sent unless set).
    """

    node_id: str
    version: str
    system_prompt: str
    prompt_source: str
    model: str
    host: str
    port: int
    failures_key: str
    failures_limit: int
    outcomes_prefix: str
    max_tokens: int = 16
    temperature: float | None = None

    def model_options(self) -> dict[str, Any]:
        """Extra chat-completion arguments: the answer cap, and the temperature when set."""
        options: dict[str, Any] = {"max_completion_tokens": self.max_tokens}
        if self.temperature is not None:
            options["temperature"] = self.temperature
        return options

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClassifierConfig:
        """Read the configuration.

        Parameters
        ----------
        environ
            The environment (default ``os.environ``).

        Returns
        -------
        ClassifierConfig
            The configuration.

        Raises
        ------
        ConfigError
            When the version or the prompt is missing, the prompt file cannot be read, or a
            number does not parse.
        """
        env = os.environ if environ is None else environ
        # The operator sets PROMPTLOOP_VERSION on a challenger and also rewrites AGENT_VERSION
        # when it equals the stable version; the explicit one wins if they ever disagree.
        version = env.get("PROMPTLOOP_VERSION") or env.get("AGENT_VERSION") or ""
        if not version.strip():
            raise ConfigError("set AGENT_VERSION (or PROMPTLOOP_VERSION): the version to register")
        prompt_file = env.get("SYSTEM_PROMPT_FILE", "")
        if prompt_file:
            try:
                prompt = Path(prompt_file).read_text(encoding="utf-8")
            except OSError as error:
                raise ConfigError(f"SYSTEM_PROMPT_FILE={prompt_file}: {error.strerror}") from None
            source = f"file {prompt_file}"
        else:
            prompt = env.get("SYSTEM_PROMPT", "")
            source = "env SYSTEM_PROMPT"
        if not prompt.strip():
            raise ConfigError(f"the system prompt ({source}) is empty")
        try:
            port = int(env.get("PORT", "8001"))
            limit = int(env.get("FAILURES_LIMIT", str(DEFAULT_FAILURES_LIMIT)))
            max_tokens = int(env.get("CLASSIFIER_MAX_TOKENS", "16"))
            raw_temperature = env.get("CLASSIFIER_TEMPERATURE", "")
            temperature = float(raw_temperature) if raw_temperature.strip() else None
        except ValueError as error:
            raise ConfigError(f"not a number: {error}") from None
        if limit < 1:
            raise ConfigError("FAILURES_LIMIT must be at least 1")
        return cls(
            node_id=env.get("AGENT_NODE_ID") or "classifier",
            version=version.strip(),
            system_prompt=prompt,
            prompt_source=source,
            model=env.get("OPENAI_MODEL") or "gpt-4o-mini",
            host=env.get("HOST") or "0.0.0.0",
            port=port,
            failures_key=env.get("FAILURES_KEY") or DEFAULT_FAILURES_KEY,
            failures_limit=limit,
            outcomes_prefix=env.get("OUTCOMES_PREFIX") or DEFAULT_OUTCOMES_PREFIX,
            max_tokens=max_tokens,
            temperature=temperature,
        )


_WORD = re.compile(r"[a-z]+")


def parse_label(answer: str | None) -> str:
    """The label in a model's answer, lower-cased and without punctuation.

    A model asked for one word sometimes answers a sentence ("The ticket is billing."), so the
    first word that *is* a label wins; an answer that names none is a miss.

    Parameters
    ----------
    answer
        The model's reply (``None`` when it sent no content).

    Returns
    -------
    str
        The first of :data:`LABELS` the answer contains as a word; otherwise its first word (or
        the trimmed answer, cut short) so that the failure log shows what the model said; the
        empty string for an empty answer.
    """
    text = (answer or "").strip().lower()
    words = _WORD.findall(text)
    for word in words:
        if word in LABELS:
            return word
    return (words[0] if words else text)[:_PREDICTED_CHARS]


def outcome_key(prefix: str, node_id: str, version: str) -> str:
    """The global memory key of one version's counters: ``<prefix>.<node id>.<version>``.

    It must match promptloop's ``metrics.agentfield_memory.memory_key``.
    """
    return f"{prefix}.{node_id}.{version}"


class Memory(Protocol):
    """The part of the SDK's ``app.memory.global_scope`` the recorder uses."""

    async def get(self, key: str, default: Any = None) -> Any:
        """Read a key (``default`` when absent)."""

    async def set(self, key: str, data: Any) -> None:
        """Write a key."""


@dataclass(frozen=True)
class Outcome:
    """One graded or failed request.

    Attributes
    ----------
    text
        The ticket.
    predicted
        The parsed label ("" when the model call failed).
    expected
        The correct label, when the caller gave one.
    error
        Whether the model call failed (counted as a failure, never logged as a miss: the prompt
        is not to blame for an outage).
    """

    text: str
    predicted: str
    expected: str | None
    error: bool = False

    @property
    def graded(self) -> bool:
        """Whether the request counts at all: it carried a label or it failed."""
        return self.expected is not None or self.error

    @property
    def miss(self) -> bool:
        """A wrong label (a prompt failure the improver can learn from)."""
        return not self.error and self.expected is not None and self.predicted != self.expected


class OutcomeRecorder:
    """Keeps one version's counters and the shared failure log in AgentField global memory.

    Parameters
    ----------
    node_id, version
        Whose counters these are.
    outcomes_prefix
        The counters' key prefix.
    failures_key
        The failure log's key.
    failures_limit
        How many of the newest failures the log keeps.
    """

    def __init__(
        self,
        *,
        node_id: str,
        version: str,
        outcomes_prefix: str = DEFAULT_OUTCOMES_PREFIX,
        failures_key: str = DEFAULT_FAILURES_KEY,
        failures_limit: int = DEFAULT_FAILURES_LIMIT,
    ) -> None:
        self.version = version
        self.counters_key = outcome_key(outcomes_prefix, node_id, version)
        self.failures_key = failures_key
        self.failures_limit = failures_limit
        # One lock per process: see the module docstring for what it does not cover.
        self._lock = asyncio.Lock()

    async def record(self, memory: Memory, outcome: Outcome) -> dict[str, int] | None:
        """Count one outcome and log it when it is a miss.

        Parameters
        ----------
        memory
            The SDK's global-scope memory client.
        outcome
            What happened.

        Returns
        -------
        dict or None
            The counters after the update, or None when the request was not graded (nothing is
            written then).
        """
        if not outcome.graded:
            return None
        async with self._lock:
            stored = await memory.get(self.counters_key, default=None)
            counters = _counters(stored)
            counters["total"] += 1
            if outcome.miss or outcome.error:
                counters["failed"] += 1
            await memory.set(self.counters_key, counters)
            if outcome.miss:
                log = await memory.get(self.failures_key, default=None)
                entries = list(log) if isinstance(log, list) else []
                entries.append(
                    {
                        "text": outcome.text[:_TEXT_CHARS],
                        "predicted": outcome.predicted,
                        "expected": outcome.expected,
                        "version": self.version,
                    }
                )
                await memory.set(self.failures_key, entries[-self.failures_limit :])
            return counters


def _counters(stored: Any) -> dict[str, int]:
    """Counters from what memory held; anything unusable restarts them at zero."""
    if isinstance(stored, Mapping):
        total, failed = stored.get("total"), stored.get("failed")
        if (
            isinstance(total, int)
            and isinstance(failed, int)
            and not isinstance(total, bool)
            and not isinstance(failed, bool)
            and 0 <= failed <= total
        ):
            return {"total": total, "failed": failed}
    return {"total": 0, "failed": 0}
