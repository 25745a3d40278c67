"""Simulate canaries to measure the decision test against a naive comparator, in one run.

Run from the repository root: ``.venv/bin/python bench/decision.py`` (``make bench-decision``).
Writes ``bench/results/decision.json``. ``BENCH_ROLLOUTS`` and ``BENCH_WORKERS`` override the
number of canaries per scenario and method (default 10,000) and of worker processes (default:
the CPU count); the seed is fixed, so a given configuration always prints the same table.

The model
---------
Each tick (one ``spec.canary.interval``) the agent serves ``Poisson(requests_per_tick)``
requests; each goes to the challenger with probability ``weight / 100`` (so the two versions'
counts are independent Poisson draws, by thinning) and fails with its version's true rate
(binomial draws by exact inversion of cached CDF tables). Counts accumulate from the start of
the canary, as the operator's window does. After each tick the method under test returns a
verdict; the weight it sets applies from the next tick on. A run ends at the first terminal
verdict (``promote`` or ``rollback``) or at the horizon. The human gate is simulated as a
person who approves the moment the rollout asks (``await-approval``): the approval applies from
the next tick, so the gate costs one tick (it is not what is measured). The policy is the API's
defaults: initial weight 5 %, steps of 10, ceiling 50, floor 0, ``min_samples`` 50,
``alpha`` 0.05, margin 0. The ladder is 5, 15, 25, 35, 45, (ask), 55, ..., 95, 100, promote:
a promotion takes twelve "better" verdicts (holds in between allowed).

The methods
-----------
``sequential``
    ``promptloop.rollout.decision.decide``, called on every tick exactly as the operator calls
    it. It steps on evidence "better", rolls back on evidence "worse", holds otherwise.
``naive``
    A Flagger-like comparator on the same cumulative counts, the same ladder and the same
    approval: once both versions have ``min_samples``, each tick is a check. The canary's
    observed rate below the stable's passes and steps the weight (at 100 % it promotes); above
    the stable's by more than 10 % (relative) fails the check, and 5 failed checks (Flagger's
    ``analysis.threshold``) roll back; anything else holds.

The metrics (per scenario and method, over ``ROLLOUTS`` simulated canaries)
-------------------------------------------------------------------------
``false_promotion_rate``
    Share of canaries that promoted although the challenger is not better (equal or worse
    scenarios; ``null`` when it is better).
``wrong_rollback_rate``
    Share that rolled back although the challenger is not worse (``null`` when it is worse).
``power``
    Share that promoted when the challenger is better (``null`` otherwise).
``median_samples``
    Median requests served by both versions together when the run reached its terminal verdict,
    over the runs that reached one (``null`` if none did).
``false_step_rate``
    Share of canaries that stepped up (or asked for approval) at least once although the
    challenger is not better: the error rate of a single "better" claim, which the sequential
    test bounds by ``alpha / 2``. A promotion needs twelve such claims on the ladder, so the
    false-promotion rate is lower still.

Also recorded: ``promotion_rate``, ``rollback_rate``, ``undecided_rate`` (reached the horizon),
``rollouts``, ``horizon_ticks``, ``requests_per_tick`` and the true rates.
"""

from __future__ import annotations

import bisect
import json
import math
import multiprocessing
import os
import random
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from promptloop.rollout.decision import Counts, Policy, Verdict, decide  # noqa: E402

SEED = 20260505
ROLLOUTS = int(os.environ.get("BENCH_ROLLOUTS", "10000"))
CHUNKS = 8  # per scenario and method, for the worker pool; results do not depend on it
INITIAL_WEIGHT = 5
POLICY = Policy(alpha=0.05, min_samples=50, margin=0.0, max_step=10, floor=0, ceiling=50)
NAIVE_TOLERANCE = 0.10  # a check fails when canary rate > stable rate * (1 + this)
NAIVE_FAILED_CHECKS = 5  # Flagger's analysis.threshold
RESULTS = ROOT / "bench" / "results" / "decision.json"


