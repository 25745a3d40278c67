"""Notifications: which transitions become records (pure), and their delivery to a real local
receiver that checks signatures and counts (webhook and Slack), with retries and backoff."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from promptloop.api import (
    AgentRolloutStatus,
    DecisionStatus,
    PromptProposal,
    PromptProposalStatus,
    ProposalPhase,
    RolloutPhase,
    VersionCounts,
    WindowCounts,
)
from promptloop.api.notifications import (
    DeliveryState,
    NotificationEvent,
    NotificationRecord,
    NotificationsSpec,
)
from promptloop.notify.dispatch import Notifier, OperatorSinks
from promptloop.notify.messages import verify_signature
from promptloop.rollout import notifications
from promptloop.rollout.notifications import Sink
from tests.receiver import NotificationReceiver

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
ALL = frozenset(NotificationEvent)
KEY = "s3cret-hmac-key"


def _proposal(name: str, phase: ProposalPhase | None, uid: str = "0123456789ab") -> PromptProposal:
    return PromptProposal.model_validate(
        {
            "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": {"rolloutRef": {"name": "classifier"}, "version": "2.1.0", "systemPrompt": "p"},
            "status": {"phase": phase.value if phase else None},
        }
    )


def _after(
    phase: ProposalPhase, message: str = "why", weight: int | None = 40
) -> PromptProposalStatus:
    return PromptProposalStatus(phase=phase, message=message, weight=weight)


def _rollout(phase: RolloutPhase) -> AgentRolloutStatus:
    return AgentRolloutStatus(
        phase=phase,
        stable_version="2.0.0",
        counts=VersionCounts(
            stable=WindowCounts(version="2.0.0", total=100, failed=30, rate=0.3),
            canary=WindowCounts(version="2.1.0", total=90, failed=9, rate=0.1),
        ),
        decision=DecisionStatus(verdict="await-approval", reason="better", statistic=3.2),
    )


def _detect(
    before: ProposalPhase | None, after: ProposalPhase, sinks: list[Sink] | None = None
) -> list[NotificationRecord]:
    return notifications.detect(
        rollout_before=_rollout(RolloutPhase.PROGRESSING),
        rollout_after=_rollout(RolloutPhase.AWAITING_APPROVAL),
        proposals=[_proposal("pp", before)],
        proposals_after={"pp": _after(after)},
        sinks=sinks if sinks is not None else [Sink("operator-webhook", ALL)],
        now=NOW,
    )


@pytest.mark.parametrize(
    ("before", "after", "event"),
    [
        (ProposalPhase.CANARY, ProposalPhase.AWAITING_APPROVAL, "AwaitingApproval"),
        (ProposalPhase.CANARY, ProposalPhase.PROMOTED, "Promoted"),
        (ProposalPhase.AWAITING_APPROVAL, ProposalPhase.ROLLED_BACK, "RolledBack"),
        (ProposalPhase.CANARY, ProposalPhase.REJECTED, "RolledBack"),
        (None, ProposalPhase.INVALID, "Invalid"),
    ],
)
def test_each_announced_transition_becomes_one_pending_record(
    before: ProposalPhase | None, after: ProposalPhase, event: str
) -> None:
    [record] = _detect(before, after)
    assert record.event.value == event
    assert record.proposal == "pp" and record.version == "2.1.0"
    assert [(d.sink, d.state) for d in record.deliveries] == [
        ("operator-webhook", DeliveryState.PENDING)
    ]
    if event != "Invalid":
        assert record.evidence is not None and record.evidence.canary_failed == 9


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (ProposalPhase.CANARY, ProposalPhase.CANARY),  # no transition: a tick
        (ProposalPhase.AWAITING_APPROVAL, ProposalPhase.AWAITING_APPROVAL),
        (ProposalPhase.PENDING, ProposalPhase.RENDERED),  # not announced
        (ProposalPhase.RENDERED, ProposalPhase.CANARY),
    ],
)
def test_ticks_and_unannounced_phases_make_no_record(
    before: ProposalPhase, after: ProposalPhase
) -> None:
    assert _detect(before, after) == []


def test_sinks_get_only_the_events_they_want() -> None:
    sinks = [
        Sink("operator-webhook", ALL),
        Sink("slack", frozenset({NotificationEvent.PROMOTED})),
    ]
    [awaiting] = _detect(ProposalPhase.CANARY, ProposalPhase.AWAITING_APPROVAL, sinks)
    assert [d.sink for d in awaiting.deliveries] == ["operator-webhook"]
    [promoted] = _detect(ProposalPhase.CANARY, ProposalPhase.PROMOTED, sinks)
    assert [d.sink for d in promoted.deliveries] == ["operator-webhook", "slack"]
    assert _detect(ProposalPhase.CANARY, ProposalPhase.PROMOTED, []) == []


def test_a_replayed_pass_adds_nothing_and_the_outbox_is_bounded() -> None:
    first = _detect(ProposalPhase.CANARY, ProposalPhase.AWAITING_APPROVAL)
    outbox = notifications.merge([], first)
    # The pass is replayed after a crash (the proposal's status was not written): same id.
    replay = _detect(ProposalPhase.CANARY, ProposalPhase.AWAITING_APPROVAL)
    assert notifications.merge(outbox, replay) == outbox
    many = [first[0].model_copy(update={"id": f"Promoted/p{i}/x"}) for i in range(25)]
    bounded = notifications.merge(outbox, many)
    assert len(bounded) == 10 and bounded[-1].id == "Promoted/p24/x"


def test_a_rollout_turning_invalid_is_announced_once() -> None:
    records = notifications.detect(
        rollout_before=AgentRolloutStatus(phase=RolloutPhase.STABLE),
        rollout_after=AgentRolloutStatus(phase=RolloutPhase.INVALID, message="no Secret"),
        proposals=[],
        proposals_after={},
        sinks=[Sink("operator-webhook", ALL)],
        now=NOW,
    )
    assert [(r.event.value, r.proposal, r.message) for r in records] == [
        ("Invalid", None, "no Secret")
    ]
    again = notifications.detect(
        rollout_before=AgentRolloutStatus(phase=RolloutPhase.INVALID),
        rollout_after=AgentRolloutStatus(phase=RolloutPhase.INVALID, message="still"),
        proposals=[],
        proposals_after={},
        sinks=[Sink("operator-webhook", ALL)],
        now=NOW,
    )
    assert again == []


def test_recording_outcomes() -> None:
    [record] = _detect(ProposalPhase.CANARY, ProposalPhase.PROMOTED)
    outbox = [record]
    assert notifications.pending(outbox) == [(record.id, "operator-webhook")]
    kept = notifications.record_attempt(
        outbox,
        record_id=record.id,
        sink="operator-webhook",
        attempts=2,
        sent=False,
        final=False,
        error="HTTP 503",
        now=NOW,
    )
    assert kept[0].deliveries[0].state is DeliveryState.PENDING
    assert kept[0].deliveries[0].attempts == 2
    sent = notifications.record_attempt(
        kept,
        record_id=record.id,
        sink="operator-webhook",
        attempts=3,
        sent=True,
        final=True,
        error=None,
        now=NOW,
    )
    assert sent[0].deliveries[0].state is DeliveryState.SENT
    assert notifications.pending(sent) == []
    # A Sent delivery is never rewritten (a late duplicate outcome changes nothing).
    again = notifications.record_attempt(
        sent,
        record_id=record.id,
        sink="operator-webhook",
        attempts=9,
        sent=False,
        final=True,
        error="late",
        now=NOW,
    )
    assert again == sent


# -- delivery to a real local receiver ---------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[NotificationReceiver]:
    server = NotificationReceiver(key=KEY)
    yield server
    server.close()


class Harness:
    """A Notifier whose outcomes land in an in-memory outbox, as the reconciler's would."""

    def __init__(self, http: httpx.AsyncClient, operator: OperatorSinks, **kwargs: Any) -> None:
        self.outbox: list[NotificationRecord] = []
        self.delays: list[float] = []
        self.secrets: dict[tuple[str, str], str] = {}

        async def record(
            namespace: str,
            rollout: str,
            record_id: str,
            sink: str,
            attempts: int,
            sent: bool,
            final: bool,
            error: str | None,
        ) -> None:
            self.outbox = notifications.record_attempt(
                self.outbox,
                record_id=record_id,
                sink=sink,
                attempts=attempts,
                sent=sent,
                final=final,
                error=error,
                now=NOW,
            )

        async def read_secret(namespace: str, name: str, key: str) -> str | None:
            return self.secrets.get((name, key))

        async def sleep(seconds: float) -> None:
            self.delays.append(seconds)

        self.notifier = Notifier(
            http,
            operator=operator,
            read_secret=read_secret,
            record=record,
            sleep=sleep,
            **kwargs,
        )

    async def run(self, spec: NotificationsSpec | None, records: list[NotificationRecord]) -> None:
        self.outbox = notifications.merge(self.outbox, records)
        self.notifier.schedule("ns", "classifier", spec, self.outbox)
        await self.notifier.wait_idle()


