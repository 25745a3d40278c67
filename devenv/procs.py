"""Processes of the local environment, handled by PID: free ports, liveness, stopping.

Every service the development environment starts (the control plane's components, the AgentField
stand-in, the model simulator, the demo's agents) is recorded by PID and stopped by PID, never by
name, so nothing else on the machine is touched; a PID is signalled only while it still runs what
we started (its command line still carries our marker), so a recycled PID is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

__all__ = ["alive", "free_port", "runs", "stop_pid"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: exists and is not a zombie (exited, not yet reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The state follows the command name, which may itself contain ") ".
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def runs(pid: int, marker: bytes) -> bool:
    """Whether ``pid`` runs a command line containing ``marker``.

    Without procfs (macOS) the PID file, which only we write, is trusted.
    """
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not Path("/proc/self").exists():
        return alive(pid)
    try:
        return alive(pid) and marker in cmdline.read_bytes()
    except OSError:
        return False


def stop_pid(pid: int, *, grace: float = 10.0, marker: bytes | None = None) -> bool:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns whether the process was ours.

    Parameters
    ----------
    pid
        The process.
    grace
        Seconds between SIGTERM and SIGKILL.
    marker
        When given, only a process whose command line contains it is signalled.
    """
    if not alive(pid) or (marker is not None and not runs(pid, marker)):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return True
