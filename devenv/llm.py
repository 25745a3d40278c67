"""``promptloop dev llm up|down|serve``: the deterministic model simulator as a local service.

``up`` starts :mod:`devenv.llm_simulator` in the background on a free loopback port,
waits (with a deadline) until ``/health`` answers, and writes two files into the state directory
(``.cluster`` by default, ``$PROMPTLOOP_STATE_DIR`` or ``--state-dir``):

- ``llm.env``: ``OPENAI_BASE_URL=http://127.0.0.1:PORT/v1``, ``OPENAI_API_KEY=simulator`` and
  ``OPENAI_MODEL=promptloop-simulator`` (``source`` it, or ``set -a; . .cluster/llm.env``);
- ``llm.pid``: the server's process id, which ``down`` stops.

``serve`` runs the simulator in the foreground. Test fixtures use :func:`start_llm_simulator` /
:func:`stop_llm_simulator` for a separate process, or
:func:`devenv.llm_simulator.run_in_thread` to run it inside the test process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devenv import llm_simulator
from devenv.procs import alive

__all__ = [
    "ENV_FILE",
    "PID_FILE",
    "SimulatorHandle",
    "default_state_dir",
    "register",
    "start_llm_simulator",
    "stop_llm_simulator",
]

ENV_FILE = "llm.env"
PID_FILE = "llm.pid"
PORT_FILE = "llm.port"
LOG_FILE = "llm.log"
SIMULATOR_API_KEY = "simulator"

# Simulators this process started, kept so that stopping one reaps it (no zombie, no "still
# running" warning when the Popen object would otherwise be collected).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class SimulatorHandle:
    """A simulator running as a separate process.

    Attributes
    ----------
    url
        Root URL, e.g. ``http://127.0.0.1:40123``.
    pid
        The process id.
    state_dir
        Where its env, pid and log files are.
    """

    url: str
    pid: int
    state_dir: Path

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``/v1``)."""
        return f"{self.url}/v1"

    def env(self) -> dict[str, str]:
        """The environment a client needs."""
        return {
            "OPENAI_BASE_URL": self.base_url,
            "OPENAI_API_KEY": SIMULATOR_API_KEY,
            "OPENAI_MODEL": llm_simulator.SIMULATOR_MODEL,
        }


def default_state_dir() -> Path:
    """``$PROMPTLOOP_STATE_DIR``, else ``.cluster`` in the working directory."""
    return Path(os.environ.get("PROMPTLOOP_STATE_DIR") or ".cluster")


def _healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            body = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return isinstance(body, dict) and body.get("simulator") == "deterministic"


def _is_simulator(pid: int) -> bool:
    # Guards against a recycled pid: only a process running the simulator module is ours.
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return b"devenv.llm_simulator" in cmdline.read_bytes()
    except OSError:
        return alive(pid)


def _running(state_dir: Path) -> SimulatorHandle | None:
    pid_path, env_path = state_dir / PID_FILE, state_dir / ENV_FILE
    if not pid_path.exists() or not env_path.exists():
        return None
    try:
        pid = int(pid_path.read_text().strip())
        env = dict(line.split("=", 1) for line in env_path.read_text().splitlines() if "=" in line)
        url = env["OPENAI_BASE_URL"].removesuffix("/v1")
    except (OSError, ValueError, KeyError):
        return None
    if alive(pid) and _is_simulator(pid) and _healthy(url):
        return SimulatorHandle(url=url, pid=pid, state_dir=state_dir)
    return None


def start_llm_simulator(
    state_dir: Path | str | None = None, *, deadline_s: float = 20.0, mode: str | None = None
) -> SimulatorHandle:
    """Start the simulator in the background (or return the one already running there).

    Parameters
    ----------
    state_dir
        Where ``llm.env``, ``llm.pid`` and ``llm.log`` go (default :func:`default_state_dir`).
    deadline_s
        How long to wait for ``/health``.
    mode
        Initial mode (see :mod:`devenv.llm_simulator`).

    Returns
    -------
    SimulatorHandle
        Its URL and pid.

    Raises
    ------
    RuntimeError
        When it does not become healthy before the deadline (it is stopped then).
    """
    state = Path(state_dir) if state_dir is not None else default_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    existing = _running(state)
    if existing is not None:
        return existing
    port_file = state / PORT_FILE
    port_file.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "devenv.llm_simulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--port-file",
        str(port_file),
    ]
    if mode:
        command += ["--mode", mode]
    with open(state / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # survives the shell that ran `up`
        )
    give_up = time.monotonic() + deadline_s
    url = None
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RuntimeError(
                f"the LLM simulator exited with {process.returncode}; see {state / LOG_FILE}"
            )
        if url is None and port_file.exists():
            text = port_file.read_text().strip()
            url = f"http://127.0.0.1:{text}" if text else None
        if url is not None and _healthy(url, timeout=0.5):
            handle = SimulatorHandle(url=url, pid=process.pid, state_dir=state)
            _write_state(handle)
            _CHILDREN[process.pid] = process
            return handle
        time.sleep(0.05)  # polling a condition, with a deadline
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    raise RuntimeError(f"the LLM simulator was not healthy within {deadline_s:g} s")