async def test_signed_webhook_and_slack_deliveries_carry_the_commands(
    receiver: NotificationReceiver,
) -> None:
    operator = OperatorSinks(
        webhook_url=f"{receiver.url}/webhook",
        webhook_signing_key=KEY,
        slack_url=f"{receiver.url}/slack",
    )
    async with httpx.AsyncClient() as http:
        harness = Harness(http, operator)
        records = _detect(ProposalPhase.CANARY, ProposalPhase.AWAITING_APPROVAL, operator.sinks())
        await harness.run(None, records)
    [hook] = receiver.deliveries("/webhook", "AwaitingApproval")
    assert verify_signature(KEY, hook.raw, hook.headers["X-Promptloop-Signature-256"])
    assert hook.headers["X-Promptloop-Delivery"] == records[0].id
    body = hook.body
    assert body["kind"] == "PromptloopNotification" and body["rollout"] == "classifier"
    assert body["proposal"] == {"name": "pp", "version": "2.1.0"}
    assert (
        body["commands"]["approve"] == "kubectl promptloop approve classifier -n ns --proposal pp"
    )
    assert body["commands"]["reject"].startswith("kubectl promptloop reject classifier -n ns")
    assert body["evidence"]["canaryFailed"] == 9 and body["evidence"]["stableTotal"] == 100
    [slack] = receiver.deliveries("/slack")
    assert "AwaitingApproval" in slack.body["text"]
    assert "kubectl promptloop approve classifier -n ns --proposal pp" in slack.body["text"]
    assert "9/90 failed" in slack.body["text"]
    assert receiver.rejected == []
    states = {d.sink: d.state for d in harness.outbox[0].deliveries}
    assert states == {"operator-webhook": DeliveryState.SENT, "operator-slack": DeliveryState.SENT}
    # Scheduling the outbox again sends nothing: both deliveries are recorded as Sent.
    harness.notifier.schedule("ns", "classifier", None, harness.outbox)
    await harness.notifier.wait_idle()
    assert len(receiver.accepted) == 2


