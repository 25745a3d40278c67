"""Simulate canaries under real-world data hazards: the decision against a naive comparator.

Run from the repository root: ``.venv/bin/python bench/decision.py`` (``make bench-decision``).
Writes ``bench/results/decision.json``. ``BENCH_ROLLOUTS`` (default 10,000 canaries per
scenario and method), ``BENCH_WORKERS`` (default: the CPU count) and ``BENCH_SCENARIOS`` (a
semicolon-separated list of name prefixes, default all; a partial run replaces only its own
rows in the results) override; the seed is fixed, so a given
configuration always prints the same table.

The model
---------
A tick is one ``spec.canary.interval`` (2 min here; 120 ticks are 4 h). Each tick the agent
receives ``Poisson(requests_per_tick)`` tasks; each goes to the challenger with probability
``weight / 100`` and fails with its version's true rate at that moment (failures and successes
are independent Poisson draws by thinning, exact to 1e-30 by inversion of cached tables). The
hazards of issue 12 are layered on top, each in its own scenarios:

* **late outcomes**: a task's outcome is known ``lag`` ticks after it arrived. A provider that
  *follows the counter contract* counts the task in ``total`` and ``failed`` together when the
  outcome is recorded; one that does not counts ``total`` on arrival and ``failed`` later. The
  operator's guard is ``spec.metrics.outcomeLag`` (reads within it after a weight change are
  not evidence).
* **counter resets**: a version's counters restart from zero (a pod restart) with probability
  ``1 / reset_every`` per tick.
* **base-rate shifts**: an incident multiplies both versions' rates for a stretch of ticks, or
  a drift multiplies them by ``1 + A sin(2 pi t / period)``.
* **clusters**: a failed task is retried, so it counts as ``cluster`` failed requests.
* **the guard**: ``maxFailureRate`` above the true rate.
* **low traffic** with a ``decisionDeadline``.

Counters are cumulative per version, read every tick; the sequential method feeds them to the
operator's own ledger (:func:`promptloop.rollout.window.record_read`: increments, one stratum
per weight, resets, outcome lag) and rules with :func:`promptloop.rollout.decision.rule`
(the verdict of ``decide``, without the sentence; a unit test holds them equal). The weight a
verdict sets applies from the next tick. A person approves the moment the rollout asks (from
the next tick). The policy is the API's defaults: initial weight 5 %, steps of 10, ceiling 50,
floor 0, ``min_samples`` 50, ``alpha`` 0.05, margin 0; the ladder 5, 15, ..., 45, (ask), 55,
..., 95, 100, promote takes twelve "better" verdicts.

The methods
-----------
``sequential``
    The operator's method, as above.
``naive``
    A Flagger-like comparator on the same pooled window counts (the ledger's sums), the same
    ladder and approval: each tick with ``min_samples`` on both sides is a check; the canary's
    observed rate below the stable's steps the weight; above it by more than 10 % (relative)
    fails the check, 5 failed checks roll back; and the guard compares the raw observed rate.
``pooled``
    (only where it says something) the operator's test without strata and without the
    dispersion estimate: what those two corrections buy, and what they cost in power.

The metrics (per scenario and method) with 95 % Wilson intervals for the Monte Carlo error
--------------------------------------------------------------------------------------
``false_promotion_rate``: promoted although not better. ``wrong_rollback_rate``: rolled back
by evidence or the guard although not worse (deadline rollbacks are counted apart, in
``deadline_rate``: that is the scenario holding, not guessing). ``power``: promoted when
better. ``median_samples``: median requests of both versions when the run reached its terminal
verdict, with a 95 % distribution-free interval (binomial order statistics).
``false_step_rate``: stepped up at least once although not better. Also ``promotion_rate``,
``rollback_rate``, ``undecided_rate`` (reached the horizon).

The bar (issue 12): for the sequential method, false promotions and wrong rollbacks at most
``alpha / 2`` in every scenario; power on clean data at least 90 %. The table says per
scenario whether it is met; it is never tuned to pass.
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
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from promptloop.rollout.decision import Counts, Policy, Verdict, rule  # noqa: E402
from promptloop.rollout.window import (  # noqa: E402
    Cumulative,
    Ledger,
    ledger_strata,
    ledger_totals,
    open_ledger,
    record_read,
)

SEED = 20261202
ROLLOUTS = int(os.environ.get("BENCH_ROLLOUTS", "10000"))
CHUNKS = 8  # per scenario and method, for the worker pool; results do not depend on it
INITIAL_WEIGHT = 5
INTERVAL = 120.0  # seconds per tick
ALPHA = 0.05
POLICY = Policy(alpha=ALPHA, min_samples=50, margin=0.0, max_step=10, floor=0, ceiling=50)
NAIVE_TOLERANCE = 0.10  # a check fails when canary rate > stable rate * (1 + this)
NAIVE_FAILED_CHECKS = 5  # Flagger's analysis.threshold
RESULTS = ROOT / "bench" / "results" / "decision.json"
FOUR_HOURS = 120


@dataclass(frozen=True)
class Scenario:
    """True failure rates, traffic and the hazard of one simulated agent."""

    name: str
    stable_rate: float
    canary_rate: float
    requests_per_tick: float = 1000.0
    horizon_ticks: int = FOUR_HOURS
    lag: int = 0  # ticks from a task's arrival to its outcome
    total_on_arrival: bool = False  # the provider breaks the contract
    outcome_lag: int = 0  # spec.metrics.outcomeLag, in ticks
    reset_stable_every: float = 0.0  # mean ticks between counter resets; 0 = never
    reset_canary_every: float = 0.0
    cluster: int = 1  # failed requests per failed task
    incident: tuple[int, int, float] | None = None  # (first tick, end tick, rate factor)
    drift: tuple[float, float] | None = None  # (amplitude, period in ticks)
    max_failure_rate: float | None = None
    deadline_ticks: int | None = None
    pooled: bool = False  # also run the unstratified, binomial test
    power_bar: bool = False  # the power target applies (>= 90 % in 4 h)

    @property
    def truth(self) -> str:
        if self.canary_rate < self.stable_rate:
            return "better"
        if self.canary_rate > self.stable_rate:
            return "worse"
        return "equal"

    def factor(self, tick: int) -> float:
        """What the base rate is multiplied by at this tick (both versions alike)."""
        f = 1.0
        if self.incident is not None and self.incident[0] <= tick < self.incident[1]:
            f *= self.incident[2]
        if self.drift is not None:
            amplitude, period = self.drift
            f *= 1.0 + amplitude * math.sin(2.0 * math.pi * tick / period)
        return f

    @property
    def policy(self) -> Policy:
        return Policy(
            alpha=POLICY.alpha,
            min_samples=POLICY.min_samples,
            margin=POLICY.margin,
            max_step=POLICY.max_step,
            floor=POLICY.floor,
            ceiling=POLICY.ceiling,
            max_failure_rate=self.max_failure_rate,
            decision_deadline=(
                self.deadline_ticks * INTERVAL if self.deadline_ticks is not None else None
            ),
        )


S = Scenario
SCENARIOS = [
    # Clean data: the reference, and the power target (30 % better at 5 %: >= 90 % in 4 h).
    S("clean equal 0.5%", 0.005, 0.005, pooled=True),
    S("clean equal 5%", 0.05, 0.05, pooled=True),
    S("clean equal 20%", 0.20, 0.20),
    S("clean better 30% (5->3.5%)", 0.05, 0.035, pooled=True, power_bar=True),
    # The same at 60 % of the traffic: where power runs out, for both tests alike.
    S("clean better 30%, 600 per tick", 0.05, 0.035, requests_per_tick=600.0, pooled=True),
    S("clean worse 30% (5->6.5%)", 0.05, 0.065),
    # Late outcomes, 5 ticks (10 min).
    S("late 5t, contract kept, equal 5%", 0.05, 0.05, lag=5),
    S("late 5t, total on arrival, no guard, equal 5%", 0.05, 0.05, lag=5, total_on_arrival=True),
    S(
        "late 5t, total on arrival, outcomeLag, equal 5%",
        0.05,
        0.05,
        lag=5,
        total_on_arrival=True,
        outcome_lag=5,
    ),
    S(
        "late 5t, total on arrival, outcomeLag, worse 30%",
        0.05,
        0.065,
        lag=5,
        total_on_arrival=True,
        outcome_lag=5,
    ),
    S("late 5t, total on arrival, no guard, worse 30%", 0.05, 0.065, lag=5, total_on_arrival=True),
    S(
        "late 2t, total on arrival, outcomeLag, equal 20%",
        0.20,
        0.20,
        lag=2,
        total_on_arrival=True,
        outcome_lag=2,
    ),
    # Counter resets about every 30 min (15 ticks).
    S("canary resets /30min, equal 5%", 0.05, 0.05, reset_canary_every=15.0),
    S("stable resets /30min, equal 5%", 0.05, 0.05, reset_stable_every=15.0),
    # Base-rate shifts shared by both versions.
    S("incident x5 20min early, better 20%", 0.05, 0.04, incident=(3, 13, 5.0), pooled=True),
    S("drift +-60%/4h, equal 5%", 0.05, 0.05, drift=(0.6, 120.0), pooled=True),
    # Clusters: one failed task = 3 or 5 failed requests.
    S("retries x3, equal 5%", 0.05, 0.05, cluster=3, pooled=True),
    S("retries x5, equal 5%", 0.05, 0.05, cluster=5, pooled=True),
    S("retries x3, better 30%", 0.05, 0.035, cluster=3, pooled=True),
    # The absolute guard above the true rate.
    S("guard 8%, equal 5%", 0.05, 0.05, max_failure_rate=0.08),
    # Very low traffic (8 tasks per 2-min tick = 4 per 30 s), with a 4 h deadline.
    S(
        "low traffic, worse 30%, deadline 4h",
        0.05,
        0.065,
        requests_per_tick=8.0,
        deadline_ticks=FOUR_HOURS,
        horizon_ticks=FOUR_HOURS + 1,
    ),
    S(
        "low traffic, equal 5%, deadline 4h",
        0.05,
        0.05,
        requests_per_tick=8.0,
        deadline_ticks=FOUR_HOURS,
        horizon_ticks=FOUR_HOURS + 1,
    ),
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


def _sequential(
    ledger: Ledger, run: Run, policy: Policy, age: float, stratified: bool = True
) -> str:
    ns, fs, nc, fc = ledger_totals(ledger)
    if fs > ns or fc > nc:
        return "hold"  # the operator holds on inconsistent counters too
    ruling = rule(
        stable=Counts(ns, fs),
        canary=Counts(nc, fc),
        policy=policy,
        weight=run.weight,
        approved=run.approved,
        strata=ledger_strata(ledger) if stratified else None,
        canary_age=age,
    )
    run.weight = ruling.next_weight
    if ruling.verdict is Verdict.AWAIT_APPROVAL:
        run.approved = True  # a person approves as soon as asked; it applies from the next tick
    if ruling.kind == "deadline":
        return "deadline"
    return ruling.verdict.value


def _pooled(ledger: Ledger, run: Run, policy: Policy, age: float) -> str:
    return _sequential(ledger, run, policy, age, stratified=False)


def _ladder(run: Run) -> str:
    """The weight logic of ``decide`` on evidence "better", for the naive comparator."""
    weight = run.weight
    candidate = min(weight + POLICY.max_step, 100)
    if candidate >= POLICY.ceiling and weight < POLICY.ceiling and not run.approved:
        run.approved = True
        return Verdict.AWAIT_APPROVAL.value
    if weight == 100:
        return Verdict.PROMOTE.value
    run.weight = candidate
    return Verdict.STEP.value


def _naive(ledger: Ledger, run: Run, policy: Policy, age: float) -> str:
    ns, fs, nc, fc = ledger_totals(ledger)
    verdict = Verdict.HOLD.value
    if ns >= policy.min_samples and nc >= policy.min_samples:
        # Compare rates without dividing: f_c / n_c < f_s / n_s.
        left = fc * ns
        right = fs * nc
        if policy.max_failure_rate is not None and fc > policy.max_failure_rate * nc:
            run.weight = min(policy.floor, run.weight)
            return Verdict.ROLLBACK.value  # the raw-rate guard
        if left < right:
            verdict = _ladder(run)
        elif left > right * (1.0 + NAIVE_TOLERANCE):
            run.failed_checks += 1
            if run.failed_checks >= NAIVE_FAILED_CHECKS:
                run.weight = min(policy.floor, run.weight)
                return Verdict.ROLLBACK.value
    if (
        verdict == Verdict.HOLD.value
        and policy.decision_deadline is not None
        and age >= policy.decision_deadline
    ):
        return "deadline"
    return verdict


METHODS = {"sequential": _sequential, "naive": _naive, "pooled": _pooled}


def _methods(scenario: Scenario) -> list[str]:
    return ["sequential", "naive"] + (["pooled"] if scenario.pooled else [])


def _simulate(
    task: tuple[int, str, int, int],
) -> tuple[int, str, list[tuple[str, int, bool]], float]:
    """Run ``count`` canaries of one scenario with one method: (outcome, samples, stepped) each,
    and the CPU seconds it took."""
    cpu_started = time.process_time()
    scenario_index, method, chunk, count = task
    sc = SCENARIOS[scenario_index]
    policy = sc.policy
    rng = random.Random(f"{SEED}/{scenario_index}/{method}/{chunk}")
    rand = rng.random
    poisson = Sampler(rng).poisson
    step = METHODS[method]
    lam = sc.requests_per_tick
    r = sc.cluster
    lag = sc.lag
    arrival_totals = sc.total_on_arrival
    outcome_lag = sc.outcome_lag * INTERVAL
    reset_s = 1.0 / sc.reset_stable_every if sc.reset_stable_every else 0.0
    reset_c = 1.0 / sc.reset_canary_every if sc.reset_canary_every else 0.0
    rates = []
    for tick in range(1, sc.horizon_ticks + 1):
        f = round(sc.factor(tick), 2)  # rounded: one Poisson table per distinct mean
        rates.append((min(sc.stable_rate * f, 1.0), min(sc.canary_rate * f, 1.0)))
    outcomes: list[tuple[str, int, bool]] = []
    for _ in range(count):
        run = Run()
        # The cumulative counters the provider reports.
        ts = xs = tc = xc = 0
        pending: deque[tuple[int, int, int, int]] = deque()
        ledger = open_ledger(stable=Cumulative(0, 0), canary=Cumulative(0, 0), at=0.0)
        outcome = "undecided"
        stepped = False
        for tick in range(1, sc.horizon_ticks + 1):
            p_s, p_c = rates[tick - 1]
            share = run.weight / 100.0
            mc = lam * share
            ms = lam - mc
            bad_c = poisson(mc * p_c)
            bad_s = poisson(ms * p_s)
            arrived = (
                poisson(ms * (1.0 - p_s)) + r * bad_s,
                r * bad_s,
                poisson(mc * (1.0 - p_c)) + r * bad_c,
                r * bad_c,
            )
            if reset_s and rand() < reset_s:
                ts = xs = 0
            if reset_c and rand() < reset_c:
                tc = xc = 0
            if lag:
                pending.append(arrived)
                if arrival_totals:
                    ts += arrived[0]
                    tc += arrived[2]
                if len(pending) > lag:
                    done = pending.popleft()
                    xs += done[1]
                    xc += done[3]
                    if not arrival_totals:
                        ts += done[0]
                        tc += done[2]
            else:
                ts += arrived[0]
                xs += arrived[1]
                tc += arrived[2]
                xc += arrived[3]
            ledger = record_read(
                ledger,
                stable=Cumulative(ts, xs),
                canary=Cumulative(tc, xc),
                weight=run.weight,
                at=tick * INTERVAL,
                outcome_lag=outcome_lag,
            ).ledger
            verdict = step(ledger, run, policy, tick * INTERVAL)
            if verdict in ("promote", "rollback", "deadline"):
                outcome = verdict
                break
            if verdict == "step" or verdict == "await-approval":
                stepped = True
        ns, _, nc, _ = ledger_totals(ledger)
        outcomes.append((outcome, ns + nc, stepped))
    return scenario_index, method, outcomes, time.process_time() - cpu_started


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95 % Wilson score interval of a binomial proportion (Monte Carlo uncertainty)."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2.0 * trials)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / trials + z * z / (4.0 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def median_interval(values: list[int]) -> tuple[float, float] | None:
    """A distribution-free 95 % interval for the median (binomial order statistics)."""
    n = len(values)
    if n < 6:
        return None
    ordered = sorted(values)
    half = 1.959964 * math.sqrt(n) / 2.0
    lo = max(0, math.floor(n / 2.0 - half))
    hi = min(n - 1, math.ceil(n / 2.0 + half))
    return ordered[lo], ordered[hi]


def _rate(count: int, total: int, applies: bool) -> dict[str, Any] | None:
    if not applies:
        return None
    lo, hi = wilson(count, total)
    return {"rate": count / total, "low": lo, "high": hi, "count": count}


def _summarise(
    scenario: Scenario, method: str, outcomes: list[tuple[str, int, bool]]
) -> dict[str, Any]:
    total = len(outcomes)
    promoted = sum(1 for o, _, _ in outcomes if o == "promote")
    rolled_back = sum(1 for o, _, _ in outcomes if o == "rollback")
    deadline = sum(1 for o, _, _ in outcomes if o == "deadline")
    stepped = sum(1 for _, _, s in outcomes if s)
    decided = [n for o, n, _ in outcomes if o != "undecided"]
    truth = scenario.truth
    # The guard scenario's truth is about the guard as well: the rate is under it.
    return {
        "scenario": scenario.name,
        "method": method,
        "truth": truth,
        "false_promotion": _rate(promoted, total, truth != "better"),
        "wrong_rollback": _rate(rolled_back, total, truth != "worse"),
        "power": _rate(promoted, total, truth == "better"),
        "false_step": _rate(stepped, total, truth != "better"),
        "deadline": _rate(deadline, total, scenario.deadline_ticks is not None),
        "median_samples": statistics.median(decided) if decided else None,
        "median_samples_interval": median_interval(decided),
        "promotion_rate": promoted / total,
        "rollback_rate": rolled_back / total,
        "deadline_rate": deadline / total,
        "undecided_rate": (total - promoted - rolled_back - deadline) / total,
        "rollouts": total,
        "power_bar": scenario.power_bar,
        "cpu_seconds": None,
        "horizon_ticks": scenario.horizon_ticks,
        "interval_seconds": INTERVAL,
        "requests_per_tick": scenario.requests_per_tick,
        "stable_rate": scenario.stable_rate,
        "canary_rate": scenario.canary_rate,
    }


def _fmt(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    return f"{100.0 * entry['rate']:.2f} [{100.0 * entry['low']:.2f},{100.0 * entry['high']:.2f}]"


def _bar(row: dict[str, Any]) -> str:
    """Whether the sequential method meets issue 12's bar in this scenario."""
    if row["method"] != "sequential":
        return ""
    problems = []
    for key in ("false_promotion", "wrong_rollback"):
        entry = row[key]
        if entry is not None and entry["rate"] > ALPHA / 2.0:
            problems.append(f"{key.replace('_', ' ')} > {ALPHA / 2:g}")
    if row["power"] is not None and row["power_bar"] and row["power"]["rate"] < 0.90:
        problems.append("power < 90%")
    return "MISSED: " + ", ".join(problems) if problems else "ok"


