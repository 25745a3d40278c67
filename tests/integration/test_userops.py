"""``promptloop status|diff|approve|reject`` against the real API server with the operator running.

The commands run as the installed console scripts (``promptloop`` and, through kubectl's plugin
mechanism, ``kubectl-promptloop``) with the admin kubeconfig, as a person would run them. The
watch mode runs under a pseudo-terminal, since without one it prints once by design.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Scenario

pytestmark = pytest.mark.cluster

BIN = Path(sys.executable).parent
PROMPTLOOP = str(BIN / "promptloop")
KUBECTL = str(BIN / "kubectl")
PROPOSAL = "classifier-2-1-0"
STABLE_PROMPT = "Classify the ticket as billing, bug, or other. One word."
BETTER = "Classify the ticket as billing, bug, or other. Refunds are billing. One word."


def _env(scenario: Scenario) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KUBECONFIG=str(scenario.kube.kubeconfig),
        COLUMNS="120",
        # kubectl finds plugins on PATH: the venv's bin holds kubectl-promptloop.
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.pop("NO_COLOR", None)
    return env


def cli(
    scenario: Scenario, *args: str, kubectl: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``promptloop ARGS -n NAMESPACE`` (or ``kubectl promptloop ...``)."""
    command = [KUBECTL, "promptloop"] if kubectl else [PROMPTLOOP]
    return subprocess.run(
        [*command, *args, "-n", scenario.namespace],
        capture_output=True,
        text=True,
        env=_env(scenario),
        timeout=timeout,
    )


def _status(rollout: dict) -> dict:  # type: ignore[type-arg]
    return rollout.get("status", {})  # type: ignore[no-any-return]


def _weight(rollout: dict) -> int:  # type: ignore[type-arg]
    return int((_status(rollout).get("canary") or {}).get("weight") or 0)


def _canary_holding(scenario: Scenario) -> None:
    """A challenger that holds its first weight (10 %) with verdict ``hold`` for ever."""
    scenario.setup(canary={"minSamples": 100000})
    scenario.start_operator()
    scenario.propose(PROPOSAL, "2.1.0", BETTER)
    scenario.wait_proposal_phase(PROPOSAL, "Rendered", timeout=30)
    assert scenario.agents is not None
    scenario.agents.register("2.1.0", 0.02)
    scenario.wait_rollout(
        lambda r: (
            _weight(r) > 0
            and (_status(r).get("decision") or {}).get("verdict") == "hold"
            and any(w.get("version") == "2.1.0" for w in _status(r).get("weights", []))
        ),
        "the canary holding at its first weight with a verdict",
        timeout=45,
    )