async def test_a_wrong_key_is_refused_by_the_receiver_and_recorded_failed(
    receiver: NotificationReceiver,
) -> None:
    operator = OperatorSinks(webhook_url=f"{receiver.url}/webhook", webhook_signing_key="wrong")
    async with httpx.AsyncClient() as http:
        harness = Harness(http, operator, backoff=(0.5, 1.0))
        await harness.run(None, _detect(ProposalPhase.CANARY, ProposalPhase.PROMOTED))
    assert receiver.deliveries() == [] and receiver.rejected == [("/webhook", "bad signature")]
    delivery = harness.outbox[0].deliveries[0]
    # 401 is not retried: a wrong key does not heal by itself.
    assert delivery.state is DeliveryState.FAILED and delivery.attempts == 1
    assert delivery.error == "HTTP 401" and harness.delays == []


async def test_server_errors_are_retried_with_backoff_until_delivered() -> None:
    receiver = NotificationReceiver(key=KEY, fail_first=3, fail_status=503)
    try:
        operator = OperatorSinks(webhook_url=f"{receiver.url}/webhook", webhook_signing_key=KEY)
        async with httpx.AsyncClient() as http:
            harness = Harness(http, operator, backoff=(1.0, 2.0, 4.0, 8.0))
            await harness.run(None, _detect(ProposalPhase.CANARY, ProposalPhase.PROMOTED))
        assert len(receiver.deliveries("/webhook", "Promoted")) == 1
        assert receiver.requests == 4
        assert harness.delays == [1.0, 2.0, 4.0]
        delivery = harness.outbox[0].deliveries[0]
        assert delivery.state is DeliveryState.SENT and delivery.attempts == 4
    finally:
        receiver.close()


async def test_an_unreachable_sink_gives_up_after_the_last_attempt() -> None:
    # A port nothing listens on (the receiver is closed at once).
    closed = NotificationReceiver(key=KEY)
    closed.close()
    operator = OperatorSinks(webhook_url=f"{closed.url}/webhook")
    async with httpx.AsyncClient() as http:
        harness = Harness(http, operator, backoff=(1.0, 2.0))
        await harness.run(None, _detect(ProposalPhase.CANARY, ProposalPhase.ROLLED_BACK))
    delivery = harness.outbox[0].deliveries[0]
    assert delivery.state is DeliveryState.FAILED and delivery.attempts == 3
    assert delivery.error == "ConnectError" and harness.delays == [1.0, 2.0]