@dataclass(frozen=True)
class Scenario:
    """True failure rates and traffic of one simulated agent."""

    name: str
    stable_rate: float
    canary_rate: float
    requests_per_tick: float
    horizon_ticks: int

    @property
    def truth(self) -> str:
        if self.canary_rate < self.stable_rate:
            return "better"
        if self.canary_rate > self.stable_rate:
            return "worse"
        return "equal"


# A busy agent: ~1,500 requests per 90 s interval (~17/s), an hour's horizon (60k requests).
# A quiet one: ~120 requests per 3 min interval (0.67/s), two hours (4.8k requests).
SCENARIOS = [
    Scenario("equal 1%", 0.01, 0.01, 1500, 40),
    Scenario("equal 10%", 0.10, 0.10, 1500, 40),
    Scenario("equal 30%", 0.30, 0.30, 1500, 40),
    Scenario("better 30% (10->7%)", 0.10, 0.07, 1500, 40),
    Scenario("better 50% (10->5%)", 0.10, 0.05, 1500, 40),
    Scenario("worse 30% (10->13%)", 0.10, 0.13, 1500, 40),
    Scenario("low traffic equal 10%", 0.10, 0.10, 120, 40),
    Scenario("low traffic better 50%", 0.10, 0.05, 120, 40),
]


# CDF tables by (kind, p, n), shared by every task a worker process runs.
_TABLES: dict[tuple[str, float, int], tuple[int, list[float]]] = {}


def _build_table(key: tuple[str, float, int]) -> tuple[int, list[float]]:
    """``(offset, cdf)`` over the values within 12 standard deviations (+12) of the mean.

    The mass left out is below 1e-30. The probabilities come from the pmf recurrence relative
    to the lowest value kept, normalised at the end (rescaled on the way so nothing overflows).
    """
    kind, p, n = key
    if kind == "poisson":
        mean, sd, top = p, math.sqrt(p), None
    else:
        mean, sd, top = n * p, math.sqrt(n * p * (1.0 - p)), n
    lo = max(0, int(mean - 12.0 * sd - 12.0))
    hi = int(mean + 12.0 * sd + 12.0)
    if top is not None:
        hi = min(hi, top)
    # Work relative to the first term, then normalise: only ratios matter.
    term, total = 1.0, 0.0
    weights = []
    odds = p / (1.0 - p) if kind != "poisson" else 0.0
    for k in range(lo, hi + 1):
        weights.append(term)
        total += term
        if kind == "poisson":
            term *= p / (k + 1)
        else:
            term *= (n - k) / (k + 1) * odds
        if total > 1e250:  # rescale to stay finite; the first term's size is irrelevant
            weights = [w / 1e250 for w in weights]
            term /= 1e250
            total /= 1e250
    cdf, running = [], 0.0
    for w in weights:
        running += w / total
        cdf.append(running)
    cdf[-1] = 1.0
    return lo, cdf


class Sampler:
    """Exact (to 1e-30) Poisson and binomial draws by inversion of cached CDF tables."""

    def __init__(self, rng: random.Random) -> None:
        self._random = rng.random

    def poisson(self, mean: float) -> int:
        if mean <= 0.0:
            return 0
        key = ("poisson", mean, 0)
        entry = _TABLES.get(key)
        if entry is None:
            entry = _TABLES[key] = _build_table(key)
        return entry[0] + bisect.bisect_right(entry[1], self._random())

    def binomial(self, n: int, p: float) -> int:
        if n <= 0 or p <= 0.0:
            return 0
        if p >= 1.0:
            return n
        key = ("binomial", p, n)
        entry = _TABLES.get(key)
        if entry is None:
            entry = _TABLES[key] = _build_table(key)
        lo, cdf = entry
        return lo + min(bisect.bisect_right(cdf, self._random()), len(cdf) - 1)


