"""Process helpers of the local environment: liveness (zombies are not alive), stopping by PID
with a marker guard, free ports."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

from devenv.procs import alive, free_port, runs, stop_pid

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)  # promptloop-procs-test"]


def test_alive_and_stopped() -> None:
    child = subprocess.Popen(SLEEPER)
    try:
        assert alive(child.pid)
        assert runs(child.pid, b"promptloop-procs-test")
        assert not runs(child.pid, b"something-else")
        assert stop_pid(child.pid, grace=5, marker=b"promptloop-procs-test")
        # Exited but not reaped: a zombie is not alive.
        assert not alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not alive(child.pid)


def test_a_foreign_pid_is_never_signalled() -> None:
    child = subprocess.Popen(SLEEPER)
    try:
        assert not stop_pid(child.pid, grace=1, marker=b"not-this-process")
        assert child.poll() is None
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def test_a_process_ignoring_sigterm_is_killed() -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
        assert stop_pid(stubborn.pid, grace=0.3)
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
    finally:
        if stubborn.poll() is None:
            stubborn.kill()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
