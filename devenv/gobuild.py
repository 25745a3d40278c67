"""Running the Go toolchain for the local environment's builds (control plane, helm).

Builds take minutes on two cores, so a heartbeat reports progress every 30 s; the toolchain is
pinned to the installed one (``GOTOOLCHAIN=local``) so that a module asking for a newer Go fails
loudly instead of downloading a toolchain behind our back.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["go_env", "run_go"]


def go_env() -> dict[str, str]:
    """The environment for ``go``: the local toolchain, static binaries."""
    env = dict(os.environ)
    env["GOTOOLCHAIN"] = "local"
    env["CGO_ENABLED"] = "0"
    return env


def run_go(
    args: Sequence[str],
    *,
    cwd: Path | str,
    label: str,
    log_path: Path,
    say: Callable[[str], None],
    error: type[Exception],
    env: dict[str, str] | None = None,
) -> str:
    """Run ``go ARGS``, logging to ``log_path`` and saying how far it got every 30 s.

    Parameters
    ----------
    args
        Arguments after ``go``.
    cwd
        Working directory (the module for ``go build``).
    label
        What is being built, for the progress lines.
    log_path
        Where the command's output goes.
    say
        How to print a progress line.
    error
        The exception type raised on failure (with the tail of the log).
    env
        The environment (default :func:`go_env`).

    Returns
    -------
    str
        The command's output.
    """
    started = time.monotonic()
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(30):
            lines = 0
            with contextlib.suppress(OSError), log_path.open() as log:
                lines = sum(1 for _ in log)
            say(f"  … {label}: {time.monotonic() - started:.0f}s, {lines} packages so far")

    ticker = threading.Thread(target=heartbeat, daemon=True)
    ticker.start()
    try:
        with log_path.open("w") as log:
            proc = subprocess.run(
                ["go", *args], cwd=cwd, env=env or go_env(), stdout=log, stderr=subprocess.STDOUT
            )
    finally:
        stop.set()
    output = log_path.read_text()
    if proc.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        raise error(f"`go {' '.join(args)}` failed ({label}):\n{tail}")
    say(f"  {label}: done in {time.monotonic() - started:.0f}s")
    return output
