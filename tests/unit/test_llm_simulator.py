"""The deterministic LLM simulator: its OpenAI-compatible surface, its two roles, its switches,
and the property the demo rests on (the improved prompt classifies the ticket set better)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from devenv import llm as devllm
from devenv.llm_simulator import (
    RULES,
    InProcessSimulator,
    classify,
    enabled_rules,
    improve,
    run_in_thread,
)
from promptloop.improver import llm
from promptloop.improver.llm import Budget, ModelCaller, ModelSettings, PriceTable

BASE_PROMPT = "Classify the ticket as billing, bug, or other. One word."
TICKETS = Path(__file__).resolve().parents[2] / "examples" / "tickets" / "tickets.jsonl"


@pytest.fixture(scope="module")
def sim() -> Iterator[InProcessSimulator]:
    with run_in_thread() as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def _reset(sim: InProcessSimulator) -> None:
    sim.reset()


def _client(sim: InProcessSimulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key="simulator", max_retries=0, timeout=5)


def _tickets() -> list[dict[str, str]]:
    return [json.loads(line) for line in TICKETS.read_text(encoding="utf-8").splitlines()]


# --- the classifier's rules (pure) -------------------------------------------------------------


def test_base_prompt_enables_only_the_basic_rules() -> None:
    assert [rule.name for rule in enabled_rules(BASE_PROMPT)] == ["billing-basics", "bug-basics"]


def test_rules_need_trigger_and_label_in_one_sentence() -> None:
    # "refund" without "billing" in the same sentence does not enable the refund rule.
    assert "refunds" not in {r.name for r in enabled_rules("Refunds matter. Answer billing.")}
    assert "refunds" in {r.name for r in enabled_rules("Treat refunds as billing.")}
    # A stem names words beginning with it, not words containing it.
    assert "not-loading" not in {r.name for r in enabled_rules("Downloads are bug reports.")}


@pytest.mark.parametrize(
    ("text", "base", "improved"),
    [
        ("I was charged twice this month", "billing", "billing"),
        ("The app crashes on startup", "bug", "bug"),
        ("I'd like a refund please", "other", "billing"),
        ("How do I cancel my subscription?", "other", "billing"),
        ("The dashboard doesn't load in Firefox", "other", "bug"),
        ("The editor freezes when I paste", "other", "bug"),
        ("How do I add a teammate?", "other", "other"),
        # Ties go to billing: money trouble caused by a crash is a billing ticket.
        ("The app crashed and I was charged twice", "billing", "billing"),
    ],
)
def test_classify(text: str, base: str, improved: str) -> None:
    every_rule = BASE_PROMPT + "\n" + " ".join(rule.guidance for rule in RULES)
    assert classify(BASE_PROMPT, text) == base
    assert classify(every_rule, text) == improved


def test_every_guidance_sentence_enables_its_own_rule() -> None:
    for rule in RULES:
        assert rule in enabled_rules(rule.guidance), rule.name


def test_improver_role_names_the_missed_patterns() -> None:
    request = llm.render_request(
        BASE_PROMPT,
        [
            {"input": "Where is my refund?", "predicted": "other", "expected": "billing"},
            {"input": "Please refund order 7", "predicted": "other", "expected": "billing"},
            {"input": "Page won't load", "predicted": "other", "expected": "bug"},
            {"input": "Is there a bug bounty?", "predicted": "bug", "expected": "other"},
        ],
    )
    answer = improve(request.text)
    assert answer["revised_system_prompt"].startswith(BASE_PROMPT)
    assert "refund" in answer["revised_system_prompt"]
    assert "don't load" in answer["revised_system_prompt"]
    assert answer["rationale"].startswith("misses were refund questions labeled other not billing")
    assert improve(request.text) == answer  # deterministic


# --- the ticket set and the loop's effect -------------------------------------------------------


def test_ticket_set_shape() -> None:
    tickets = _tickets()
    assert len(tickets) >= 300
    assert len({t["id"] for t in tickets}) == len(tickets)
    assert len({t["text"] for t in tickets}) == len(tickets)
    counts = {label: sum(t["label"] == label for t in tickets) for label in ("billing", "bug")}
    counts["other"] = len(tickets) - sum(counts.values())
    assert all(90 <= n <= 130 for n in counts.values()), counts
    missed = sum(classify(BASE_PROMPT, t["text"]) != t["label"] for t in tickets)
    assert 0.20 <= missed / len(tickets) <= 0.30


def _accuracy(prompt: str, tickets: list[dict[str, str]]) -> float:
    return sum(classify(prompt, t["text"]) == t["label"] for t in tickets) / len(tickets)


def _improved_prompt(sim: InProcessSimulator, tickets: list[dict[str, str]]) -> str:
    failures = [
        {"input": t["text"], "predicted": classify(BASE_PROMPT, t["text"]), "expected": t["label"]}
        for t in tickets
        if classify(BASE_PROMPT, t["text"]) != t["label"]
    ][-100:]
    settings = ModelSettings(
        model="promptloop-simulator", base_url=sim.base_url, timeout_s=5, backoff_s=0
    )
    caller = ModelCaller(llm.make_client(settings), settings, PriceTable.load(), Budget(Decimal(1)))
    return llm.propose(caller, BASE_PROMPT, failures).proposal.revised_system_prompt


def test_improved_prompt_beats_the_base_prompt(sim: InProcessSimulator) -> None:
    tickets = _tickets()
    improved = _improved_prompt(sim, tickets)
    base_accuracy, improved_accuracy = _accuracy(BASE_PROMPT, tickets), _accuracy(improved, tickets)
    assert improved_accuracy - base_accuracy >= 0.15, (base_accuracy, improved_accuracy)
    # No ticket the base prompt gets right is lost.
    assert all(
        classify(improved, t["text"]) == t["label"]
        for t in tickets
        if classify(BASE_PROMPT, t["text"]) == t["label"]
    )


def test_improvement_holds_on_tickets_it_did_not_learn_from(sim: InProcessSimulator) -> None:
    tickets = _tickets()
    train, held_out = tickets[0::2], tickets[1::2]
    improved = _improved_prompt(sim, train)
    assert _accuracy(improved, held_out) - _accuracy(BASE_PROMPT, held_out) >= 0.15


# --- the HTTP surface ---------------------------------------------------------------------------


def test_health_says_simulator(sim: InProcessSimulator) -> None:
    body = httpx.get(f"{sim.url}/health").json()
    assert body["simulator"] == "deterministic"
    assert "not a language model" in body["description"]


def test_models(sim: InProcessSimulator) -> None:
    assert [m.id for m in _client(sim).models.list()] == ["promptloop-simulator"]


def test_plain_text_classification_with_usage(sim: InProcessSimulator) -> None:
    completion = _client(sim).chat.completions.create(
        model="promptloop-simulator",
        messages=[
            {"role": "system", "content": BASE_PROMPT},
            {"role": "user", "content": "My invoice is wrong"},
        ],
    )
    assert completion.choices[0].message.content == "billing"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens == 2  # "billing" = 7 characters / 4, rounded up


def test_unprefixed_route(sim: InProcessSimulator) -> None:
    response = httpx.post(
        f"{sim.url}/chat/completions",
        json={"model": "x", "messages": [{"role": "user", "content": "app crash"}]},
    )
    assert response.json()["choices"][0]["message"]["content"] == "bug"


def test_structured_output_through_the_sdk(sim: InProcessSimulator) -> None:
    request = llm.render_request(
        BASE_PROMPT, [{"input": "refund please", "predicted": "other", "expected": "billing"}]
    )
    completion = _client(sim).chat.completions.parse(
        model="promptloop-simulator", messages=request.messages, response_format=llm.Proposal
    )
    parsed = completion.choices[0].message.parsed
    assert parsed is not None
    assert "refund" in parsed.revised_system_prompt
    assert sim.stats()["by_format"] == {"json_schema": 1}
    assert sim.stats()["by_role"] == {"improver": 1}


def test_json_mode_classifier(sim: InProcessSimulator) -> None:
    completion = _client(sim).chat.completions.create(
        model="promptloop-simulator",
        messages=[
            {"role": "system", "content": BASE_PROMPT},
            {"role": "user", "content": "it crashed"},
        ],
        response_format={"type": "json_object"},
    )
    assert json.loads(completion.choices[0].message.content or "") == {"label": "bug"}


def test_streaming(sim: InProcessSimulator) -> None:
    stream = _client(sim).chat.completions.create(
        model="promptloop-simulator",
        messages=[
            {"role": "system", "content": BASE_PROMPT},
            {"role": "user", "content": "my invoice"},
        ],
        stream=True,
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == "billing"


def test_length_cap_truncates(sim: InProcessSimulator) -> None:
    request = llm.render_request(
        BASE_PROMPT, [{"input": "refund please", "predicted": "other", "expected": "billing"}]
    )
    completion = _client(sim).chat.completions.create(
        model="promptloop-simulator", messages=request.messages, max_completion_tokens=3
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


# --- switches -----------------------------------------------------------------------------------


def test_control_endpoint_switches_and_counts(sim: InProcessSimulator) -> None:
    state = httpx.post(f"{sim.url}/_control", json={"mode": "error500", "count": 1}).json()
    assert state["mode"] == "error500"
    client = _client(sim)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "crash"}
    ]
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=messages)
    # The count ran out: back to normal.
    assert client.chat.completions.create(model="m", messages=messages).choices[0].message.content
    stats = httpx.get(f"{sim.url}/_control").json()
    assert stats["chat_requests"] == 2
    assert stats["mode"] == "normal"
    assert httpx.post(f"{sim.url}/_control", json={"mode": "bogus"}).status_code == 400


def test_no_structured_rejects_only_json_schema(sim: InProcessSimulator) -> None:
    sim.control("no_structured")
    request = llm.render_request(
        BASE_PROMPT, [{"input": "refund", "predicted": "other", "expected": "billing"}]
    )
    client = _client(sim)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.parse(
            model="m", messages=request.messages, response_format=llm.Proposal
        )
    answer = client.chat.completions.create(
        model="m", messages=request.messages, response_format={"type": "json_object"}
    )
    assert "revised_system_prompt" in json.loads(answer.choices[0].message.content or "")


@pytest.mark.parametrize(
    ("mode", "check"),
    [
        ("malformed", lambda text: not text.lstrip().startswith("{")),
        ("missing_fields", lambda text: "revised_system_prompt" not in json.loads(text)),
        ("empty_prompt", lambda text: json.loads(text)["revised_system_prompt"] == ""),
        ("unchanged", lambda text: json.loads(text)["revised_system_prompt"] == BASE_PROMPT),
    ],
)
def test_malformed_modes_affect_the_improver_only(
    sim: InProcessSimulator, mode: str, check: object
) -> None:
    sim.control(mode)
    client = _client(sim)
    request = llm.render_request(
        BASE_PROMPT, [{"input": "refund", "predicted": "other", "expected": "billing"}]
    )
    text = client.chat.completions.create(model="m", messages=request.messages)
    assert callable(check) and check(text.choices[0].message.content or "")
    classified = client.chat.completions.create(
        model="m",
        messages=[{"role": "system", "content": BASE_PROMPT}, {"role": "user", "content": "crash"}],
    )
    assert classified.choices[0].message.content == "bug"


def test_delay_mode_times_the_client_out_and_is_released(sim: InProcessSimulator) -> None:
    sim.control("delay", delay_s=30)
    client = openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0, timeout=0.2)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    sim.control("normal")  # releases the parked request at once
    assert sim.stats()["chat_requests"] == 1


# --- the background service ---------------------------------------------------------------------


def test_up_and_down_as_a_process(tmp_path: Path) -> None:
    handle = devllm.start_llm_simulator(tmp_path)
    try:
        env = dict(line.split("=", 1) for line in (tmp_path / "llm.env").read_text().splitlines())
        assert env == {
            "OPENAI_BASE_URL": handle.base_url,
            "OPENAI_API_KEY": "simulator",
            "OPENAI_MODEL": "promptloop-simulator",
        }
        assert int((tmp_path / "llm.pid").read_text()) == handle.pid
        assert httpx.get(f"{handle.url}/health").json()["simulator"] == "deterministic"
        # A second `up` finds it running and reuses it.
        assert devllm.start_llm_simulator(tmp_path).pid == handle.pid
    finally:
        assert devllm.stop_llm_simulator(handle)
    assert not (tmp_path / "llm.pid").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{handle.url}/health")
    assert not devllm.stop_llm_simulator(state_dir=tmp_path)