async def test_a_restart_resumes_a_pending_delivery_counting_its_attempts(
    receiver: NotificationReceiver,
) -> None:
    operator = OperatorSinks(webhook_url=f"{receiver.url}/webhook", webhook_signing_key=KEY)
    [record] = _detect(ProposalPhase.CANARY, ProposalPhase.PROMOTED)
    # The previous operator made two attempts and died: the record says Pending, attempts 2.
    record = notifications.record_attempt(
        [record],
        record_id=record.id,
        sink="operator-webhook",
        attempts=2,
        sent=False,
        final=False,
        error="HTTP 503",
        now=NOW,
    )[0]
    async with httpx.AsyncClient() as http:
        harness = Harness(http, operator, backoff=(1.0, 2.0, 4.0))
        await harness.run(None, [record])
    assert len(receiver.deliveries()) == 1
    delivery = harness.outbox[0].deliveries[0]
    assert delivery.state is DeliveryState.SENT and delivery.attempts == 3
    assert harness.delays == [2.0]  # the backoff continues where it stopped


async def test_a_rollouts_own_sinks_read_their_credentials_from_secrets(
    receiver: NotificationReceiver,
) -> None:
    spec = NotificationsSpec.model_validate(
        {
            "webhook": {
                "url": f"{receiver.url}/webhook",
                "signingSecretRef": {"name": "hooks", "key": "hmac"},
            },
            "slack": {"webhookUrlSecretRef": {"name": "hooks", "key": "slack"}},
            "events": ["Promoted"],
        }
    )
    async with httpx.AsyncClient() as http:
        harness = Harness(http, OperatorSinks())
        harness.secrets = {("hooks", "hmac"): KEY, ("hooks", "slack"): f"{receiver.url}/slack\n"}
        sinks = harness.notifier.sinks_for(spec)
        assert [s.name for s in sinks] == ["webhook", "slack"]
        assert _detect(ProposalPhase.CANARY, ProposalPhase.AWAITING_APPROVAL, sinks) == []
        await harness.run(spec, _detect(ProposalPhase.CANARY, ProposalPhase.PROMOTED, sinks))
    assert len(receiver.deliveries("/webhook", "Promoted")) == 1
    assert len(receiver.deliveries("/slack")) == 1
    assert receiver.rejected == []


async def test_a_missing_secret_fails_the_delivery_without_leaking_anything() -> None:
    spec = NotificationsSpec.model_validate(
        {"slack": {"webhookUrlSecretRef": {"name": "hooks", "key": "slack"}}}
    )
    async with httpx.AsyncClient() as http:
        harness = Harness(http, OperatorSinks(), backoff=(1.0,))
        sinks = harness.notifier.sinks_for(spec)
        await harness.run(spec, _detect(ProposalPhase.CANARY, ProposalPhase.PROMOTED, sinks))
    delivery = harness.outbox[0].deliveries[0]
    assert delivery.state is DeliveryState.FAILED and delivery.attempts == 2
    assert delivery.error == "Secret hooks has no key slack (the Slack webhook URL)"


async def test_scheduling_never_waits_for_a_slow_receiver() -> None:
    gate = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return httpx.Response(200)

    operator = OperatorSinks(webhook_url="http://127.0.0.1:9/webhook")
    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as http:
        harness = Harness(http, operator)
        harness.outbox = _detect(ProposalPhase.CANARY, ProposalPhase.PROMOTED)
        loop = asyncio.get_running_loop()
        started = loop.time()
        harness.notifier.schedule("ns", "classifier", None, harness.outbox)
        # Scheduled twice (the next pass) while in flight: still one delivery.
        harness.notifier.schedule("ns", "classifier", None, harness.outbox)
        assert loop.time() - started < 0.05
        assert harness.notifier.in_flight() == 1
        gate.set()
        await harness.notifier.wait_idle()
    assert harness.outbox[0].deliveries[0].state is DeliveryState.SENT


def test_operator_sinks_from_the_environment() -> None:
    sinks = OperatorSinks.from_env(
        {
            "PROMPTLOOP_WEBHOOK_URL": "http://127.0.0.1/x",
            "PROMPTLOOP_WEBHOOK_SIGNING_KEY": KEY,
            "PROMPTLOOP_SLACK_WEBHOOK_URL": "",
            "PROMPTLOOP_NOTIFY_EVENTS": "AwaitingApproval, Promoted",
        }
    )
    assert [s.name for s in sinks.sinks()] == ["operator-webhook"]
    assert sinks.events == {NotificationEvent.AWAITING_APPROVAL, NotificationEvent.PROMOTED}
    assert KEY not in repr(sinks)
    with pytest.raises(ValueError, match="unknown event 'Promotd'"):
        OperatorSinks.from_env({"PROMPTLOOP_NOTIFY_EVENTS": "Promotd"})
