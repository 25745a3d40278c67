"""``promptloop status <rollout> --wait``: what a CI pipeline waits for, as an exit code.

Pure: given the rollout and its proposals as read, which proposal is being waited on, and has it
finished? The command polls (on the rollout's watch) until :func:`outcome` answers or the timeout
passes.

=====  ======================================================================================
0      the proposal was promoted (``Promoted``, or already ``Superseded`` by a later one)
1      it was rolled back, rejected or found invalid, or the rollout is ``Invalid``
2      the timeout passed first (also a usage error, as for every command)
=====  ======================================================================================

The proposal waited on is ``--proposal`` if given, else the one in the canary, else the newest
proposal that has not finished (one just applied and not yet seen by the operator counts), else
the newest one of all (so a pipeline that starts late still gets the answer). It is chosen
once: when the canary's proposal is promoted and the next queued one starts, the command reports
the first one's outcome, not the second's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from promptloop.api import AgentRollout, PromptProposal, ProposalPhase, RolloutPhase

__all__ = ["EXIT_FAILED", "EXIT_PROMOTED", "EXIT_TIMEOUT", "Outcome", "choose", "outcome"]

EXIT_PROMOTED = 0
EXIT_FAILED = 1
EXIT_TIMEOUT = 2

_PROMOTED = frozenset({ProposalPhase.PROMOTED, ProposalPhase.SUPERSEDED})
_FAILED = frozenset({ProposalPhase.ROLLED_BACK, ProposalPhase.REJECTED, ProposalPhase.INVALID})
_FINISHED = _PROMOTED | _FAILED


@dataclass(frozen=True)
class Outcome:
    """How the wait ends: the exit code and the line printed."""

    code: int
    message: str


def choose(rollout: AgentRollout, proposals: Sequence[PromptProposal]) -> str | None:
    """The proposal to wait on when ``--proposal`` is not given (None: none exists yet)."""
    names = {p.metadata.name for p in proposals}
    canary = rollout.status.canary
    if canary is not None and canary.proposal in names:
        return canary.proposal
    ordered = sorted(
        proposals, key=lambda p: (p.metadata.creation_timestamp or "", p.metadata.name)
    )
    open_ = [p for p in ordered if p.status.phase not in _FINISHED]
    if open_:
        return open_[-1].metadata.name
    return ordered[-1].metadata.name if ordered else None


def outcome(rollout: AgentRollout, proposal: PromptProposal | None) -> Outcome | None:
    """The wait's end, or None to keep waiting."""
    name = rollout.metadata.name
    if rollout.status.phase is RolloutPhase.INVALID:
        return Outcome(EXIT_FAILED, f"AgentRollout {name} is Invalid: {rollout.status.message}")
    if proposal is None:
        return None
    phase = proposal.status.phase
    if phase not in _FINISHED:
        return None
    assert phase is not None
    text = (
        f"PromptProposal {proposal.metadata.name} ({proposal.spec.version}) {phase.value}: "
        f"{proposal.status.message or ''}"
    ).rstrip(": ")
    return Outcome(EXIT_PROMOTED if phase in _PROMOTED else EXIT_FAILED, text)
