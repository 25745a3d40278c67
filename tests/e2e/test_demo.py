"""The demo, unattended, end to end (README's first command, ``make demo AUTO_APPROVE=1``).

It runs ``promptloop dev demo --auto-approve`` as a user would, against the test session's
cluster, in a namespace and state directory of its own, with the model simulator (any
``OPENAI_*`` variable is removed). Everything else is real: the example agent on the
``agentfield`` SDK in its own venv (installed by the demo on first use), the AgentField stand-in,
the operator under its ServiceAccount, the improver, the process kubelet and the traffic.

It checks what the demo promises: exit code 0 only after ``Promoted``; the challenger's measured
failure rate below the incumbent's, by more than the noise (the 95 % intervals do not overlap),
in the demo's tally and in the operator's own canary window; the approval command and the
routing note are printed; and every process it started is gone when it returns.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import KubeCluster

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1500)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def test_demo_runs_unattended_to_a_better_promoted_challenger(
    kube: KubeCluster, tmp_path: Path
) -> None:
    namespace = f"demo-{uuid.uuid4().hex[:8]}"
    state_dir = tmp_path / "demo"
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPENAI_")}
    command = [
        sys.executable,
        "-m",
        "promptloop.cli",
        "dev",
        "demo",
        "--auto-approve",
        "--namespace",
        namespace,
        "--state-dir",
        str(state_dir),
        "--kubeconfig",
        str(kube.kubeconfig),
        "--view",
        "lines",
        "--timeout",
        "900",
    ]
    try:
        proc = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1400
        )
        output = proc.stdout + proc.stderr
        tail = "\n".join(output.splitlines()[-80:])
        assert proc.returncode == 0, f"demo exited {proc.returncode}:\n{tail}"
        summary = json.loads((state_dir / "summary.json").read_text())
        assert summary["promoted"] is True and summary["outcome"] == "Promoted", tail
        assert summary["simulator"] is True

        incumbent = summary["versions"][summary["incumbent"]]
        challenger = summary["versions"][summary["challenger"]]
        assert challenger["role"] == "challenger" and incumbent["role"] == "incumbent"
        assert incumbent["graded"] >= 100 and challenger["graded"] >= 40, summary["versions"]
        assert challenger["failure_rate"] < incumbent["failure_rate"], summary["versions"]
        # Not luck: the challenger's whole 95 % interval lies below the incumbent's.
        assert challenger["interval95"][1] < incumbent["interval95"][0], summary["versions"]
        window = summary["operator_window"]
        stable_rate = window["stable"]["failed"] / window["stable"]["total"]
        canary_rate = window["canary"]["failed"] / window["canary"]["total"]
        assert canary_rate < stable_rate, window

        events = [entry["event"] for entry in summary["decisions"]]
        assert events[0] == "rendered" and events[-1] == "promote", events
        assert "await-approval" in events and "approved" in events, events
        assert "step" in events, events

        # What the demo says it does, it says.
        assert "AgentField STAND-IN" in output
        assert "ignores traffic weights" in output
        assert "there is no container runtime here" in output
        assert f"patch promptproposal {summary['proposal']} -n {namespace}" in output
        assert '{"spec":{"approved":true}}' in output
        assert "--auto-approve: approving" in output
        # Every process it started is gone: agents, operator, stand-in, simulator.
        found = re.findall(r"\(pid (\d+)\)|, pid (\d+),", output)
        pids = {int(first or second) for first, second in found}
        assert len(pids) >= 5, pids
        assert not [pid for pid in pids if _alive(pid)], "processes left running"
        record = json.loads((state_dir / "demo.json").read_text())
        assert record["finished"] is True and record["pid"] == 0
        # The model key travels through a Secret and is never printed.
        assert "OPENAI_API_KEY=<hidden: Secret classifier-model, key api-key>" in output
        assert 'OPENAI_API_KEY="' not in output
    finally:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "promptloop.cli",
                "dev",
                "demo-down",
                "--state-dir",
                str(state_dir),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=300,
        )
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
