"""Delivery of notification records: in the background, retried with backoff, recorded in status.

The reconciler calls :meth:`Notifier.schedule` at the end of a pass with the records still
``Pending``; it returns at once (a pass never waits for a webhook). Each (record, sink) is sent
by its own task: an attempt, and on a retryable failure (connection error, timeout, HTTP 429 or
5xx) the next after a backoff of 1, 2, 4, 8, 16 and 32 seconds; any other 4xx is final (a wrong
URL or key does not heal by itself). The outcome goes back into the rollout's status through the
``record`` callback, which the reconciler runs under the rollout's lock so that it never races a
pass. A task killed with the operator leaves its delivery ``Pending``; the next operator's first
pass schedules it again.

Operator-wide sinks come from the environment (the chart sets these from its values, the two
credentials from Secrets):

``PROMPTLOOP_WEBHOOK_URL``, ``PROMPTLOOP_WEBHOOK_SIGNING_KEY``
    a generic JSON webhook and its HMAC key (optional: unsigned without it);
``PROMPTLOOP_SLACK_WEBHOOK_URL``
    a Slack incoming webhook;
``PROMPTLOOP_NOTIFY_EVENTS``
    comma-separated events the operator's sinks get (default: all).

Credentials (the HMAC key, Slack's URL, a rollout's Secrets) never appear in logs, Events or
status: errors name the sink and the failure's kind, not the address or the response body.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from promptloop.api.notifications import (
    ALL_EVENTS,
    DeliveryState,
    NotificationEvent,
    NotificationRecord,
    NotificationsSpec,
)
from promptloop.notify.messages import encode, slack_message, webhook_body, webhook_headers
from promptloop.rollout.notifications import Sink

__all__ = [
    "DEFAULT_BACKOFF",
    "DeliveryFailed",
    "Notifier",
    "OperatorSinks",
    "RecordOutcome",
    "SecretReader",
]

log = logging.getLogger("promptloop.notify")

DEFAULT_BACKOFF: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)

OPERATOR_WEBHOOK = "operator-webhook"
OPERATOR_SLACK = "operator-slack"
ROLLOUT_WEBHOOK = "webhook"
ROLLOUT_SLACK = "slack"

# (namespace, name, key) -> the decoded value, or None when the Secret or key is missing.
SecretReader = Callable[[str, str, str], Awaitable[str | None]]
# (namespace, rollout, record id, sink, attempts, sent, final, error) -> None
RecordOutcome = Callable[[str, str, str, str, int, bool, bool, str | None], Awaitable[None]]


class DeliveryFailed(Exception):
    """One attempt failed; ``retryable`` says whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def _events(text: str | None) -> frozenset[NotificationEvent]:
    if not text or not text.strip():
        return frozenset(ALL_EVENTS)
    chosen = set()
    for item in text.split(","):
        item = item.strip()
        if item:
            try:
                chosen.add(NotificationEvent(item))
            except ValueError:
                raise ValueError(
                    f"PROMPTLOOP_NOTIFY_EVENTS: unknown event {item!r} "
                    f"(known: {', '.join(e.value for e in NotificationEvent)})"
                ) from None
    return frozenset(chosen)


@dataclass(frozen=True)
class OperatorSinks:
    """The operator's own sinks (every rollout's transitions go to them)."""

    webhook_url: str | None = None
    webhook_signing_key: str | None = field(default=None, repr=False)
    slack_url: str | None = field(default=None, repr=False)
    events: frozenset[NotificationEvent] = frozenset(ALL_EVENTS)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSinks:
        """Read the ``PROMPTLOOP_*`` variables (empty values count as unset).

        Raises
        ------
        ValueError
            When ``PROMPTLOOP_NOTIFY_EVENTS`` names an unknown event.
        """
        env = os.environ if environ is None else environ
        return cls(
            webhook_url=env.get("PROMPTLOOP_WEBHOOK_URL") or None,
            webhook_signing_key=env.get("PROMPTLOOP_WEBHOOK_SIGNING_KEY") or None,
            slack_url=env.get("PROMPTLOOP_SLACK_WEBHOOK_URL") or None,
            events=_events(env.get("PROMPTLOOP_NOTIFY_EVENTS")),
        )

    def sinks(self) -> list[Sink]:
        """The configured sinks."""
        found = []
        if self.webhook_url:
            found.append(Sink(OPERATOR_WEBHOOK, self.events))
        if self.slack_url:
            found.append(Sink(OPERATOR_SLACK, self.events))
        return found


