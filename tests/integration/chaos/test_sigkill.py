"""SIGKILL anywhere (issue 15, Deliver 1): the operator is killed at seeded random moments
across whole canary lives, restarted at once, and the run is then checked from two logs — every
router write (a recording proxy in front of AgentField) and every status transition (watches on
both kinds) — against the invariants the design promises:

- no step taken twice within an interval (the approval step, which a person triggers, aside);
- no approval lost;
- no weight at or above the ceiling before approval, in status or written to the router;
- no version promoted without approval;
- the router converged to what status says;
- the queue order kept (a queued proposal starts only after its predecessor ended, and never two
  challengers at once).

Each cycle canaries a better challenger to promotion (with approval) while a worse one waits
queued behind it, then canaries the worse one to its rollback. The kill points of a cycle are
right after the proposals are filed (render), mid-stepping, right after a version re-registers
(the weight guard), right after the approval patch, during promotion, right after promotion (the
queued proposal's start), during the retention window (retirement) and during the rollback; the
delay after each trigger is drawn from the seeded generator and printed.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import pytest

from promptloop import crashpoints
from tests.integration.chaos.common import StatusLog, parse_time, sweep_for_secrets, wait_until
from tests.integration.chaos.faultproxy import FaultProxy
from tests.integration.chaos.ledger import BUDGET, LEDGER, rng
from tests.integration.conftest import Scenario

pytestmark = pytest.mark.cluster

STAGES = [
    "render",
    "step",
    "weight guard",
    "approval",
    "promotion",
    "queue start",
    "retirement",
    "rollback",
]
INTERVAL = 4.0
CEILING = 50
RETIRE_AFTER = 3.0
ACTIVE = {"Rendered", "Canary", "AwaitingApproval"}
PROMPT = "Classify the ticket as billing, bug, or other. Refunds are billing. Cycle {} {}."


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def _canary(obj: dict[str, Any]) -> dict[str, Any]:
    return _status(obj).get("canary") or {}


# Exact kill points, armed in the operator by PROMPTLOOP_CRASH_AFTER (promptloop/crashpoints.py):
# it SIGKILLs itself right after the n-th effect of that type.
CRASH_EFFECTS = {
    "ApplyManifests": "after rendering, before the status write",
    "WriteRolloutStatus": "between the status write and the router write",
    "AssertWeights": "between the router write and the proposals' statuses",
    "WriteProposalStatus": "after a proposal's status, before its Events",
    "ScaleToZero": "after scaling a challenger or an old stable down",
}


class Supervisor:
    """Plays the Deployment's restart policy: whenever the operator dies (SIGKILLed by the
    test, or by an armed crash point), a new one is started at once. Each new one is armed
    with a seeded crash point half of the time."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.stages: set[str] = set()
        self.cycle = 0
        self.random = rng("sigkill:delays")
        self.arming = rng("sigkill:crash-points")
        self.row = LEDGER.row("SIGKILL of the operator")
        self.armed: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Supervisor:
        self._start()
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def begin_cycle(self, cycle: int, stages: set[str]) -> None:
        """The stages at which this cycle kills (the others draw their delay and pass)."""
        self.cycle, self.stages = cycle, stages

    def _start(self) -> None:
        env: dict[str, str] = {}
        self.armed = None
        if self.arming.random() < 0.5:
            effect = self.arming.choice(sorted(CRASH_EFFECTS))
            self.armed = f"{effect}:{self.arming.randint(1, 3)}"
            env[crashpoints.ENV] = self.armed
        # An armed point may fire before the operator is live: the loop then restarts it.
        with contextlib.suppress(AssertionError):
            self.scenario.start_operator(env=env)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                proc = self.scenario.operators[-1].proc
                if proc is None or proc.poll() is None:
                    continue
                if proc.returncode == -9 and self.armed:
                    effect = self.armed.split(":")[0]
                    self._record(f"crash point {self.armed} ({CRASH_EFFECTS[effect]})")
                self._start()

    def _record(self, what: str) -> None:
        self.row.injected += 1
        self.row.notes.setdefault("kill_points", []).append(f"cycle {self.cycle}: {what}")
        print(f"SIGKILL: cycle {self.cycle}, {what}")

    def at(self, stage: str, max_delay: float) -> None:
        """SIGKILL a random moment (seeded) up to ``max_delay`` after the stage's trigger."""
        delay = round(self.random.uniform(0, max_delay), 2)
        if stage not in self.stages:
            return
        wait_until(lambda: False, timeout=delay, interval=min(0.05, delay or 0.05))
        with self._lock:
            operator = self.scenario.operators[-1]
            if operator.proc is not None and operator.proc.poll() is None:
                self.armed = None  # this death is the test's, not the crash point's
                operator.kill()
                self._record(f"{stage} +{delay}s")


