"""What a notification says: the webhook's JSON body, its signature, and the Slack message.

The webhook body (``kind: PromptloopNotification``) is a documented contract (README,
"Notifications"); fields are only ever added. Its signature is GitHub's scheme: the hex
HMAC-SHA256 of the exact body bytes under the shared key, in ``X-Promptloop-Signature-256:
sha256=<hex>``; receivers compare it in constant time before trusting the body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from promptloop import __version__
from promptloop.api.notifications import NotificationEvent, NotificationRecord
from promptloop.constants import API_VERSION
from promptloop.rollout.notifications import approve_commands

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "NOTIFICATION_KIND",
    "SIGNATURE_HEADER",
    "signature",
    "slack_message",
    "verify_signature",
    "webhook_body",
    "webhook_headers",
]

NOTIFICATION_KIND = "PromptloopNotification"
SIGNATURE_HEADER = "X-Promptloop-Signature-256"
DELIVERY_HEADER = "X-Promptloop-Delivery"
EVENT_HEADER = "X-Promptloop-Event"


def webhook_body(record: NotificationRecord, *, namespace: str, rollout: str) -> dict[str, Any]:
    """The JSON object POSTed to a webhook for one record."""
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": NOTIFICATION_KIND,
        "id": record.id,
        "event": record.event.value,
        "occurredAt": record.at,
        "namespace": namespace,
        "rollout": rollout,
        "proposal": (
            {"name": record.proposal, "version": record.version} if record.proposal else None
        ),
        "stableVersion": record.stable_version,
        "weight": record.weight,
        "message": record.message,
        "evidence": record.evidence.to_wire() if record.evidence else None,
        "commands": None,
    }
    if record.event is NotificationEvent.AWAITING_APPROVAL and record.proposal:
        body["commands"] = approve_commands(namespace, rollout, record.proposal)
    return body


def encode(body: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact, key order kept."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def signature(key: str, payload: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of payload under key>``."""
    return "sha256=" + hmac.new(key.encode(), payload, hashlib.sha256).hexdigest()


def verify_signature(key: str, payload: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``payload`` under ``key`` (constant time)."""
    return header is not None and hmac.compare_digest(signature(key, payload), header)


def webhook_headers(
    record: NotificationRecord, payload: bytes, signing_key: str | None
) -> dict[str, str]:
    """Headers of a webhook delivery; signed when a key is configured."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"promptloop/{__version__}",
        EVENT_HEADER: record.event.value,
        DELIVERY_HEADER: record.id,
    }
    if signing_key:
        headers[SIGNATURE_HEADER] = signature(signing_key, payload)
    return headers


def _rate(failed: int | None, total: int | None) -> str:
    if total is None or failed is None:
        return "n/a"
    if total == 0:
        return "0 requests"
    return f"{failed}/{total} failed ({100 * failed / total:.1f}%)"


def slack_message(record: NotificationRecord, *, namespace: str, rollout: str) -> dict[str, Any]:
    """A Slack incoming-webhook message (mrkdwn text) for one record."""
    subject = f"{record.proposal} ({record.version})" if record.proposal else "the rollout"
    lines = [f"*promptloop* `{namespace}/{rollout}`: {subject} *{record.event.value}*"]
    if record.message:
        lines.append(record.message)
    evidence = record.evidence
    if evidence is not None and evidence.stable_total is not None:
        lines.append(
            f"stable {record.stable_version}: "
            f"{_rate(evidence.stable_failed, evidence.stable_total)} · "
            f"canary {record.version}: {_rate(evidence.canary_failed, evidence.canary_total)}"
        )
    if record.event is NotificationEvent.AWAITING_APPROVAL and record.proposal:
        commands = approve_commands(namespace, rollout, record.proposal)
        lines.append(f"Approve: `{commands['approve']}`")
        lines.append(f"Reject: `{commands['reject']}`")
    return {"text": "\n".join(lines)}
