"""Capture the status the operator writes, phase by phase, for tests that must not invent it.

The Argo CD health checks (``manifests/argocd/health/*.lua``) are tested against real status
objects, not hand-written ones: with ``PROMPTLOOP_CAPTURE_STATUS=1`` the integration tests watch
every AgentRollout and PromptProposal in their namespace and write the first object seen in each
phase to ``tests/data/status/<kind>-<Phase>.json`` (the set in git was captured that way; re-run
``PROMPTLOOP_CAPTURE_STATUS=1 make test-integration`` after a status change and commit the diff).

Only what a health check reads is kept: kind, name, generation, status. Spec (URLs, prompts) and
managed fields are dropped so that the files stay small and free of per-run noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["CAPTURE_ENV", "STATUS_DIR", "StatusRecorder", "capture_enabled", "slim"]

CAPTURE_ENV = "PROMPTLOOP_CAPTURE_STATUS"
STATUS_DIR = Path(__file__).resolve().parents[1] / "data" / "status"
_PLURALS = ("agentrollouts.promptloop.dev", "promptproposals.promptloop.dev")
# Phases already written in this session: the first test to reach a phase provides its file.
_WRITTEN: set[str] = set()
_WRITTEN_LOCK = threading.Lock()


def capture_enabled() -> bool:
    """Whether this run should write captured statuses."""
    return os.environ.get(CAPTURE_ENV, "") not in ("", "0", "false", "no")


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """The parts of an object a health check reads."""
    metadata = obj.get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {"name": metadata.get("name"), "generation": metadata.get("generation")},
        "status": obj.get("status") or {},
    }


class StatusRecorder:
    """Watch both kinds in one namespace; on exit, write one file per newly seen phase."""

    def __init__(self, kubectl: str, kubeconfig: Path, namespace: str, out_dir: Path) -> None:
        self.kubectl = kubectl
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.out_dir = out_dir
        self.seen: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen[str]] = []
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> StatusRecorder:
        for plural in _PLURALS:
            proc = subprocess.Popen(
                [
                    self.kubectl,
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "get",
                    plural,
                    "-n",
                    self.namespace,
                    "--watch",
                    "-o",
                    "json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self._procs.append(proc)
            thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        # kubectl prints each watched object as a pretty-printed JSON document, back to back.
        decoder = json.JSONDecoder()
        buffer = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            buffer += line
            while True:
                stripped = buffer.lstrip()
                if not stripped:
                    buffer = ""
                    break
                try:
                    obj, end = decoder.raw_decode(stripped)
                except ValueError:
                    break
                buffer = stripped[end:]
                self.observe(obj)

    def observe(self, obj: dict[str, Any]) -> None:
        """Record an object if its phase is new for this recorder."""
        if obj.get("kind") == "List":
            for item in obj.get("items") or []:
                self.observe(item)
            return
        phase = (obj.get("status") or {}).get("phase")
        if not phase or not obj.get("kind"):
            return
        key = f"{str(obj['kind']).lower()}-{phase}"
        with self._lock:
            self.seen.setdefault(key, slim(obj))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in self._procs:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for thread in self._threads:
            thread.join(timeout=5)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with self._lock, _WRITTEN_LOCK:
            for key, obj in sorted(self.seen.items()):
                if key in _WRITTEN:
                    continue
                _WRITTEN.add(key)
                (self.out_dir / f"{key}.json").write_text(json.dumps(obj, indent=2) + "\n")
