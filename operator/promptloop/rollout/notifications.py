"""Which transitions to announce, and the outbox that makes each announcement happen once.

Pure functions over statuses. A pass compares the statuses it read with the ones it is about to
write; each proposal that *entered* ``AwaitingApproval``, ``Promoted``, ``RolledBack``/``Rejected``
or ``Invalid``, and a rollout that entered ``Invalid``, becomes a :class:`NotificationRecord` with
one ``Pending`` delivery per sink. The record goes into the rollout's status with the rest of the
pass's intent (before anything is sent); the reconciler then delivers in the background and marks
each delivery ``Sent`` or ``Failed``.

Once per transition, by construction:

* a record's id is derived from the transition (event, proposal name and uid, or the time a
  rollout became invalid), and :func:`merge` never adds an id that is already recorded, so a pass
  replayed after a crash (which re-detects the same transition) adds nothing;
* a delivery marked ``Sent`` or ``Failed`` is never attempted again; one still ``Pending`` after a
  restart is (at least once: the receiver sees the same ``X-Promptloop-Delivery`` id twice only
  if the operator died between sending and recording).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from promptloop.api import (
    AgentRolloutStatus,
    PromptProposal,
    PromptProposalStatus,
    ProposalPhase,
    RolloutPhase,
)
from promptloop.api.notifications import (
    NOTIFICATION_LIMIT,
    DeliveryState,
    NotificationDelivery,
    NotificationEvent,
    NotificationEvidence,
    NotificationRecord,
)
from promptloop.rollout.phases import iso

__all__ = [
    "Sink",
    "approve_commands",
    "detect",
    "merge",
    "pending",
    "record_attempt",
]

_EVENT_OF_PHASE: dict[ProposalPhase, NotificationEvent] = {
    ProposalPhase.AWAITING_APPROVAL: NotificationEvent.AWAITING_APPROVAL,
    ProposalPhase.PROMOTED: NotificationEvent.PROMOTED,
    ProposalPhase.ROLLED_BACK: NotificationEvent.ROLLED_BACK,
    ProposalPhase.REJECTED: NotificationEvent.ROLLED_BACK,
    ProposalPhase.INVALID: NotificationEvent.INVALID,
}


@dataclass(frozen=True)
class Sink:
    """A configured destination: its name (recorded in status) and the events it wants."""

    name: str
    events: frozenset[NotificationEvent]


def approve_commands(namespace: str, rollout: str, proposal: str) -> dict[str, str]:
    """The exact commands that approve or reject a proposal (plugin and plain kubectl)."""
    target = f"{rollout} -n {namespace} --proposal {proposal}"
    return {
        "approve": f"kubectl promptloop approve {target}",
        "reject": f"kubectl promptloop reject {target} --reason '<why>'",
        "approveWithKubectl": (
            f"kubectl patch promptproposal {proposal} -n {namespace} --type merge "
            '-p \'{"spec":{"approved":true}}\''
        ),
        "rejectWithKubectl": (
            f"kubectl annotate promptproposal {proposal} -n {namespace} "
            "promptloop.dev/rejected=true"
        ),
    }


def _evidence(status: AgentRolloutStatus) -> NotificationEvidence | None:
    counts = status.counts
    decision = status.decision
    if counts is None and decision is None:
        return None
    return NotificationEvidence(
        stable_total=counts.stable.total if counts and counts.stable else None,
        stable_failed=counts.stable.failed if counts and counts.stable else None,
        canary_total=counts.canary.total if counts and counts.canary else None,
        canary_failed=counts.canary.failed if counts and counts.canary else None,
        verdict=decision.verdict if decision else None,
        reason=decision.reason if decision else None,
        statistic=decision.statistic if decision else None,
    )


def detect(
    *,
    rollout_before: AgentRolloutStatus,
    rollout_after: AgentRolloutStatus,
    proposals: Sequence[PromptProposal],
    proposals_after: Mapping[str, PromptProposalStatus],
    sinks: Sequence[Sink],
    now: datetime,
) -> list[NotificationRecord]:
    """The records for the transitions between the statuses read and those about to be written.

    Parameters
    ----------
    rollout_before, rollout_after
        The rollout's status as read at the start of the pass, and as it will be written.
    proposals
        The proposals as read (their status is the "before").
    proposals_after
        New statuses of the proposals the pass changed, by name.
    sinks
        The configured sinks; a record gets a delivery for each sink that wants its event.
    now
        The pass's time.

    Returns
    -------
    list[NotificationRecord]
        New records, possibly already recorded (:func:`merge` drops those).
    """
    records: list[NotificationRecord] = []

    def add(record: NotificationRecord) -> None:
        deliveries = [
            NotificationDelivery(sink=sink.name) for sink in sinks if record.event in sink.events
        ]
        if deliveries:
            records.append(record.model_copy(update={"deliveries": deliveries}))

    evidence = _evidence(rollout_after)
    for proposal in proposals:
        name = proposal.metadata.name
        after = proposals_after.get(name)
        if after is None or after.phase is None or after.phase == proposal.status.phase:
            continue
        event = _EVENT_OF_PHASE.get(after.phase)
        if event is None:
            continue
        uid = (proposal.metadata.uid or "")[:8]
        add(
            NotificationRecord(
                id=f"{event.value}/{name}/{uid}" if uid else f"{event.value}/{name}",
                event=event,
                at=iso(now),
                proposal=name,
                version=proposal.spec.version,
                stable_version=rollout_after.stable_version,
                weight=after.weight,
                message=after.message or "",
                evidence=evidence if event is not NotificationEvent.INVALID else None,
            )
        )
    if (
        rollout_after.phase is RolloutPhase.INVALID
        and rollout_before.phase is not RolloutPhase.INVALID
    ):
        add(
            NotificationRecord(
                id=f"{NotificationEvent.INVALID.value}/rollout/{iso(now)}",
                event=NotificationEvent.INVALID,
                at=iso(now),
                stable_version=rollout_after.stable_version,
                message=rollout_after.message or "",
            )
        )
    return records


def merge(
    existing: Sequence[NotificationRecord], new: Sequence[NotificationRecord]
) -> list[NotificationRecord]:
    """The outbox with the new records whose ids are not recorded yet, newest kept."""
    known = {record.id for record in existing}
    added = [record for record in new if record.id not in known]
    return [*existing, *added][-NOTIFICATION_LIMIT:]


def pending(records: Sequence[NotificationRecord]) -> list[tuple[str, str]]:
    """The (record id, sink) pairs still to deliver."""
    return [
        (record.id, delivery.sink)
        for record in records
        for delivery in record.deliveries
        if delivery.state is DeliveryState.PENDING
    ]


def record_attempt(
    records: Sequence[NotificationRecord],
    *,
    record_id: str,
    sink: str,
    attempts: int,
    sent: bool,
    final: bool,
    error: str | None,
    now: datetime,
) -> list[NotificationRecord]:
    """The outbox with one delivery's outcome written in.

    ``final`` ends the delivery: ``Sent`` when ``sent``, else ``Failed``. A non-final failure
    stays ``Pending`` with its attempt count, so a restarted operator carries on from it.
    """
    updated: list[NotificationRecord] = []
    for record in records:
        if record.id != record_id:
            updated.append(record)
            continue
        deliveries = []
        for delivery in record.deliveries:
            if delivery.sink == sink and delivery.state is DeliveryState.PENDING:
                state = (
                    DeliveryState.SENT
                    if sent
                    else DeliveryState.FAILED
                    if final
                    else DeliveryState.PENDING
                )
                delivery = delivery.model_copy(
                    update={
                        "state": state,
                        "attempts": attempts,
                        "last_attempt_at": iso(now),
                        "error": None if sent else error,
                    }
                )
            deliveries.append(delivery)
        updated.append(record.model_copy(update={"deliveries": deliveries}))
    return updated
