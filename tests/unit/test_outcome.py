"""Which proposal `status --wait` waits on, and the exit code each ending maps to."""

from __future__ import annotations

from typing import Any

import pytest

from promptloop.api import AgentRollout, PromptProposal
from promptloop.outcome import EXIT_FAILED, EXIT_PROMOTED, choose, outcome


def _rollout(phase: str = "Progressing", canary: str | None = None) -> AgentRollout:
    status: dict[str, Any] = {"phase": phase, "message": "m"}
    if canary:
        status["canary"] = {"proposal": canary}
    return AgentRollout.model_validate(
        {
            "metadata": {"name": "classifier"},
            "spec": {
                "agent": {"nodeId": "n"},
                "stable": {"version": "1.0.0", "deploymentName": "d"},
                "router": {
                    "agentfield": {"url": "http://x", "tokenSecretRef": {"name": "s", "key": "k"}}
                },
                "metrics": {"http": {"url": "http://x/{{ version }}"}},
            },
            "status": status,
        }
    )


def _proposal(name: str, created: str, phase: str | None = None) -> PromptProposal:
    return PromptProposal.model_validate(
        {
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"rolloutRef": {"name": "classifier"}, "version": "2.0.0", "systemPrompt": "p"},
            "status": {"phase": phase, "message": "because"},
        }
    )


def test_choose_prefers_the_canary_then_the_newest_open_then_the_newest() -> None:
    old = _proposal("old", "2026-01-01T00:00:00Z", "Promoted")
    new = _proposal("new", "2026-01-02T00:00:00Z", None)
    queued = _proposal("queued", "2026-01-03T00:00:00Z", "Pending")
    assert choose(_rollout(canary="new"), [old, new, queued]) == "new"
    assert choose(_rollout(), [old, new, queued]) == "queued"
    assert choose(_rollout(), [old]) == "old"
    assert choose(_rollout(), []) is None


@pytest.mark.parametrize(
    ("phase", "code"),
    [
        ("Promoted", EXIT_PROMOTED),
        ("Superseded", EXIT_PROMOTED),
        ("RolledBack", EXIT_FAILED),
        ("Rejected", EXIT_FAILED),
        ("Invalid", EXIT_FAILED),
        ("Canary", None),
        ("AwaitingApproval", None),
        (None, None),
    ],
)
def test_outcome_per_phase(phase: str | None, code: int | None) -> None:
    ended = outcome(_rollout(), _proposal("pp", "2026-01-01T00:00:00Z", phase))
    assert (ended.code if ended else None) == code
    if ended is not None:
        assert ended.message == f"PromptProposal pp (2.0.0) {phase}: because"


def test_an_invalid_rollout_fails_the_wait_even_without_a_proposal() -> None:
    ended = outcome(_rollout(phase="Invalid"), None)
    assert ended is not None and ended.code == EXIT_FAILED
    assert ended.message == "AgentRollout classifier is Invalid: m"
    assert outcome(_rollout(), None) is None
