"""``promptloop dev agentfield up|down|serve``: run the AgentField STAND-IN on loopback.

The real control plane cannot be built here (the Go module proxy answers 403 for
``github.com/Agent-Field/agentfield/control-plane``), so this starts
:mod:`devenv.agentfield_standin` instead and says so every time. ``up`` starts it in
the background on a free loopback port with a random connector token, waits for ``/health``,
and writes ``.cluster/agentfield.env`` (``AGENTFIELD_URL``, ``AGENTFIELD_CONNECTOR_TOKEN``,
``AGENTFIELD_STANDIN=1``) and ``.cluster/agentfield.pid``; it reuses a healthy one already
running. ``down`` stops it by its recorded PID (never by name) and waits until the port is free.
``serve`` runs it in the foreground.

Pytest fixtures use the same code through :func:`start_agentfield` and :func:`stop_agentfield`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devenv.agentfield_standin import STANDIN_NAME, STANDIN_REASON
from devenv.procs import alive

__all__ = [
    "ENV_FILE",
    "LOG_FILE",
    "PID_FILE",
    "AgentFieldError",
    "AgentFieldHandle",
    "default_state_dir",
    "down",
    "is_healthy",
    "project_root",
    "read_handle",
    "register",
    "start_agentfield",
    "stop_agentfield",
    "up",
]

ENV_FILE = "agentfield.env"
PID_FILE = "agentfield.pid"
LOG_FILE = "agentfield.log"
_READY_FILE = "agentfield.ready.json"
_MODULE = "devenv.agentfield_standin"

# Popen objects of stand-ins this process started, so that stopping one also reaps it.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class AgentFieldError(RuntimeError):
    """The stand-in could not be started, reached or stopped."""


@dataclass(frozen=True)
class AgentFieldHandle:
    """A running stand-in: where it listens, its connector token and its PID.

    The token is left out of ``repr`` so that a handle printed in a test failure or a log line
    does not leak it.
    """

    url: str
    token: str = field(repr=False)
    pid: int
    state_dir: Path
    standin: bool = True
    reused: bool = field(default=False, compare=False)

    def env(self) -> dict[str, str]:
        """The variables ``.cluster/agentfield.env`` holds."""
        return {
            "AGENTFIELD_URL": self.url,
            "AGENTFIELD_CONNECTOR_TOKEN": self.token,
            "AGENTFIELD_STANDIN": "1",
        }


def project_root() -> Path:
    """The checkout this package runs from (the directory holding pyproject.toml), else cwd."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").exists() and (parent / "operator").is_dir():
            return parent
    return Path.cwd()


def default_state_dir() -> Path:
    """``.cluster/`` in the checkout (git-ignored), or ``$PROMPTLOOP_CLUSTER_DIR``."""
    return Path(os.environ.get("PROMPTLOOP_CLUSTER_DIR", project_root() / ".cluster"))


def _say(message: str) -> None:
    print(f"[agentfield stand-in] {message}", flush=True)


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    return alive(pid)