class Run:
    """One canary's mutable state besides the counts."""

    __slots__ = ("approved", "failed_checks", "weight")

    def __init__(self) -> None:
        self.weight = INITIAL_WEIGHT
        self.approved = False
        self.failed_checks = 0


def _sequential(stable: Counts, canary: Counts, run: Run) -> str:
    d = decide(
        stable=stable, canary=canary, policy=POLICY, weight=run.weight, approved=run.approved
    )
    run.weight = d.next_weight
    if d.verdict is Verdict.AWAIT_APPROVAL:
        run.approved = True  # a person approves as soon as asked; it applies from the next tick
    return d.verdict.value


def _ladder(run: Run) -> str:
    """The weight logic of ``decide`` on evidence "better", for the naive comparator."""
    weight = run.weight
    candidate = min(weight + POLICY.max_step, 100)
    if candidate >= POLICY.ceiling and weight < POLICY.ceiling and not run.approved:
        run.approved = True
        return Verdict.AWAIT_APPROVAL.value
    if run.approved and weight < POLICY.ceiling:
        run.weight = min(max(candidate, POLICY.ceiling), 100)
        return Verdict.STEP.value
    if weight == 100:
        return Verdict.PROMOTE.value
    run.weight = candidate
    return Verdict.STEP.value


def _naive(stable: Counts, canary: Counts, run: Run) -> str:
    if stable.samples < POLICY.min_samples or canary.samples < POLICY.min_samples:
        return Verdict.HOLD.value
    # Compare rates without dividing: f_c / n_c < f_s / n_s.
    left = canary.failures * stable.samples
    right = stable.failures * canary.samples
    if left < right:
        return _ladder(run)
    if left > right * (1.0 + NAIVE_TOLERANCE):
        run.failed_checks += 1
        if run.failed_checks >= NAIVE_FAILED_CHECKS:
            run.weight = min(POLICY.floor, run.weight)
            return Verdict.ROLLBACK.value
    return Verdict.HOLD.value


METHODS = {"sequential": _sequential, "naive": _naive}


def _simulate(task: tuple[int, str, int, int]) -> tuple[int, str, list[tuple[str, int, bool]]]:
    """Run ``count`` canaries of one scenario with one method; return (outcome, samples) each."""
    scenario_index, method, chunk, count = task
    scenario = SCENARIOS[scenario_index]
    rng = random.Random(f"{SEED}/{scenario_index}/{method}/{chunk}")
    sampler = Sampler(rng)
    step = METHODS[method]
    lam = scenario.requests_per_tick
    p_s, p_c = scenario.stable_rate, scenario.canary_rate
    outcomes: list[tuple[str, int, bool]] = []
    for _ in range(count):
        run = Run()
        n_s = f_s = n_c = f_c = 0
        outcome = "undecided"
        stepped = False
        for _tick in range(scenario.horizon_ticks):
            weight = run.weight
            new_c = sampler.poisson(lam * weight / 100.0)
            new_s = sampler.poisson(lam * (100 - weight) / 100.0)
            n_c += new_c
            n_s += new_s
            f_c += sampler.binomial(new_c, p_c)
            f_s += sampler.binomial(new_s, p_s)
            verdict = step(Counts(n_s, f_s), Counts(n_c, f_c), run)
            if verdict == "promote" or verdict == "rollback":
                outcome = verdict
                break
            if verdict == "step" or verdict == "await-approval":
                stepped = True
        outcomes.append((outcome, n_s + n_c, stepped))
    return scenario_index, method, outcomes


