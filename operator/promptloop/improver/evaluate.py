"""``--evaluate``: replay recorded cases through the model with the candidate and current prompts.

The agent is treated as a **classifier**: each case is sent with ``system = prompt`` and ``user =
the case's input``, and the answer's first word (lower-cased, punctuation dropped) is compared
with the expected label. The cases are the failures sent to the improver plus a seeded sample of
the stable version's **passing cases** (records marked ``"passed": true`` or ``"correct": true``,
or whose ``predicted`` equals ``expected``; see :mod:`promptloop.improver.failures`). Both prompts
are replayed, so nothing relies on the recorded answers:

``fixed``
    Cases the current prompt gets wrong on replay and the candidate gets right.
``regressed``
    Cases the current prompt gets right on replay and the candidate gets wrong.
``evaluated``
    Cases replayed (each with both prompts).

The candidate is refused (exit code 6) when it regresses more cases than ``--max-regressions``
allows, or fixes fewer than ``--min-fixed``. ``--max-regressions`` is a count (``0``, the default:
a deterministic model must not break a single case the current prompt gets right) or a fraction
of the cases the current prompt gets right (``0.02`` or ``2%``), which suits real models sampled at
a non-zero temperature, whose answers vary between identical requests.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from openai.types.chat import ChatCompletionMessageParam

from promptloop.improver.failures import Case
from promptloop.improver.llm import ModelCaller, ModelError

__all__ = [
    "ANSWER_MAX_TOKENS",
    "DEFAULT_MAX_REGRESSIONS",
    "DEFAULT_MIN_FIXED",
    "DEFAULT_PASSING_SAMPLE",
    "EvalCase",
    "Evaluation",
    "Threshold",
    "estimate_cost",
    "evaluate",
    "normalize_answer",
    "replay",
    "score",
    "select_cases",
]

DEFAULT_PASSING_SAMPLE = 100
DEFAULT_MAX_REGRESSIONS = "0"
DEFAULT_MIN_FIXED = 1
# A one-word label needs a few tokens; the cap bounds the cost of a chatty model.
ANSWER_MAX_TOKENS = 16


@dataclass(frozen=True)
class EvalCase:
    """One replayed case."""

    text: str
    expected: str
    kind: Literal["failure", "passing"]


@dataclass(frozen=True)
class Threshold:
    """How many regressions are tolerated: a count, or a fraction of the current prompt's passes.

    Attributes
    ----------
    count
        At most this many regressed cases (when set).
    fraction
        At most ``floor(fraction * cases the current prompt gets right)`` (when set).
    """

    count: int | None = 0
    fraction: float | None = None

    @classmethod
    def parse(cls, text: str) -> Threshold:
        """Parse ``N`` (a count), ``0.05`` or ``5%`` (a fraction).

        Raises
        ------
        ValueError
            When the text is neither.
        """
        raw = text.strip()
        try:
            if raw.endswith("%"):
                fraction = float(raw[:-1]) / 100
            elif re.fullmatch(r"\d+", raw):
                return cls(count=int(raw), fraction=None)
            else:
                fraction = float(raw)
        except ValueError:
            raise ValueError(
                f"{text!r} is neither a count (3) nor a fraction (0.02 or 2%)"
            ) from None
        if not 0 <= fraction < 1:
            raise ValueError(f"{text!r}: a fraction must be at least 0 and below 1")
        return cls(count=None, fraction=fraction)

    def allowed(self, baseline_correct: int) -> int:
        """Regressions tolerated when the current prompt answers ``baseline_correct`` right."""
        if self.count is not None:
            return self.count
        return math.floor((self.fraction or 0.0) * baseline_correct)

    def describe(self) -> str:
        """The threshold as a person reads it."""
        if self.count is not None:
            return f"{self.count} case{'s' if self.count != 1 else ''}"
        return f"{(self.fraction or 0.0):.1%} of the cases the current prompt gets right"


@dataclass(frozen=True)
class Evaluation:
    """Counts of a replay.

    Attributes
    ----------
    evaluated
        Cases replayed with both prompts.
    failures, passing
        How many of them were recorded failures and passing cases.
    current_correct, candidate_correct
        Cases each prompt answered right.
    fixed, regressed
        See the module docstring.
    """

    evaluated: int
    failures: int
    passing: int
    current_correct: int
    candidate_correct: int
    fixed: int
    regressed: int

    def summary(self) -> str:
        """One line with every count."""
        return (
            f"replayed {self.evaluated} cases ({self.failures} failures, {self.passing} passing): "
            f"current prompt right on {self.current_correct}, candidate on "
            f"{self.candidate_correct}; fixed {self.fixed}, regressed {self.regressed}"
        )

    def refusal(self, threshold: Threshold, min_fixed: int = DEFAULT_MIN_FIXED) -> str | None:
        """Why the candidate must be refused, or ``None`` when it passes.

        Parameters
        ----------
        threshold
            Regressions tolerated.
        min_fixed
            Fixed cases required.
        """
        allowed = threshold.allowed(self.current_correct)
        if self.regressed > allowed:
            return (
                f"the candidate breaks {self.regressed} case(s) the current prompt gets right; "
                f"at most {allowed} allowed (--max-regressions {threshold.describe()})"
            )
        if self.fixed < min_fixed:
            return (
                f"the candidate fixes {self.fixed} of the {self.evaluated} replayed cases; "
                f"at least {min_fixed} required (--min-fixed)"
            )
        return None


def normalize_answer(text: str) -> str:
    """The first word of an answer, lower-cased (``"Billing."`` → ``"billing"``)."""
    match = re.search(r"[a-z][a-z_-]*", text.lower())
    return match.group(0) if match else ""


def select_cases(
    failures: Sequence[Case],
    passing: Sequence[Case],
    *,
    sample: int = DEFAULT_PASSING_SAMPLE,
    seed: int = 0,
) -> list[EvalCase]:
    """The cases to replay: every failure, plus a seeded sample of passing cases.

    Parameters
    ----------
    failures
        The failures that were sent to the improver.
    passing
        The stable version's passing cases.
    sample
        At most this many passing cases.
    seed
        Seed of the sample (the same inputs give the same cases).

    Returns
    -------
    list of EvalCase
        Failures first, then passing cases.
    """
    chosen = list(passing)
    if len(chosen) > sample:
        chosen = random.Random(seed).sample(chosen, sample)
    return [EvalCase(c.input, c.expected, "failure") for c in failures] + [
        EvalCase(c.input, c.expected, "passing") for c in chosen
    ]


def score(
    cases: Sequence[EvalCase],
    current_answers: Sequence[str],
    candidate_answers: Sequence[str],
) -> Evaluation:
    """Count fixed and regressed cases from the two prompts' answers (pure).

    Parameters
    ----------
    cases
        The replayed cases.
    current_answers, candidate_answers
        Each prompt's raw answer per case, in the same order.

    Returns
    -------
    Evaluation
        The counts.
    """
    if not len(cases) == len(current_answers) == len(candidate_answers):
        raise ValueError("one answer per case and prompt is needed")
    current_correct = candidate_correct = fixed = regressed = 0
    for case, current, candidate in zip(cases, current_answers, candidate_answers, strict=True):
        expected = normalize_answer(case.expected)
        was_right = normalize_answer(current) == expected
        is_right = normalize_answer(candidate) == expected
        current_correct += was_right
        candidate_correct += is_right
        fixed += is_right and not was_right
        regressed += was_right and not is_right
    return Evaluation(
        evaluated=len(cases),
        failures=sum(c.kind == "failure" for c in cases),
        passing=sum(c.kind == "passing" for c in cases),
        current_correct=current_correct,
        candidate_correct=candidate_correct,
        fixed=fixed,
        regressed=regressed,
    )


def _messages(prompt: str, text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "system", "content": prompt}, {"role": "user", "content": text}]


def estimate_cost(
    caller: ModelCaller,
    prompts: Sequence[str],
    cases: Sequence[EvalCase],
    *,
    max_tokens: int = ANSWER_MAX_TOKENS,
) -> Decimal:
    """Worst-case cost of replaying every case with every prompt.

    The candidate prompt is not known before the improver answers; callers pass a stand-in of
    the largest size it may have.
    """
    return sum(
        (
            caller.worst_case(_messages(prompt, case.text), max_tokens)
            for prompt in prompts
            for case in cases
        ),
        Decimal(0),
    )


def replay(
    caller: ModelCaller,
    prompt: str,
    cases: Sequence[EvalCase],
    *,
    concurrency: int = 4,
    max_tokens: int = ANSWER_MAX_TOKENS,
) -> list[str]:
    """Classify every case with one prompt; the answers in case order.

    Raises
    ------
    ModelError, BudgetExceeded
        From the first request that fails after its retries; pending requests are cancelled.
    """

    def one(case: EvalCase) -> str:
        answer = caller.chat(_messages(prompt, case.text), max_tokens)
        if answer.refusal:
            raise ModelError(f"the model refused to classify a case: {answer.refusal[:200]}")
        return answer.content

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(one, case) for case in cases]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def evaluate(
    caller: ModelCaller,
    *,
    current_prompt: str,
    candidate_prompt: str,
    cases: Sequence[EvalCase],
    concurrency: int = 4,
    max_tokens: int = ANSWER_MAX_TOKENS,
) -> Evaluation:
    """Replay the cases with both prompts and count fixed and regressed cases.

    Parameters
    ----------
    caller
        Sends the requests and keeps the budget.
    current_prompt, candidate_prompt
        The stable prompt and the proposal.
    cases
        From :func:`select_cases`.
    concurrency
        Requests in flight at once.
    max_tokens
        Completion cap per answer.

    Returns
    -------
    Evaluation
        The counts.
    """
    current = replay(caller, current_prompt, cases, concurrency=concurrency, max_tokens=max_tokens)
    candidate = replay(
        caller, candidate_prompt, cases, concurrency=concurrency, max_tokens=max_tokens
    )
    return score(cases, current, candidate)
