"""The control plane itself (issue 15, Deliver 2): kill -9 of kube-apiserver, and separately of
etcd, in the middle of a canary, restarted a few seconds later with the same command line. The
operator must reconnect its watches and lose nothing (the same invariants as the SIGKILL test,
from the same two logs), and must neither double-step nor stall: after the API server answers
again, the rollout's next pass lands within one interval (plus the time a pass takes).

This needs the local control plane (``make cluster-up``), whose processes this test restarts;
against any other cluster (kind, say) it is skipped, saying why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from devenv.cluster import ClusterError, ClusterState, is_healthy
from tests.integration.chaos.common import StatusLog, sweep_for_secrets, wait_until
from tests.integration.chaos.faultproxy import FaultProxy
from tests.integration.chaos.ledger import BUDGET, LEDGER, rng
from tests.integration.chaos.test_sigkill import check_invariants
from tests.integration.conftest import Scenario

pytestmark = pytest.mark.cluster

INTERVAL = 4.0
# A pass after recovery re-lists and re-reads AgentField and the metrics: allow it this long.
PASS_SLACK = 4.0


def _restart(state: ClusterState, component: str, down_for: float) -> float:
    """SIGKILL one component, wait ``down_for`` seconds, start it again with the same command
    line (its log appended); returns the monotonic time it answered again."""
    pid = state.pids[component]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), timeout=10)
    wait_until(lambda: False, timeout=down_for)
    log = (state.dir / "logs" / f"{component}.log").open("a")
    proc = subprocess.Popen(
        [a.decode() for a in argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    state.pids[component] = proc.pid
    state.save()
    healthy = wait_until(lambda: is_healthy(state.dir), timeout=120, interval=0.25)
    assert healthy, f"{component} did not come back; logs in {state.dir / 'logs'}"
    return time.monotonic()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


# The CI subset kills the API server; `make chaos` kills etcd as well.
COMPONENTS = ["kube-apiserver", "etcd"] if BUDGET.name == "full" else ["kube-apiserver"]


@pytest.mark.parametrize("component", COMPONENTS)
def test_control_plane_killed_mid_canary(scenario: Scenario, component: str) -> None:
    try:
        state = ClusterState.load(scenario.kube.kubeconfig.parent)
    except ClusterError:
        pytest.skip("not the local control plane: its processes are not ours to restart")
    scenario.setup(
        stable_failure_rate=0.30,
        canary={
            "initialWeight": 10,
            "maxStep": 10,
            "ceiling": 50,
            "interval": f"{INTERVAL:g}s",
            "minSamples": 30,
            "progressDeadline": "5m",
        },
    )
    assert scenario.agents is not None
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
    row = LEDGER.row(f"kill -9 {component}")
    try:
        operator = scenario.start_operator()
        with StatusLog(scenario.kube.kubeconfig, scenario.namespace) as log:
            scenario.propose(
                "classifier-2-1-0", "2.1.0", "Classify the ticket. Refunds are billing."
            )
            scenario.wait_proposal_phase("classifier-2-1-0", "Rendered", timeout=60)
            scenario.agents.register("2.1.0", 0.02)
            scenario.wait_rollout(
                lambda r: ((_status(r).get("canary") or {}).get("steps") or 0) >= 1,
                "a first step",
                90,
            )
            down_for = round(rng(f"control-plane:{component}").uniform(2, 5), 2)
            before = router.count()
            killed_at = time.monotonic()
            back_at = _restart(state, component, down_for)
            row.injected += 1
            row.requests_during_fault = router.count() - before
            row.notes["down_seconds"] = round(back_at - killed_at, 1)
            # The next pass lands within an interval of recovery (plus a pass's own time).
            decided_before = wait_until(
                lambda: (_status(scenario.rollout()).get("decision") or {}).get("decidedAt"),
                timeout=30,
            )

            def passed_again() -> bool:
                decided = (_status(scenario.rollout()).get("decision") or {}).get("decidedAt")
                return bool(decided and decided != decided_before)

            if wait_until(passed_again, timeout=INTERVAL + PASS_SLACK) is None:
                row.violations.append(
                    f"no pass within {INTERVAL + PASS_SLACK:g} s of {component} answering again"
                )
            row.notes["pass_after_recovery_seconds"] = round(time.monotonic() - back_at, 1)
            # And it carries on: the canary takes its next step, or holds at the human gate
            # (the last step below the ceiling may have been taken before the outage).
            steps_then = (_status(scenario.rollout()).get("canary") or {}).get("steps") or 0

            def carried_on() -> bool:
                canary = _status(scenario.rollout()).get("canary") or {}
                phase = scenario.proposal("classifier-2-1-0")["status"]["phase"]
                return (canary.get("steps") or 0) > steps_then or phase == "AwaitingApproval"

            if not wait_until(carried_on, timeout=60):
                row.violations.append("the canary neither stepped nor held for approval after it")
            if operator.proc is None or operator.proc.poll() is not None:
                row.violations.append("the operator exited during the outage")
            final = scenario.rollout()
            weight = (_status(final).get("canary") or {}).get("weight") or 0
            if not wait_until(
                lambda: scenario.agents.weights().get("2.1.0") == weight * 100, timeout=15
            ):
                row.violations.append("the router did not converge to status")
        row.violations.extend(check_invariants(log, router, {}, final))
        row.notes["watch_reconnects_of_the_test"] = log.reconnects
        if not row.violations:
            row.recovered += 1
        sweep_for_secrets(scenario, [scenario.agentfield.token], during=f"kill -9 {component}")
    finally:
        router.close()
    assert not row.violations, "\n".join(row.violations)
