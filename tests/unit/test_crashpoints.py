"""The chaos suite's crash point: off by default, fires once at the armed effect's n-th run."""

from __future__ import annotations

import signal

import pytest

from promptloop import crashpoints
from promptloop.crashpoints import CrashPoint


def test_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(crashpoints.ENV, raising=False)
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr(crashpoints.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    point = CrashPoint.from_environment()
    for _ in range(5):
        point.after("WriteRolloutStatus")
    assert kills == []


def test_fires_once_after_the_nth_armed_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(crashpoints.ENV, "WriteRolloutStatus:2")
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr(crashpoints.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    point = CrashPoint.from_environment()
    point.after("AssertWeights")
    point.after("WriteRolloutStatus")
    assert kills == []
    point.after("WriteRolloutStatus")
    assert [sig for _, sig in kills] == [signal.SIGKILL]
    point.after("WriteRolloutStatus")
    assert len(kills) == 1