def _poll_proposal(
    scenario: Scenario, name: str, phases: set[str], timeout: float
) -> dict[str, Any]:
    found = wait_until(
        lambda: p if _status(p := scenario.proposal(name)).get("phase") in phases else None,
        timeout=timeout,
    )
    assert found, (
        f"{name} did not reach {phases}: {_status(scenario.proposal(name))}\n"
        + "\n".join(op.log_tail(30) for op in scenario.operators[-1:])
    )
    return found  # type: ignore[no-any-return]


def test_sigkill_at_random_points_loses_nothing(scenario: Scenario) -> None:
    scenario.setup(
        stable_failure_rate=0.30,
        canary={
            "initialWeight": 10,
            "maxStep": 20,
            "ceiling": CEILING,
            "interval": f"{INTERVAL:g}s",
            "minSamples": 30,
            "progressDeadline": "2m",
            "retireAfter": f"{RETIRE_AFTER:g}s",
        },
    )
    assert scenario.agents is not None
    agents = scenario.agents
    router = FaultProxy(scenario.agentfield.url)
    scenario.kube.kubectl(
        "patch",
        "ar",
        "classifier",
        "-n",
        scenario.namespace,
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"router": {"agentfield": {"url": router.url}}}}),
    )
    row = LEDGER.row("SIGKILL of the operator")
    cycles = max(1, -(-BUDGET.kill_points // len(STAGES)))
    plan = rng("sigkill:plan")
    remaining = BUDGET.kill_points
    approvals: dict[str, float] = {}
    stable = "2.0.0"
    try:
        with (
            Supervisor(scenario) as kill,
            StatusLog(scenario.kube.kubeconfig, scenario.namespace) as log,
        ):
            scenario.wait_rollout(lambda r: _status(r).get("phase") == "Stable", "Stable")
            for cycle in range(1, cycles + 1):
                take = min(remaining, len(STAGES))
                stages = set(plan.sample(STAGES, take))
                remaining -= take
                kill.begin_cycle(cycle, stages)
                good, bad = f"2.{cycle}.0", f"2.{cycle}.1"
                good_name, bad_name = f"good-{cycle}", f"bad-{cycle}"
                agents.register(stable, 0.30)
                scenario.propose(good_name, good, PROMPT.format(cycle, "good"))
                scenario.propose(bad_name, bad, PROMPT.format(cycle, "bad"))
                kill.at("render", 1.0)
                _poll_proposal(scenario, good_name, ACTIVE, 60)
                agents.register(good, 0.02)
                scenario.wait_rollout(lambda r: (_canary(r).get("weight") or 0) > 0, "seeded", 60)
                agents.register(stable, 0.30)  # the stable re-registers: its weight resets
                kill.at("weight guard", 3.5)
                scenario.wait_rollout(lambda r: (_canary(r).get("steps") or 0) >= 1, "a step", 90)
                kill.at("step", INTERVAL)
                _poll_proposal(scenario, good_name, {"AwaitingApproval"}, 120)
                scenario.kube.kubectl(
                    "patch",
                    "pp",
                    good_name,
                    "-n",
                    scenario.namespace,
                    "--type",
                    "merge",
                    "-p",
                    '{"spec":{"approved":true}}',
                )
                approvals[good] = time.monotonic()
                kill.at("approval", 0.5)
                scenario.wait_rollout(
                    lambda r: (
                        _status(r).get("phase") == "Promoting"
                        or (_canary(r).get("weight") or 0) >= CEILING
                    ),
                    "promoting",
                    60,
                )
                kill.at("promotion", 2.0)
                _poll_proposal(scenario, good_name, {"Promoted"}, 120)
                stable = good
                kill.at("queue start", 1.0)
                _poll_proposal(scenario, bad_name, ACTIVE, 60)
                agents.register(bad, 0.60)
                kill.at("retirement", RETIRE_AFTER)
                scenario.wait_rollout(
                    lambda r, bad_name=bad_name: (
                        _canary(r).get("proposal") == bad_name
                        and (_canary(r).get("weight") or 0) > 0
                    ),
                    "bad seeded",
                    60,
                )
                kill.at("rollback", 2 * INTERVAL)
                _poll_proposal(scenario, bad_name, {"RolledBack"}, 120)
            # Converged: the router's weights are what status says.
            final = scenario.wait_rollout(
                lambda r: (
                    _status(r).get("phase") in ("Stable", "RolledBack")
                    and agents.weights().get(stable) == 10000
                ),
                "the router converged to status",
                60,
            )
        # Every death was followed by a live operator that carried the cycles to their end.
        row.recovered = row.injected
        row.requests_during_fault = len(router.writes)
        violations = check_invariants(log, router, approvals, final)
        row.violations.extend(violations)
        row.notes["status_transitions"] = len(log.entries)
        row.notes["router_writes"] = len(router.writes)
        sweep_for_secrets(scenario, [scenario.agentfield.token], during="SIGKILL")
    finally:
        router.close()
    assert row.injected >= BUDGET.kill_points
    assert not row.violations, "\n".join(row.violations)


def check_invariants(
    log: StatusLog, router: FaultProxy, approvals: dict[str, float], final: dict[str, Any]
) -> list[str]:
    """The invariants of the module docstring, from the two logs."""
    violations: list[str] = []
    rollout_log = log.of("agentrollouts", "classifier")
    # No step twice within an interval (the approval step aside); no weight at the ceiling
    # before approval; approval never lost once recorded for the running canary.
    last_step: dict[str, Any] = {}
    approved_seen: set[str] = set()
    for _, _, status in rollout_log:
        canary = status.get("canary") or {}
        proposal, weight = canary.get("proposal"), canary.get("weight")
        if not proposal:
            continue
        if canary.get("approved"):
            approved_seen.add(proposal)
        elif proposal in approved_seen:
            violations.append(f"approval of {proposal} lost from the rollout's status")
        if weight is not None and weight >= CEILING and not canary.get("approved"):
            violations.append(f"{proposal} at {weight}% without approval")
        step_at = canary.get("lastStepAt")
        previous = last_step.get(proposal)
        if step_at and previous and step_at != previous[0]:
            gap = parse_time(step_at) - parse_time(previous[0])
            approval_step = canary.get("approved") and not previous[1]
            if gap < timedelta(seconds=INTERVAL - 0.3) and not approval_step:
                violations.append(f"{proposal} stepped twice {gap.total_seconds():.2f} s apart")
        if step_at:
            last_step[proposal] = (step_at, bool(canary.get("approved")))
    # Router writes: the canary's share never at the ceiling before its approval patch.
    for at, method, path, body, _code in router.writes:
        if method != "PUT" or not path.endswith("/weight"):
            continue
        version = unquote(path.split("/versions/")[1].split("/")[0])
        try:
            weight = json.loads(body)["weight"]
        except (ValueError, KeyError):
            continue
        approved_at = approvals.get(version)
        challenger = version.endswith(".0") and version != "2.0.0"
        if challenger and weight >= CEILING * 100 and (approved_at is None or at < approved_at):
            violations.append(f"router: {version} written {weight} before its approval")
    # Promotion only with approval; queue order: the bad one starts after the good one ended.
    first_active: dict[str, float] = {}
    ended: dict[str, float] = {}
    active_now: dict[str, bool] = {}
    for at, name, approved, status in [
        (t, n, a, s) for t, p, n, a, s in log.entries if p == "promptproposals"
    ]:
        phase = status.get("phase")
        if phase == "Promoted" and not (approved and status.get("approval")):
            violations.append(f"{name} promoted without approval")
        if phase in ACTIVE:
            first_active.setdefault(name, at)
        if phase in ("Promoted", "RolledBack", "Rejected", "Superseded") and name not in ended:
            ended[name] = at
        active_now[name] = phase in ACTIVE
        if sum(active_now.values()) > 1:
            violations.append(f"two challengers at once: {[n for n, a in active_now.items() if a]}")
    for name, started in first_active.items():
        if name.startswith("bad-"):
            good = "good-" + name.split("-", 1)[1]
            if good not in ended or started < ended[good]:
                violations.append(f"{name} started before {good} ended")
    stable = _status(final).get("stableVersion")
    if stable and stable != "2.0.0" and stable not in approvals:
        violations.append(f"stable version {stable} was never approved")
    return violations