def _summarise(
    scenario: Scenario, method: str, outcomes: list[tuple[str, int, bool]]
) -> dict[str, Any]:
    total = len(outcomes)
    promoted = sum(1 for o, _, _ in outcomes if o == "promote")
    rolled_back = sum(1 for o, _, _ in outcomes if o == "rollback")
    stepped = sum(1 for _, _, s in outcomes if s)
    decided = [n for o, n, _ in outcomes if o != "undecided"]
    truth = scenario.truth
    return {
        "scenario": scenario.name,
        "method": method,
        "false_promotion_rate": promoted / total if truth != "better" else None,
        "wrong_rollback_rate": rolled_back / total if truth != "worse" else None,
        "power": promoted / total if truth == "better" else None,
        "median_samples": statistics.median(decided) if decided else None,
        "false_step_rate": stepped / total if truth != "better" else None,
        "promotion_rate": promoted / total,
        "rollback_rate": rolled_back / total,
        "undecided_rate": (total - promoted - rolled_back) / total,
        "rollouts": total,
        "horizon_ticks": scenario.horizon_ticks,
        "requests_per_tick": scenario.requests_per_tick,
        "stable_rate": scenario.stable_rate,
        "canary_rate": scenario.canary_rate,
    }


def _fmt(value: float | None, pct: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100.0 * value:.2f}%" if pct else f"{value:,.0f}"


def main() -> int:
    started = time.perf_counter()
    sizes = [ROLLOUTS // CHUNKS + (1 if i < ROLLOUTS % CHUNKS else 0) for i in range(CHUNKS)]
    tasks = [
        (i, method, chunk, size)
        for i in range(len(SCENARIOS))
        for method in METHODS
        for chunk, size in enumerate(sizes)
    ]
    # Longest tasks first so the pool finishes together.
    tasks.sort(key=lambda t: -SCENARIOS[t[0]].horizon_ticks * (t[1] == "sequential"))
    workers = min(len(tasks), max(1, int(os.environ.get("BENCH_WORKERS", os.cpu_count() or 1))))
    collected: dict[tuple[int, str], list[tuple[str, int, bool]]] = {}
    with multiprocessing.Pool(workers) as pool:
        for index, method, outcomes in pool.imap_unordered(_simulate, tasks):
            collected.setdefault((index, method), []).extend(outcomes)
    rows = [
        _summarise(scenario, method, collected[(i, method)])
        for i, scenario in enumerate(SCENARIOS)
        for method in METHODS
    ]
    wall = time.perf_counter() - started

    header = (
        f"{'scenario':<24} {'method':<11} {'false promo':>11} {'wrong rollb':>11}"
        f" {'false step':>10} {'power':>8} {'rollback':>8} {'undecided':>9}"
        f" {'median samples':>14}"
    )
    print(
        f"decision bench: {ROLLOUTS:,} canaries per scenario and method, alpha={POLICY.alpha},"
        f" min_samples={POLICY.min_samples}, initial weight {INITIAL_WEIGHT}%, step"
        f" {POLICY.max_step}, ceiling {POLICY.ceiling} (approved when asked), {workers} workers"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['scenario']:<24} {row['method']:<11}"
            f" {_fmt(row['false_promotion_rate']):>11} {_fmt(row['wrong_rollback_rate']):>11}"
            f" {_fmt(row['false_step_rate']):>10}"
            f" {_fmt(row['power']):>8} {_fmt(row['rollback_rate']):>8}"
            f" {_fmt(row['undecided_rate']):>9}"
            f" {_fmt(row['median_samples'], pct=False):>14}"
        )
    failures = [
        row["scenario"]
        for row in rows
        if row["method"] == "sequential"
        and row["false_promotion_rate"] is not None
        and row["stable_rate"] == row["canary_rate"]
        and row["false_promotion_rate"] > POLICY.alpha
    ]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"wall time: {wall:.1f} s ({children.ru_utime + children.ru_stime:.1f} s of CPU in"
        f" {workers} worker processes)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    if failures:
        print(f"FAILED: false promotions above alpha in {', '.join(failures)}")
        return 1
    print(f"target met: false promotions <= alpha={POLICY.alpha} in every equal-rate scenario")
    return 0


if __name__ == "__main__":
    sys.exit(main())
