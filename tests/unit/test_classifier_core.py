"""The example classifier's SDK-free logic (``examples/classifier/classifier_core.py``): its
configuration, label parsing, and the outcome recorder that keeps the counters promptloop's
``agentfieldMemory`` provider reads and the failure log the improver reads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from examples.classifier.classifier_core import (
    ClassifierConfig,
    ConfigError,
    Outcome,
    OutcomeRecorder,
    outcome_key,
    parse_label,
)
from promptloop.metrics.agentfield_memory import memory_key

__all__: list[str] = []

BASE = {"AGENT_VERSION": "2.0.0", "SYSTEM_PROMPT": "Classify the ticket. One word."}


class SlowMemory:
    """AgentField global memory as the SDK sees it, with a network round trip's worth of
    interleaving between a read and the write that follows it."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.writes = 0

    async def get(self, key: str, default: Any = None) -> Any:
        await asyncio.sleep(0)
        value = self.data.get(key, default)
        await asyncio.sleep(0)
        return value

    async def set(self, key: str, data: Any) -> None:
        await asyncio.sleep(0)
        self.data[key] = data
        self.writes += 1


def test_config_prefers_the_operator_version_and_reads_a_prompt_file(tmp_path: Path) -> None:
    """PROMPTLOOP_VERSION (set by the operator on a challenger) wins over AGENT_VERSION; a
    mounted prompt file (SYSTEM_PROMPT_FILE) wins over the env var."""
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Refunds are billing.\n", encoding="utf-8")
    config = ClassifierConfig.from_env(
        {**BASE, "PROMPTLOOP_VERSION": "2.1.0", "SYSTEM_PROMPT_FILE": str(prompt), "PORT": "9"}
    )
    assert (config.version, config.system_prompt, config.port) == (
        "2.1.0",
        "Refunds are billing.\n",
        9,
    )
    assert config.prompt_source == f"file {prompt}"
    plain = ClassifierConfig.from_env(BASE)
    assert (plain.node_id, plain.version, plain.prompt_source) == (
        "classifier",
        "2.0.0",
        "env SYSTEM_PROMPT",
    )
    assert plain.outcomes_prefix == "promptloop.outcomes"
    assert plain.failures_key == "failures"
    assert plain.model_options() == {"max_completion_tokens": 16}
    warm = ClassifierConfig.from_env({**BASE, "CLASSIFIER_TEMPERATURE": "0"})
    assert warm.model_options() == {"max_completion_tokens": 16, "temperature": 0.0}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SYSTEM_PROMPT": "x"}, "AGENT_VERSION"),
        ({"AGENT_VERSION": "2.0.0", "SYSTEM_PROMPT": "  "}, "empty"),
        ({**BASE, "SYSTEM_PROMPT_FILE": "/nonexistent/prompt"}, "SYSTEM_PROMPT_FILE"),
        ({**BASE, "PORT": "eighty"}, "not a number"),
        ({**BASE, "FAILURES_LIMIT": "0"}, "FAILURES_LIMIT"),
    ],
)
def test_config_refuses_what_cannot_run(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ClassifierConfig.from_env(env)


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("billing", "billing"),
        (" Bug.\n", "bug"),
        ("OTHER", "other"),
        ("The ticket is billing.", "billing"),
        ("refund", "refund"),
        ("", ""),
        (None, ""),
        ("???", "???"),
    ],
)
def test_parse_label(answer: str | None, label: str) -> None:
    assert parse_label(answer) == label


def test_counter_key_is_the_one_the_metrics_provider_reads() -> None:
    assert outcome_key("promptloop.outcomes", "classifier", "2.1.0") == memory_key(
        "promptloop.outcomes", "classifier", "2.1.0"
    )


async def test_concurrent_requests_lose_no_counts() -> None:
    """Memory has get and set but no increment: unserialised, concurrent read-modify-writes
    would lose counts. The recorder's per-process lock keeps them exact."""
    memory = SlowMemory()
    recorder = OutcomeRecorder(node_id="classifier", version="2.0.0")
    outcomes = [
        Outcome(
            text=f"ticket {i}", predicted="other", expected="billing" if i % 4 == 0 else "other"
        )
        for i in range(200)
    ]
    await asyncio.gather(*(recorder.record(memory, outcome) for outcome in outcomes))
    assert memory.data["promptloop.outcomes.classifier.2.0.0"] == {"total": 200, "failed": 50}
    failures = memory.data["failures"]
    assert len(failures) == 50
    assert failures[0] == {
        "text": "ticket 0",
        "predicted": "other",
        "expected": "billing",
        "version": "2.0.0",
    }


async def test_failure_log_is_bounded_and_shared_by_versions() -> None:
    memory = SlowMemory()
    memory.data["failures"] = [
        {"text": "old", "predicted": "x", "expected": "y", "version": "1.0.0"}
    ]
    recorder = OutcomeRecorder(node_id="classifier", version="2.1.0", failures_limit=3)
    for i in range(4):
        await recorder.record(memory, Outcome(text=f"t{i}", predicted="bug", expected="billing"))
    assert [entry["text"] for entry in memory.data["failures"]] == ["t1", "t2", "t3"]


async def test_errors_count_as_failures_but_are_not_misses() -> None:
    """A failed model call fails the request (the rollout must see it) but the prompt is not to
    blame, so the improver never sees it; an ungraded request writes nothing."""
    memory = SlowMemory()
    recorder = OutcomeRecorder(node_id="n", version="1.0.0")
    assert await recorder.record(memory, Outcome(text="t", predicted="bug", expected=None)) is None
    assert memory.writes == 0
    counters = await recorder.record(
        memory, Outcome(text="t", predicted="", expected=None, error=True)
    )
    assert counters == {"total": 1, "failed": 1}
    assert "failures" not in memory.data


async def test_unusable_counters_restart_at_zero() -> None:
    memory = SlowMemory()
    recorder = OutcomeRecorder(node_id="n", version="1.0.0")
    for junk in ("12", {"total": 1, "failed": 2}, {"total": True, "failed": 0}, [1, 2]):
        memory.data[recorder.counters_key] = junk
        counters = await recorder.record(memory, Outcome(text="t", predicted="bug", expected="bug"))
        assert counters == {"total": 1, "failed": 0}
