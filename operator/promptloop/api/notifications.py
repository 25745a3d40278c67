"""Notifications: who is told when a rollout changes phase, and the record of what was sent.

A rollout may name its own sinks (``spec.notifications``); the operator may have sinks of its own
(chart values ``notifications``, environment variables of the operator process). Each transition
a person must know about (a proposal awaiting approval, promoted, rolled back, invalid) becomes a
:class:`NotificationRecord` in the rollout's ``status.notifications`` *before* anything is sent:
that record is the outbox. A delivery marked ``Sent`` is never sent again, so a restarted operator
does not repeat itself; one still ``Pending`` (the operator died mid-delivery) is sent again, and
its delivery id lets a receiver drop the duplicate.
"""

from __future__ import annotations

import enum

from pydantic import Field

from promptloop.api.common import ApiModel, SecretKeyRef, SpecModel

__all__ = [
    "NOTIFICATION_LIMIT",
    "DeliveryState",
    "NotificationDelivery",
    "NotificationEvent",
    "NotificationEvidence",
    "NotificationRecord",
    "NotificationsSpec",
    "SlackSink",
    "WebhookSink",
]

# Records kept in status (oldest dropped first): enough for the last few proposals' transitions.
NOTIFICATION_LIMIT = 10


class NotificationEvent(enum.StrEnum):
    """The transitions a person is told about."""

    AWAITING_APPROVAL = "AwaitingApproval"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    INVALID = "Invalid"


ALL_EVENTS = list(NotificationEvent)


class WebhookSink(SpecModel):
    """A generic webhook: a JSON POST, signed with HMAC-SHA256 when a key is given."""

    url: str = Field(
        pattern=r"^https?://.+",
        max_length=2048,
        description="Where the JSON body is POSTed.",
    )
    signing_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Secret key holding the HMAC key; the body's HMAC-SHA256 is sent as "
            "'X-Promptloop-Signature-256: sha256=<hex>'."
        ),
    )


class SlackSink(SpecModel):
    """A Slack incoming webhook; its URL is a credential, so it comes from a Secret."""

    webhook_url_secret_ref: SecretKeyRef = Field(
        description="Secret key holding the incoming webhook URL (https://hooks.slack.com/...).",
    )


class NotificationsSpec(SpecModel):
    """This rollout's own sinks, in addition to the operator's."""

    webhook: WebhookSink | None = Field(default=None, description="A generic JSON webhook.")
    slack: SlackSink | None = Field(default=None, description="A Slack incoming webhook.")
    events: list[NotificationEvent] = Field(
        default_factory=lambda: list(ALL_EVENTS),
        max_length=4,
        description="Which transitions to send (default: all four).",
    )


class DeliveryState(enum.StrEnum):
    """Where one delivery of a record to one sink is."""

    PENDING = "Pending"
    SENT = "Sent"
    FAILED = "Failed"


class NotificationDelivery(ApiModel):
    """One record's delivery to one sink."""

    sink: str = Field(description="operator-webhook, operator-slack, webhook or slack.")
    state: DeliveryState = Field(
        default=DeliveryState.PENDING, description="Pending, Sent, Failed."
    )
    attempts: int = Field(default=0, ge=0, description="Attempts made so far.")
    last_attempt_at: str | None = Field(default=None, description="When (RFC 3339).")
    error: str | None = Field(default=None, description="Why the last attempt failed.")


class NotificationEvidence(ApiModel):
    """The evidence when the transition happened (window counts and the last verdict)."""

    stable_total: int | None = Field(default=None, description="Stable's requests in the window.")
    stable_failed: int | None = Field(default=None, description="Stable's failures in the window.")
    canary_total: int | None = Field(default=None, description="Canary's requests in the window.")
    canary_failed: int | None = Field(default=None, description="Canary's failures in the window.")
    verdict: str | None = Field(default=None, description="The decision's verdict.")
    reason: str | None = Field(default=None, description="The decision's reason.")
    statistic: float | None = Field(default=None, description="The test statistic.")


class NotificationRecord(ApiModel):
    """A transition to announce, and how its deliveries went."""

    id: str = Field(description="Unique per transition; sent as X-Promptloop-Delivery.")
    event: NotificationEvent = Field(description="AwaitingApproval, Promoted, RolledBack, Invalid.")
    at: str = Field(description="When the transition happened (RFC 3339).")
    proposal: str | None = Field(default=None, description="The PromptProposal, if any.")
    version: str | None = Field(default=None, description="The proposal's version.")
    stable_version: str | None = Field(default=None, description="The stable version then.")
    weight: int | None = Field(default=None, description="The challenger's weight then.")
    message: str = Field(default="", description="What happened and why.")
    evidence: NotificationEvidence | None = Field(default=None, description="The evidence then.")
    deliveries: list[NotificationDelivery] = Field(
        default_factory=list, description="One per sink."
    )
