"""``promptloop status --wait`` and ``kubectl wait`` on the conditions, for CI pipelines.

One rollout runs two proposals in turn: the first never gets ready within the wait (exit 2),
then turns out worse and is rolled back (exit 1), the second is better, pre-approved and
promoted (exit 0). The rollout's conditions are checked to tell the truth after the rollback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Scenario

pytestmark = pytest.mark.cluster

BIN = Path(sys.executable).parent
WORSE = "Classify the ticket. Answer anything."
BETTER = "Classify the ticket as billing, bug, or other. Refunds are billing. One word."


def _wait(scenario: Scenario, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, KUBECONFIG=str(scenario.kube.kubeconfig))
    return subprocess.Popen(
        [
            str(BIN / "promptloop"),
            "status",
            "classifier",
            "-n",
            scenario.namespace,
            "--wait",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        c["type"]: (c["status"], c["reason"]) for c in obj.get("status", {}).get("conditions", [])
    }


def test_status_wait_exit_codes_and_conditions_after_a_rollback(scenario: Scenario) -> None:
    scenario.setup(stable_failure_rate=0.30)
    scenario.start_operator()
    scenario.propose("worse", "2.1.0", WORSE)
    scenario.wait_proposal_phase("worse", "Rendered", timeout=30)

    # Not registered yet: the challenger cannot get ready, so the wait times out (exit 2).
    timed_out = _wait(scenario, "--timeout", "2s")
    out, err = timed_out.communicate(timeout=60)
    assert timed_out.returncode == 2, out + err
    assert "timed out after 2s: PromptProposal worse is Rendered" in err

    # Now it registers and fails far more often than the stable: rolled back (exit 1).
    rolled_back = _wait(scenario, "--timeout", "3m")
    assert scenario.agents is not None
    scenario.agents.register("2.1.0", 0.9)
    out, err = rolled_back.communicate(timeout=240)
    assert rolled_back.returncode == 1, out + err
    assert out.startswith("PromptProposal worse (2.1.0) RolledBack")
    rollout = scenario.rollout()
    assert _conditions(rollout)["Ready"] == ("False", "RolledBack")
    assert _conditions(rollout)["Completed"] == ("False", "RolledBack")
    assert _conditions(rollout)["Healthy"] == ("False", "RolledBack")
    worse = _conditions(scenario.proposal("worse"))
    assert worse["RolledBack"] == ("True", "RolledBack")
    assert worse["Promoted"] == ("False", "RolledBack")
    assert worse["Rendered"] == ("True", "Rendered")

    # A better, pre-approved proposal is promoted on evidence (exit 0); kubectl waits too.
    scenario.propose("better", "2.2.0", BETTER, approved=True)
    promoted = _wait(scenario, "--proposal", "better", "--timeout", "4m")
    scenario.agents.register("2.2.0", 0.02)
    out, err = promoted.communicate(timeout=300)
    assert promoted.returncode == 0, out + err
    assert out.startswith("PromptProposal better (2.2.0) Promoted")
    waited = scenario.kube.kubectl(
        "wait",
        "--for=condition=Promoted",
        "pp/better",
        "-n",
        scenario.namespace,
        "--timeout=10s",
    )
    assert "condition met" in waited.stdout
    better = _conditions(scenario.proposal("better"))
    assert better["Approved"] == ("True", "Approved")
    assert better["ChallengerReady"] == ("True", "Promoted")
    rollout = scenario.rollout()
    assert _conditions(rollout)["Completed"] == ("True", "Promoted")
    assert _conditions(rollout)["Healthy"] == ("True", "Healthy")
    assert _conditions(rollout)["Ready"] == ("True", "Reconciled")

    # A late pipeline still gets the answer at once; Invalid or unknown proposals exit 1 or 3.
    late = _wait(scenario, "--proposal", "worse", "--timeout", "5s")
    out, err = late.communicate(timeout=60)
    assert late.returncode == 1, out + err
    missing = _wait(scenario, "--proposal", "nope", "--timeout", "5s")
    out, err = missing.communicate(timeout=60)
    assert missing.returncode == 3 and "nope not found" in err
