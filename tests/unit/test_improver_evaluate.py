"""``--evaluate``: fixed and regressed counts, the regression threshold, and the replay itself."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from devenv.llm_simulator import InProcessSimulator, run_in_thread
from promptloop.improver import evaluate as ev
from promptloop.improver import llm
from promptloop.improver.failures import Case

BASE = "Classify the ticket as billing, bug, or other. One word."
CANDIDATE = (
    BASE + "\nTreat refund requests as billing. Treat subscriptions and newsletters as billing."
)


@pytest.fixture(scope="module")
def sim() -> Iterator[InProcessSimulator]:
    with run_in_thread() as simulator:
        yield simulator


def _caller(sim: InProcessSimulator) -> llm.ModelCaller:
    settings = llm.ModelSettings(
        model="promptloop-simulator", base_url=sim.base_url, timeout_s=5, backoff_s=0
    )
    return llm.ModelCaller(
        llm.make_client(settings), settings, llm.PriceTable.load(), llm.Budget(Decimal(1))
    )


@pytest.mark.parametrize(
    ("answer", "word"),
    [("Billing.", "billing"), ("  bug\n", "bug"), ("**other**", "other"), ("", ""), ("42", "")],
)
def test_normalize_answer(answer: str, word: str) -> None:
    assert ev.normalize_answer(answer) == word


def test_score_counts_fixed_and_regressed() -> None:
    cases = [
        ev.EvalCase("a", "billing", "failure"),
        ev.EvalCase("b", "bug", "failure"),
        ev.EvalCase("c", "other", "passing"),
        ev.EvalCase("d", "bug", "passing"),
    ]
    current = ["other", "other", "other", "bug"]
    candidate = ["Billing", "other", "billing", "bug"]
    result = ev.score(cases, current, candidate)
    assert (result.fixed, result.regressed, result.evaluated) == (1, 1, 4)
    assert (result.current_correct, result.candidate_correct) == (2, 2)
    assert (result.failures, result.passing) == (2, 2)
    with pytest.raises(ValueError):
        ev.score(cases, current, candidate[:-1])


@pytest.mark.parametrize(
    ("text", "allowed_of_200"),
    [("0", 0), ("3", 3), ("0.02", 4), ("2%", 4), ("0", 0)],
)
def test_threshold_parse(text: str, allowed_of_200: int) -> None:
    assert ev.Threshold.parse(text).allowed(200) == allowed_of_200


@pytest.mark.parametrize("text", ["-1", "1.5", "abc", "150%"])
def test_threshold_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        ev.Threshold.parse(text)


def test_refusal_reasons() -> None:
    result = ev.Evaluation(10, 5, 5, 5, 7, fixed=3, regressed=1)
    assert ev.Threshold.parse("1") and result.refusal(ev.Threshold.parse("1")) is None
    message = result.refusal(ev.Threshold.parse("0"))
    assert message is not None and "breaks 1 case(s)" in message
    nothing_fixed = ev.Evaluation(10, 5, 5, 5, 5, fixed=0, regressed=0)
    message = nothing_fixed.refusal(ev.Threshold.parse("0"), min_fixed=1)
    assert message is not None and "fixes 0" in message


def test_select_cases_samples_passing_deterministically() -> None:
    failures = [Case(f"f{i}", "bug") for i in range(3)]
    passing = [Case(f"p{i}", "other", passed=True) for i in range(50)]
    first = ev.select_cases(failures, passing, sample=10, seed=7)
    assert first == ev.select_cases(failures, passing, sample=10, seed=7)
    assert [c.kind for c in first] == ["failure"] * 3 + ["passing"] * 10
    assert len(ev.select_cases(failures, passing[:4], sample=10)) == 7


def test_replay_through_the_simulator_counts_fixes_and_regressions(
    sim: InProcessSimulator,
) -> None:
    sim.reset()
    cases = [
        ev.EvalCase("Where is my refund?", "billing", "failure"),
        ev.EvalCase("I'd like a refund for May", "billing", "failure"),
        ev.EvalCase("The page won't load", "bug", "failure"),  # the candidate does not fix it
        ev.EvalCase("My invoice is wrong", "billing", "passing"),
        # Naming "subscriptions" as billing catches this newsletter question: a regression.
        ev.EvalCase("How do I subscribe to your newsletter?", "other", "passing"),
    ]
    result = ev.evaluate(
        _caller(sim), current_prompt=BASE, candidate_prompt=CANDIDATE, cases=cases, concurrency=3
    )
    assert (result.fixed, result.regressed, result.evaluated) == (2, 1, 5)
    assert sim.stats()["by_role"] == {"classifier": 10}
    refusal = result.refusal(ev.Threshold.parse("0"))
    assert refusal is not None and "breaks 1" in refusal
    assert result.refusal(ev.Threshold.parse("1")) is None


def test_estimate_cost_covers_every_case_and_prompt(sim: InProcessSimulator) -> None:
    caller = _caller(sim)
    caller.prices = llm.PriceTable(
        {"promptloop-simulator": llm.ModelPrice(Decimal(1_000_000), Decimal(0))}
    )
    cases = [ev.EvalCase("abcd", "bug", "failure")] * 3
    one = caller.worst_case(
        [{"role": "system", "content": BASE}, {"role": "user", "content": "abcd"}], 16
    )
    assert ev.estimate_cost(caller, [BASE, BASE], cases) == one * 6


def test_replay_errors_surface(sim: InProcessSimulator) -> None:
    sim.reset()
    sim.control("error500")
    caller = _caller(sim)
    with pytest.raises(llm.ModelError):
        ev.replay(caller, BASE, [ev.EvalCase("x", "bug", "failure")] * 4, concurrency=2)
    sim.reset()