def _is_standin(pid: int) -> bool:
    """Whether ``pid`` runs the stand-in, so a recycled PID is never signalled."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        # No procfs (macOS): trust the PID file, which only this module writes.
        return _alive(pid)
    with contextlib.suppress(OSError):
        return _MODULE.encode() in cmdline.read_bytes()
    return False


def _get_health(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            body = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def is_healthy(url: str) -> bool:
    """Whether ``url`` answers ``/health`` as the stand-in.

    Parameters
    ----------
    url
        Base URL of the stand-in.

    Returns
    -------
    bool
        True when ``/health`` answers 200 with ``"standin": true`` and status healthy.
    """
    body = _get_health(url)
    return bool(body and body.get("standin") is True and body.get("status") == "healthy")


def _port_closed(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 0.5):
            return False
    except OSError:
        return True


def _write_state(handle: AgentFieldHandle) -> None:
    state_dir = handle.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    env_path = state_dir / ENV_FILE
    # The file holds the token: create it private before writing.
    fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as env_file:
        env_file.writelines(f"{key}={value}\n" for key, value in handle.env().items())
    (state_dir / PID_FILE).write_text(f"{handle.pid}\n")


def _remove_state(state_dir: Path) -> None:
    for name in (ENV_FILE, PID_FILE, _READY_FILE):
        (state_dir / name).unlink(missing_ok=True)


def read_handle(state_dir: Path | None = None) -> AgentFieldHandle | None:
    """The stand-in recorded in ``state_dir``, whether or not it still runs.

    Parameters
    ----------
    state_dir
        Where ``agentfield.env`` and ``agentfield.pid`` live (default ``.cluster``).

    Returns
    -------
    AgentFieldHandle or None
        None when either file is missing or malformed.
    """
    state_dir = state_dir or default_state_dir()
    try:
        lines = (state_dir / ENV_FILE).read_text().splitlines()
        pid = int((state_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    if "AGENTFIELD_URL" not in env or "AGENTFIELD_CONNECTOR_TOKEN" not in env:
        return None
    return AgentFieldHandle(
        url=env["AGENTFIELD_URL"],
        token=env["AGENTFIELD_CONNECTOR_TOKEN"],
        pid=pid,
        state_dir=state_dir,
    )


def start_agentfield(
    state_dir: Path,
    *,
    timeout: float = 20.0,
    agent_call_timeout: float = 90.0,
) -> AgentFieldHandle:
    """Start the stand-in in the background, or reuse the healthy one recorded in ``state_dir``.

    Parameters
    ----------
    state_dir
        Where to write ``agentfield.env``, ``agentfield.pid`` and ``agentfield.log``.
    timeout
        Seconds to wait for ``/health``.
    agent_call_timeout
        Seconds the stand-in's execute route waits for an agent.

    Returns
    -------
    AgentFieldHandle
        URL, token and PID; ``reused`` tells whether it was already running.

    Raises
    ------
    AgentFieldError
        When the process exits early or ``/health`` does not answer within ``timeout``.
    """
    state_dir = Path(state_dir)
    recorded = read_handle(state_dir)
    if recorded is not None and _is_standin(recorded.pid) and is_healthy(recorded.url):
        return AgentFieldHandle(
            url=recorded.url,
            token=recorded.token,
            pid=recorded.pid,
            state_dir=state_dir,
            reused=True,
        )
    if recorded is not None and _alive(recorded.pid) and _is_standin(recorded.pid):
        # Recorded but unhealthy: stop it rather than leave a second one running.
        _stop_pid(recorded.pid)
    _remove_state(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)

    token = secrets.token_urlsafe(32)
    ready = state_dir / _READY_FILE
    # The token goes through the environment, not argv, where `ps` would show it. Port 0 lets
    # the child bind a free port itself (no race between probing and binding); it reports the
    # port through the ready file.
    env = dict(os.environ, AGENTFIELD_CONNECTOR_TOKEN=token)
    with (state_dir / LOG_FILE).open("ab") as log_file:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                _MODULE,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--ready-file",
                str(ready),
                "--agent-call-timeout",
                str(agent_call_timeout),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            # Its own session: `up` returns while the stand-in keeps running, and it is stopped
            # by PID, never by a signal to our process group.
            start_new_session=True,
        )
    _CHILDREN[child.pid] = child

    deadline = time.monotonic() + timeout
    url: str | None = None
    while time.monotonic() < deadline:
        if child.poll() is not None:
            _CHILDREN.pop(child.pid, None)
            raise AgentFieldError(
                f"the stand-in exited with {child.returncode} before it was ready:\n"
                + _log_tail(state_dir)
            )
        if url is None and ready.exists():
            with contextlib.suppress(OSError, ValueError, KeyError):
                url = str(json.loads(ready.read_text())["url"])
        if url is not None and is_healthy(url):
            handle = AgentFieldHandle(url=url, token=token, pid=child.pid, state_dir=state_dir)
            _write_state(handle)
            return handle
        time.sleep(0.05)
    _stop_pid(child.pid)
    raise AgentFieldError(
        f"the stand-in did not answer /health within {timeout:.0f}s:\n" + _log_tail(state_dir)
    )


def _log_tail(state_dir: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join((state_dir / LOG_FILE).read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def _stop_pid(pid: int, grace: float = 5.0) -> None:
    if not _alive(pid):
        _CHILDREN.pop(pid, None)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=5)
        return
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def stop_agentfield(handle: AgentFieldHandle, *, grace: float = 5.0) -> None:
    """Stop a stand-in by PID, wait until its port is free, remove its state files.

    Parameters
    ----------
    handle
        What :func:`start_agentfield` returned.
    grace
        Seconds between SIGTERM and SIGKILL.

    Raises
    ------
    AgentFieldError
        When the port is still accepting connections afterwards.
    """
    if _is_standin(handle.pid):
        _stop_pid(handle.pid, grace)
    deadline = time.monotonic() + 5
    while not _port_closed(handle.url):
        if time.monotonic() > deadline:
            raise AgentFieldError(f"{handle.url} still accepts connections after stopping")
        time.sleep(0.05)
    recorded = read_handle(handle.state_dir)
    if recorded is None or recorded.pid == handle.pid:
        _remove_state(handle.state_dir)


def up(state_dir: Path | None = None) -> AgentFieldHandle:
    """Start (or reuse) the stand-in for the local environment and say that it is a stand-in.

    Parameters
    ----------
    state_dir
        Default ``.cluster``.

    Returns
    -------
    AgentFieldHandle
        The running stand-in.
    """
    state_dir = state_dir or default_state_dir()
    _say(f"this is a STAND-IN ({STANDIN_NAME}), not the real AgentField control plane: ")
    _say(f"  {STANDIN_REASON}.")
    handle = start_agentfield(state_dir)
    verb = "already running" if handle.reused else "started"
    _say(f"{verb} at {handle.url} (pid {handle.pid}); env in {state_dir / ENV_FILE}")
    return handle


def down(state_dir: Path | None = None) -> bool:
    """Stop the stand-in recorded in ``state_dir``.

    Parameters
    ----------
    state_dir
        Default ``.cluster``.

    Returns
    -------
    bool
        True when one was recorded (and is now stopped), False when none was.
    """
    state_dir = state_dir or default_state_dir()
    handle = read_handle(state_dir)
    if handle is None:
        _remove_state(state_dir)
        _say("none running")
        return False
    stop_agentfield(handle)
    _say(f"stopped (pid {handle.pid}); {handle.url} is free")
    return True


# ------------------------------------------------------------------------------------------------
# command line


def _cmd_up(args: argparse.Namespace) -> int:
    try:
        up()
    except AgentFieldError as error:
        _say(str(error))
        return 1
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    try:
        down()
    except AgentFieldError as error:
        _say(str(error))
        return 1
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from devenv import agentfield_standin

    _say(f"this is a STAND-IN ({STANDIN_NAME}), not the real AgentField control plane: ")
    _say(f"  {STANDIN_REASON}.")
    argv = ["--host", args.host, "--port", str(args.port)]
    if args.connector_token:
        argv += ["--connector-token", args.connector_token]
    return agentfield_standin.main(argv)


def register(dev_subparsers: Any) -> None:
    """Add ``promptloop dev agentfield up|down|serve``.

    Parameters
    ----------
    dev_subparsers
        The ``dev`` command's subparsers.
    """
    parser = dev_subparsers.add_parser(
        "agentfield",
        help="the AgentField control-plane STAND-IN (the real module is refused by the proxy)",
    )
    actions = parser.add_subparsers(dest="agentfield_action", metavar="ACTION", required=True)
    actions.add_parser(
        "up", help="start it in the background; write .cluster/agentfield.env"
    ).set_defaults(func=_cmd_up)
    actions.add_parser("down", help="stop it by its recorded PID").set_defaults(func=_cmd_down)
    serve = actions.add_parser("serve", help="run it in the foreground")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default loopback only)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument(
        "--connector-token",
        default=None,
        help="connector token (default $AGENTFIELD_CONNECTOR_TOKEN; none disables the connector)",
    )
    serve.set_defaults(func=_cmd_serve)