class PtyProcess:
    """A command on a pseudo-terminal of a known size, its output collected as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 80, 140, 0, 0))
        self.master = master
        self.output = b""
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)

    def read_until(self, needle: str, timeout: float) -> str:
        """Collect output until ``needle`` appears after what was already read."""
        start = len(self.output)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle.encode() in self.output[start:]:
                return self.output[start:].decode(errors="replace")
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                self.output += chunk
        tail = self.output[start:].decode(errors="replace")[-2000:]
        raise AssertionError(f"{needle!r} not seen within {timeout}s; output tail:\n{tail}")

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C (SIGINT), then the exit code.

        The terminal is drained until the process is reaped: a process exiting with output the
        other side has not read can wait in the kernel's tty close, so a wait that stops reading
        could hang on the harness rather than on the program.
        """
        self.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):
                    self.output += os.read(self.master, 65536)
        code = self.proc.poll()
        if code is None:
            # The view registers faulthandler on SIGUSR1: collect its Python stacks.
            self.proc.send_signal(signal.SIGUSR1)
            until = time.monotonic() + 2
            while time.monotonic() < until:
                ready, _, _ = select.select([self.master], [], [], 0.1)
                if ready:
                    with contextlib.suppress(OSError):
                        self.output += os.read(self.master, 65536)
            try:
                state = Path(f"/proc/{self.proc.pid}/stat").read_text().split()[2]
                stack = Path(f"/proc/{self.proc.pid}/stack").read_text()
            except OSError as error:
                state, stack = "?", str(error)
            tail = self.output.decode(errors="replace")[-4000:]
            raise AssertionError(
                f"status -w did not exit within {timeout}s of Ctrl-C (state {state}):\n"
                f"{stack}\noutput tail:\n{tail}"
            )
        return code

    def close(self) -> None:
        """Kill it if it still runs and release the terminal."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            os.close(self.master)


# -- status, diff and the kubectl plugin on a live canary


def test_status_and_diff_show_a_live_canary_also_as_a_kubectl_plugin(scenario: Scenario) -> None:
    _canary_holding(scenario)

    shown = cli(scenario, "status", "classifier")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "AgentRollout" in out and "classifier" in out
    assert "phase Progressing" in out
    # Weight bars for both versions, read back from the router.
    assert "Traffic" in out and "█" in out
    bars = {line.split()[0]: line for line in out.splitlines() if "█" in line or "░" in line}
    assert "2.0.0" in bars and "2.1.0" in bars
    assert "90.0%" in bars["2.0.0"] and "10.0%" in bars["2.1.0"]
    # Failure rates with Wilson intervals and sample counts.
    assert "Wilson 95%" in out
    assert any(line.lstrip().startswith("2.1.0") and "[" in line for line in out.splitlines())
    # The verdict, its reason, the samples still needed.
    assert "hold: " in out and "samples still needed" in out
    # The challenger's prompt diff against the stable prompt (the literal env of the Deployment).
    assert f"-{STABLE_PROMPT}" in out
    assert f"+{BETTER}" in out
    # Not a terminal: no colour codes; and never the connector token.
    assert "\x1b" not in out
    assert scenario.agentfield.token not in out

    # The same command as a kubectl plugin: kubectl finds kubectl-promptloop on PATH.
    plugin = cli(scenario, "status", "classifier", kubectl=True)
    assert plugin.returncode == 0, plugin.stderr
    assert "phase Progressing" in plugin.stdout and f"+{BETTER}" in plugin.stdout

    diff = cli(scenario, "diff", "classifier")
    assert diff.returncode == 0, diff.stderr
    lines = diff.stdout.splitlines()
    assert lines[0] == "--- stable 2.0.0"
    assert lines[1] == f"+++ {PROPOSAL} 2.1.0"
    assert f"-{STABLE_PROMPT}" in lines and f"+{BETTER}" in lines

    plugin_diff = cli(scenario, "diff", "classifier", "--proposal", PROPOSAL, kubectl=True)
    assert plugin_diff.returncode == 0, plugin_diff.stderr
    assert plugin_diff.stdout == diff.stdout


# -- approve


def test_approve_moves_a_rollout_awaiting_approval_to_the_ceiling(scenario: Scenario) -> None:
    scenario.setup(stable_failure_rate=0.30)
    scenario.start_operator()
    scenario.propose(PROPOSAL, "2.1.0", BETTER)
    scenario.wait_proposal_phase(PROPOSAL, "Rendered", timeout=30)
    assert scenario.agents is not None
    scenario.agents.register("2.1.0", 0.02)
    scenario.wait_proposal_phase(PROPOSAL, "AwaitingApproval", timeout=90)
    before = scenario.rollout()
    assert _status(before)["phase"] == "AwaitingApproval"
    assert _weight(before) < 50

    status = cli(scenario, "status", "classifier")
    assert status.returncode == 0, status.stderr
    assert "phase AwaitingApproval" in status.stdout
    assert "promptloop approve classifier" in status.stdout

    approved = cli(scenario, "approve", "classifier", "--wait", "10")
    assert approved.returncode == 0, approved.stderr + approved.stdout
    out = approved.stdout
    assert f"approving {PROPOSAL}, the current canary of AgentRollout" in out
    assert f"set spec.approved=true on PromptProposal {scenario.namespace}/{PROPOSAL}" in out
    assert "to the ceiling 50%" in out
    assert "the operator set 2.1.0 to 50%" in out
    rollout = scenario.rollout()
    assert _weight(rollout) >= 50
    assert _status(rollout)["phase"] in ("Promoting", "Progressing", "Stable")
    proposal = scenario.proposal(PROPOSAL)
    assert proposal["spec"]["approved"] is True
    assert proposal["status"]["approval"]["approvedBy"] == "promptloop-cli"
    assert scenario.agents.weights()["2.1.0"] >= 5000

    # Promoted (the evidence is strong): approving again changes nothing and says why.
    scenario.wait_proposal_phase(PROPOSAL, "Promoted", timeout=60)
    again = cli(scenario, "approve", "classifier", "--proposal", PROPOSAL)
    assert again.returncode == 4
    assert "is Promoted" in again.stderr
    # The stable prompt now comes from the promoted challenger's ConfigMap (configMapKeyRef),
    # read as the operator reads it: the promoted proposal's prompt is the stable prompt.
    scenario.wait_rollout(lambda r: _status(r).get("stableVersion") == "2.1.0", "2.1.0 stable")
    same = cli(scenario, "diff", "classifier", "--proposal", PROPOSAL)
    assert same.returncode == 0, same.stderr
    assert same.stdout == "" and "identical to the stable prompt" in same.stderr


# -- reject, watched live


def test_reject_rolls_back_and_the_watch_view_follows(scenario: Scenario) -> None:
    _canary_holding(scenario)
    watcher = PtyProcess(
        [PROMPTLOOP, "status", "classifier", "-n", scenario.namespace, "-w", "--interval", "30"],
        _env(scenario),
    )
    try:
        watcher.read_until("Ctrl-C to quit", timeout=30)
        watcher.read_until("Progressing", timeout=10)

        rejected = cli(scenario, "reject", "classifier", "--reason", "too terse on refunds")
        assert rejected.returncode == 0, rejected.stderr + rejected.stdout
        out = rejected.stdout
        assert f"rejecting {PROPOSAL}, the current canary" in out
        assert 'promptloop.dev/rejected="true"' in out
        assert "The operator rolls back at once" in out

        # The watch redraws on the change (a watch on the rollout), long before its 30 s
        # interval would.
        watcher.read_until("RolledBack", timeout=10)
        assert watcher.interrupt() == 0  # Ctrl-C is how -w is meant to end
        assert b"Traceback" not in watcher.output
    finally:
        watcher.close()

    proposal = scenario.wait_proposal_phase(PROPOSAL, "Rejected", timeout=15)
    annotations = proposal["metadata"]["annotations"]
    assert annotations["promptloop.dev/rejected"] == "true"
    assert annotations["promptloop.dev/rejected-reason"] == "too terse on refunds"
    rollout = scenario.rollout()
    assert _status(rollout)["phase"] == "RolledBack"
    assert _status(rollout).get("canary") is None
    deployment = scenario.get("deployment", proposal["status"]["deploymentName"])
    assert deployment["spec"]["replicas"] == 0
    assert scenario.agents is not None
    assert scenario.agents.weights()["2.0.0"] == 10000

    # Nothing left to act on: clear refusals, distinct exit code, nothing written.
    no_canary = cli(scenario, "approve", "classifier")
    assert no_canary.returncode == 4
    assert "has no canary to approve (phase RolledBack" in no_canary.stderr
    finished = cli(scenario, "approve", "classifier", "--proposal", PROPOSAL)
    assert finished.returncode == 4
    assert "is Rejected" in finished.stderr
    assert scenario.proposal(PROPOSAL)["spec"].get("approved") is not True
    twice = cli(scenario, "reject", "classifier", "--proposal", PROPOSAL)
    assert twice.returncode == 4 and "already Rejected" in twice.stderr


def test_reject_withdraws_an_early_approval(scenario: Scenario) -> None:
    _canary_holding(scenario)
    approved = cli(scenario, "approve", "classifier")
    assert approved.returncode == 0, approved.stderr
    assert "skips no evidence" in approved.stdout  # not holding yet: no jump to the ceiling
    again = cli(scenario, "approve", "classifier")
    assert again.returncode == 0, again.stderr
    assert "already approved (spec.approved is true); nothing changed" in again.stdout
    scenario.wait_rollout(
        lambda r: bool((_status(r).get("canary") or {}).get("approved")), "approval recorded"
    )
    assert _weight(scenario.rollout()) == 10
    rejected = cli(scenario, "reject", "classifier", "--wait", "15")
    assert rejected.returncode == 0, rejected.stderr + rejected.stdout
    assert "spec.approved=false (the approval is withdrawn)" in rejected.stdout
    assert "the operator rejected it" in rejected.stdout
    proposal = scenario.proposal(PROPOSAL)
    assert proposal["spec"]["approved"] is False
    assert proposal["status"]["phase"] == "Rejected"


# -- errors


def test_clear_errors_and_exit_codes(scenario: Scenario, tmp_path: Path) -> None:
    scenario.setup()  # no operator: the rollout is never reconciled, it has no canary

    missing = cli(scenario, "status", "nope")
    assert missing.returncode == 3
    assert f"AgentRollout nope not found in namespace {scenario.namespace}" in missing.stderr

    fresh = cli(scenario, "status", "classifier")
    assert fresh.returncode == 0, fresh.stderr
    assert "not reconciled yet" in fresh.stdout and "no canary" in fresh.stdout

    no_canary = cli(scenario, "reject", "classifier")
    assert no_canary.returncode == 4 and "has no canary to reject" in no_canary.stderr
    no_proposal = cli(scenario, "approve", "classifier", "--proposal", "ghost")
    assert no_proposal.returncode == 3 and "PromptProposal ghost not found" in no_proposal.stderr
    assert cli(scenario, "diff", "classifier").returncode == 4

    # Another rollout's proposal is refused, not approved.
    scenario.apply(
        {
            "apiVersion": "promptloop.dev/v1alpha1",
            "kind": "PromptProposal",
            "metadata": {"name": "elsewhere"},
            "spec": {"rolloutRef": {"name": "other"}, "version": "3.0.0", "systemPrompt": "x"},
        }
    )
    foreign = cli(scenario, "approve", "classifier", "--proposal", "elsewhere")
    assert foreign.returncode == 4 and "belongs to AgentRollout other" in foreign.stderr
    assert "approved" not in scenario.get("promptproposal", "elsewhere")["spec"]

    # An API server that does not answer: a one-line error, exit 1, and no credentials shown.
    kubeconfig = tmp_path / "unreachable"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: do-not-print-me}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
    )
    started = time.monotonic()
    down = subprocess.run(
        [PROMPTLOOP, "status", "classifier", "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        env=_env(scenario),
        timeout=60,
    )
    assert down.returncode == 1
    assert "cannot reach the Kubernetes API server at https://127.0.0.1:1" in down.stderr
    assert "do-not-print-me" not in down.stdout + down.stderr
    assert "Traceback" not in down.stderr
    assert time.monotonic() - started < 30

    # Without a terminal, -w prints once and says so.
    once = cli(scenario, "status", "classifier", "-w")
    assert once.returncode == 0 and "printing the view once" in once.stderr