class Notifier:
    """Sends records to sinks without ever blocking or failing a pass.

    Parameters
    ----------
    http
        The shared HTTP client.
    operator
        The operator's sinks.
    read_secret
        Reads a rollout's Secret keys (its own sinks' credentials).
    record
        Writes a delivery's outcome into the rollout's status.
    backoff
        Seconds to wait before each retry; its length + 1 is the number of attempts.
    timeout
        Seconds one attempt may take.
    sleep
        Waits between attempts (tests pass a recorder).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        operator: OperatorSinks,
        read_secret: SecretReader,
        record: RecordOutcome,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        timeout: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.http = http
        self.operator = operator
        self.read_secret = read_secret
        self.record = record
        self.backoff = tuple(backoff)
        self.timeout = timeout
        self.sleep = sleep
        self._tasks: dict[tuple[str, str, str, str], asyncio.Task[None]] = {}

    @property
    def max_attempts(self) -> int:
        """Attempts per delivery."""
        return len(self.backoff) + 1

    def sinks_for(self, spec: NotificationsSpec | None) -> list[Sink]:
        """The operator's sinks plus the rollout's own."""
        sinks = self.operator.sinks()
        if spec is not None:
            events = frozenset(spec.events)
            if spec.webhook is not None:
                sinks.append(Sink(ROLLOUT_WEBHOOK, events))
            if spec.slack is not None:
                sinks.append(Sink(ROLLOUT_SLACK, events))
        return sinks

    def in_flight(self) -> int:
        """Deliveries being attempted now."""
        return sum(1 for task in self._tasks.values() if not task.done())

    def schedule(
        self,
        namespace: str,
        rollout: str,
        spec: NotificationsSpec | None,
        records: Sequence[NotificationRecord],
    ) -> None:
        """Start a task for every pending delivery not already in flight; returns at once."""
        for record in records:
            for delivery in record.deliveries:
                if delivery.state is not DeliveryState.PENDING:
                    continue
                key = (namespace, rollout, record.id, delivery.sink)
                running = self._tasks.get(key)
                if running is not None and not running.done():
                    continue
                self._tasks[key] = asyncio.create_task(
                    self._deliver(
                        namespace, rollout, spec, record, delivery.sink, delivery.attempts
                    ),
                    name=f"notify {namespace}/{rollout} {record.id} {delivery.sink}",
                )
        for key in [k for k, task in self._tasks.items() if task.done()]:
            del self._tasks[key]

    async def wait_idle(self) -> None:
        """Wait until every scheduled delivery has finished (tests, shutdown)."""
        while running := [task for task in self._tasks.values() if not task.done()]:
            await asyncio.gather(*running, return_exceptions=True)

    async def close(self) -> None:
        """Cancel deliveries in flight; they stay Pending and are resumed by the next operator."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    async def _deliver(
        self,
        namespace: str,
        rollout: str,
        spec: NotificationsSpec | None,
        record: NotificationRecord,
        sink: str,
        attempts: int,
    ) -> None:
        error: str | None = None
        sent = False
        while attempts < self.max_attempts:
            if attempts > 0:
                await self.sleep(self.backoff[min(attempts - 1, len(self.backoff) - 1)])
            attempts += 1
            try:
                await self._send(namespace, rollout, spec, record, sink)
            except DeliveryFailed as failure:
                error = str(failure)
                log.warning(
                    "notification %s to %s for %s/%s: attempt %d failed: %s",
                    record.id,
                    sink,
                    namespace,
                    rollout,
                    attempts,
                    error,
                )
                if not failure.retryable:
                    break
                continue
            sent = True
            log.info("notification %s sent to %s for %s/%s", record.id, sink, namespace, rollout)
            break
        try:
            await self.record(namespace, rollout, record.id, sink, attempts, sent, True, error)
        except Exception:  # the rollout may be gone; a delivery never takes the operator down
            log.exception("could not record notification %s to %s", record.id, sink)

    async def _send(
        self,
        namespace: str,
        rollout: str,
        spec: NotificationsSpec | None,
        record: NotificationRecord,
        sink: str,
    ) -> None:
        url: str | None
        key: str | None = None
        if sink == OPERATOR_WEBHOOK:
            url, key = self.operator.webhook_url, self.operator.webhook_signing_key
            body = webhook_body(record, namespace=namespace, rollout=rollout)
        elif sink == OPERATOR_SLACK:
            url = self.operator.slack_url
            body = slack_message(record, namespace=namespace, rollout=rollout)
        elif sink == ROLLOUT_WEBHOOK and spec is not None and spec.webhook is not None:
            url = spec.webhook.url
            ref = spec.webhook.signing_secret_ref
            if ref is not None:
                key = await self._secret(namespace, ref.name, ref.key, "signing key")
            body = webhook_body(record, namespace=namespace, rollout=rollout)
        elif sink == ROLLOUT_SLACK and spec is not None and spec.slack is not None:
            ref = spec.slack.webhook_url_secret_ref
            url = await self._secret(namespace, ref.name, ref.key, "Slack webhook URL")
            body = slack_message(record, namespace=namespace, rollout=rollout)
        else:
            raise DeliveryFailed(f"sink {sink} is no longer configured", retryable=False)
        if not url:
            raise DeliveryFailed(f"sink {sink} has no URL", retryable=False)
        payload = encode(body)
        headers = (
            webhook_headers(record, payload, key)
            if sink in (OPERATOR_WEBHOOK, ROLLOUT_WEBHOOK)
            else {"Content-Type": "application/json"}
        )
        try:
            response = await self.http.post(
                url, content=payload, headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError as error:
            # The exception's text can carry the URL, which is a credential for Slack.
            raise DeliveryFailed(f"{type(error).__name__}", retryable=True) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        raise DeliveryFailed(f"HTTP {status}", retryable=status == 429 or status >= 500)

    async def _secret(self, namespace: str, name: str, key: str, what: str) -> str:
        try:
            value = await self.read_secret(namespace, name, key)
        except Exception as error:  # RBAC or the API server: may heal, retry
            raise DeliveryFailed(
                f"cannot read the {what} from Secret {name}: {type(error).__name__}",
                retryable=True,
            ) from None
        if not value:
            raise DeliveryFailed(f"Secret {name} has no key {key} (the {what})", retryable=True)
        return value.strip()