def _write_state(handle: SimulatorHandle) -> None:
    env = "".join(f"{key}={value}\n" for key, value in handle.env().items())
    for name, text in ((ENV_FILE, env), (PID_FILE, f"{handle.pid}\n")):
        tmp = handle.state_dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(handle.state_dir / name)


def stop_llm_simulator(
    handle: SimulatorHandle | None = None,
    *,
    state_dir: Path | str | None = None,
    deadline_s: float = 10.0,
) -> bool:
    """Stop a background simulator by its pid and remove its state files.

    Parameters
    ----------
    handle
        The simulator (default: the one recorded in ``state_dir``).
    state_dir
        Used when no handle is given.
    deadline_s
        How long SIGTERM gets before SIGKILL.

    Returns
    -------
    bool
        Whether a process was stopped.
    """
    state = handle.state_dir if handle else Path(state_dir or default_state_dir())
    pid: int | None = handle.pid if handle else None
    if pid is None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((state / PID_FILE).read_text().strip())
    stopped = False
    if pid is not None and alive(pid) and _is_simulator(pid):
        os.kill(pid, signal.SIGTERM)
        give_up = time.monotonic() + deadline_s
        while alive(pid) and time.monotonic() < give_up:
            time.sleep(0.05)  # polling a condition, with a deadline
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped = True
    child = _CHILDREN.pop(pid, None) if pid is not None else None
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=deadline_s)
    for name in (PID_FILE, ENV_FILE, PORT_FILE):
        (state / name).unlink(missing_ok=True)
    return stopped


def _up(args: argparse.Namespace) -> int:
    try:
        handle = start_llm_simulator(args.state_dir, deadline_s=args.deadline, mode=args.mode)
    except RuntimeError as error:
        print(f"dev llm up: {error}", file=sys.stderr)
        return 1
    print(f"LLM simulator (deterministic, not a model) at {handle.base_url}, pid {handle.pid}")
    print(f"environment in {handle.state_dir / ENV_FILE}:")
    for key, value in handle.env().items():
        print(f"  {key}={value}")
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = stop_llm_simulator(state_dir=args.state_dir)
    print("LLM simulator stopped" if stopped else "no LLM simulator was running")
    return 0


def _serve(args: argparse.Namespace) -> int:
    state = llm_simulator.SimulatorState()
    if args.mode:
        state.set_mode(args.mode)
    asyncio.run(llm_simulator.serve(args.host, args.port, port_file=args.port_file, state=state))
    return 0


def register(dev_subparsers: Any) -> None:
    """Add ``llm`` with ``up``, ``down`` and ``serve`` to ``promptloop dev``."""
    llm = dev_subparsers.add_parser(
        "llm", help="the deterministic OpenAI-compatible model simulator"
    )
    actions = llm.add_subparsers(dest="llm_command", metavar="ACTION")
    llm.set_defaults(func=lambda _args: (llm.print_help(), 2)[1])

    up = actions.add_parser("up", help="start it in the background; writes .cluster/llm.env")
    up.add_argument("--state-dir", type=Path, default=None, help="default: .cluster")
    up.add_argument("--deadline", type=float, default=20.0, help="seconds to become healthy")
    up.add_argument("--mode", choices=llm_simulator.MODES, default=None, help="initial mode")
    up.set_defaults(func=_up)

    down = actions.add_parser("down", help="stop the background simulator")
    down.add_argument("--state-dir", type=Path, default=None, help="default: .cluster")
    down.set_defaults(func=_down)

    serve = actions.add_parser("serve", help="run it in the foreground")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    serve.add_argument("--port-file", type=Path, default=None, help="write the bound port here")
    serve.add_argument("--mode", choices=llm_simulator.MODES, default=None, help="initial mode")
    serve.set_defaults(func=_serve)
