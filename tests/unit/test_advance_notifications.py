"""advance() and notifications: the transition goes into the outbox with the intent, a Notify
effect comes last, a replayed pass adds nothing; and the reconciler hands Notify to the notifier
without waiting."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from promptloop.api import PromptProposalStatus
from promptloop.api.notifications import DeliveryState, NotificationEvent
from promptloop.rollout.advance import advance
from promptloop.rollout.effects import Notify, WriteRolloutStatus
from promptloop.rollout.notifications import Sink
from tests.unit.test_rollout_advance import (
    READY,
    STABLE,
    evidence,
    in_canary,
    kinds,
    make_rollout,
    observe,
    proposal_in,
)

SINKS = (Sink("operator-webhook", frozenset(NotificationEvent)),)


def _awaiting(**overrides: Any) -> Any:
    return observe(
        make_rollout(in_canary(weight=30)),
        proposal_in("Canary", 30),
        registered=(STABLE, "2.1.0"),
        challenger_deployment=READY,
        counters=evidence("better", 30),
        **overrides,
    )


def test_awaiting_approval_is_recorded_with_the_intent_and_notified_last() -> None:
    step = advance(_awaiting(notification_sinks=SINKS))
    assert step.status is not None
    [record] = step.status.notifications
    assert record.event is NotificationEvent.AWAITING_APPROVAL and record.proposal == "p1"
    assert [(d.sink, d.state) for d in record.deliveries] == [
        ("operator-webhook", DeliveryState.PENDING)
    ]
    [intent] = [e for e in step.effects if isinstance(e, WriteRolloutStatus)]
    assert intent.status.notifications == [record]
    assert kinds(step)[-1] == "Notify"
    last = step.effects[-1]
    assert isinstance(last, Notify) and last.records == (record,)
    # The proposal carries its conditions in the same pass.
    conditions = {c.type: (c.status.value, c.reason) for c in step.proposals["p1"].conditions}
    assert conditions["Approved"] == ("False", "AwaitingApproval")
    assert conditions["Promoted"] == ("False", "AwaitingApproval")


def test_without_sinks_nothing_is_recorded_or_notified() -> None:
    step = advance(_awaiting())
    assert step.status is not None and step.status.notifications == []
    assert "Notify" not in kinds(step)


def test_a_pass_replayed_after_a_crash_adds_no_second_record() -> None:
    obs = _awaiting(notification_sinks=SINKS)
    first = advance(obs)
    assert first.status is not None
    # Killed after the intent: the rollout's status was written, the proposal's was not.
    replayed = replace(obs, rollout=obs.rollout.model_copy(update={"status": first.status}))
    again = advance(replayed)
    assert again.status is not None
    assert [r.id for r in again.status.notifications] == [r.id for r in first.status.notifications]
    # Still pending (never delivered): the replay hands it to the notifier again.
    assert kinds(again)[-1] == "Notify"
    # Delivered and recorded: a later pass has nothing to notify.
    sent = first.status.model_copy(deep=True)
    sent.notifications[0].deliveries[0].state = DeliveryState.SENT
    proposal = obs.proposals[0].model_copy(
        update={"status": PromptProposalStatus.model_validate(first.proposals["p1"].model_dump())}
    )
    later = advance(
        replace(
            obs,
            rollout=obs.rollout.model_copy(update={"status": sent}),
            proposals=(proposal,),
        )
    )
    assert "Notify" not in kinds(later)
    assert later.status is not None and len(later.status.notifications) == 1


async def test_the_reconciler_schedules_notify_in_the_background_and_records_the_outcome() -> None:
    import asyncio

    import httpx

    from promptloop.api import AgentRollout
    from promptloop.notify.dispatch import Notifier, OperatorSinks
    from promptloop.rollout.effects import Step
    from tests.unit.test_reconciler import reconciler

    reconcile, kube, _ = reconciler()
    step = advance(_awaiting(notification_sinks=SINKS))
    assert step.status is not None
    kube.rollout = {**kube.rollout, "status": step.status.model_dump(mode="json", by_alias=True)}
    gate = asyncio.Event()
    bodies: list[bytes] = []

    async def receive(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        bodies.append(request.content)
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(receive)) as http:
        notifier = Notifier(
            http,
            operator=OperatorSinks(webhook_url="http://127.0.0.1:9/hook"),
            read_secret=kube.get_secret_value,
            record=reconcile.record_notification,
        )
        reconcile.notifier = notifier
        rollout = AgentRollout.model_validate(kube.rollout)
        notify = [e for e in step.effects if isinstance(e, Notify)]
        # execute() returns while the receiver still holds the request: nothing waits for it.
        await asyncio.wait_for(
            reconcile.execute(Step(status=step.status, effects=tuple(notify)), rollout=rollout),
            timeout=1,
        )
        assert notifier.in_flight() == 1 and bodies == []
        gate.set()
        await notifier.wait_idle()
    assert len(bodies) == 1
    [record] = kube.rollout["status"]["notifications"]
    assert record["deliveries"][0]["state"] == "Sent"
    assert record["deliveries"][0]["attempts"] == 1