def main() -> int:
    started = time.perf_counter()
    wanted = [w.strip() for w in os.environ.get("BENCH_SCENARIOS", "").split(";") if w.strip()]
    chosen = [
        i
        for i, sc in enumerate(SCENARIOS)
        if not wanted or any(sc.name.startswith(w) for w in wanted)
    ]
    sizes = [ROLLOUTS // CHUNKS + (1 if i < ROLLOUTS % CHUNKS else 0) for i in range(CHUNKS)]
    tasks = [
        (i, method, chunk, size)
        for i in chosen
        for method in _methods(SCENARIOS[i])
        for chunk, size in enumerate(sizes)
        if size
    ]
    # Longest tasks first so the pool finishes together.
    tasks.sort(key=lambda t: -SCENARIOS[t[0]].horizon_ticks * (t[1] != "naive"))
    workers = min(len(tasks), max(1, int(os.environ.get("BENCH_WORKERS", os.cpu_count() or 1))))
    load_before = os.getloadavg()
    collected: dict[tuple[int, str], list[tuple[str, int, bool]]] = {}
    cpu_by: dict[tuple[int, str], float] = {}
    with multiprocessing.Pool(workers) as pool:
        for index, method, outcomes, cpu_seconds in pool.imap_unordered(_simulate, tasks):
            collected.setdefault((index, method), []).extend(outcomes)
            cpu_by[(index, method)] = cpu_by.get((index, method), 0.0) + cpu_seconds
    rows = []
    for i in chosen:
        for method in _methods(SCENARIOS[i]):
            row = _summarise(SCENARIOS[i], method, collected[(i, method)])
            row["cpu_seconds"] = round(cpu_by[(i, method)], 2)
            rows.append(row)
    cpu_per_method = {
        method: round(sum(v for (_, m), v in cpu_by.items() if m == method), 1)
        for method in METHODS
    }
    wall = time.perf_counter() - started
    load_after = os.getloadavg()

    print(
        f"decision bench: {ROLLOUTS:,} canaries per scenario and method, alpha={POLICY.alpha},"
        f" min_samples={POLICY.min_samples}, initial weight {INITIAL_WEIGHT}%, step"
        f" {POLICY.max_step}, ceiling {POLICY.ceiling} (approved when asked), tick"
        f" {INTERVAL:g} s, {workers} workers. Rates in % with 95% Wilson intervals."
    )
    header = (
        f"{'scenario':<50} {'method':<10} {'false promotion':>20} {'wrong rollback':>20}"
        f" {'power':>20} {'false step':>10} {'deadline':>8} {'undecided':>9}"
        f" {'median samples':>14}  bar"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        deadline = f"{100.0 * row['deadline_rate']:.1f}" if row["deadline"] else "-"
        false_step = f"{100.0 * row['false_step']['rate']:.2f}" if row["false_step"] else "-"
        median = row["median_samples"]
        print(
            f"{row['scenario']:<50} {row['method']:<10}"
            f" {_fmt(row['false_promotion']):>20} {_fmt(row['wrong_rollback']):>20}"
            f" {_fmt(row['power']):>20}"
            f" {false_step:>10}"
            f" {deadline:>8}"
            f" {100.0 * row['undecided_rate']:>8.1f}%"
            f" {(f'{median:,.0f}' if median is not None else '-'):>14}  {_bar(row)}"
        )
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = children.ru_utime + children.ru_stime
    print(
        f"wall time: {wall:.1f} s ({cpu:.1f} s of CPU in {workers} worker processes);"
        f" load average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
        f" on {os.cpu_count()} CPUs"
    )
    print(
        "CPU seconds by method (sums over workers): "
        + ", ".join(f"{m} {v:.1f}" for m, v in cpu_per_method.items())
    )
    missed = [row["scenario"] for row in rows if _bar(row).startswith("MISSED")]
    run = {
        "rollouts": ROLLOUTS,
        "alpha": ALPHA,
        "interval_seconds": INTERVAL,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "cpu_seconds_by_method": cpu_per_method,
        "workers": workers,
        "load_average_before": load_before[0],
        "load_average_after": load_after[0],
        "scenarios": [SCENARIOS[i].name for i in chosen],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if wanted and RESULTS.exists():
        # A partial run (BENCH_SCENARIOS) replaces its own rows and keeps the others, with the
        # run that produced each row listed in "runs".
        document = json.loads(RESULTS.read_text())
        names = set(run["scenarios"])
        kept = [row for row in document.get("rows", []) if row["scenario"] not in names]
        document["rows"] = kept + rows
        document.setdefault("runs", []).append(run)
    else:
        document = {**run, "runs": [run], "rows": rows}
    order = {sc.name: i for i, sc in enumerate(SCENARIOS)}
    document["rows"].sort(
        key=lambda row: (order.get(row["scenario"], 999), row["method"] != "sequential")
    )
    document["bar_missed"] = sorted(
        {row["scenario"] for row in document["rows"] if _bar(row).startswith("MISSED")}
    )
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    if missed:
        print(
            f"bar missed (alpha/2 = {ALPHA / 2:g} per claim, power >= 90%) in: {'; '.join(missed)}"
        )
        return 1
    print("bar met in every scenario")
    return 0


if __name__ == "__main__":
    sys.exit(main())
