"""The chart's ``notifications`` values: nothing rendered by default, the operator's sinks as
environment variables (credentials from Secrets, read by the kubelet) when set, and the
operator reads exactly those variables."""

from __future__ import annotations

from typing import Any

from promptloop.api.notifications import NotificationEvent
from promptloop.notify.dispatch import OperatorSinks
from tests.helmtool import CHART, Helm, helm

__all__ = ["helm"]


def _env(helm: Helm, *values: str) -> list[dict[str, Any]]:
    objects = helm.template(*values)
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    # POD_NAME (the Lease holder's identity, issue 13) is always there; the rest is the sinks'.
    return [e for e in container.get("env", []) if e["name"] != "POD_NAME"]


def test_no_sink_renders_nothing(helm: Helm) -> None:
    assert _env(helm) == []


def test_sinks_become_the_operators_environment(helm: Helm) -> None:
    env = _env(
        helm,
        "--set",
        "notifications.webhook.url=https://hooks.example.com/promptloop",
        "--set",
        "notifications.webhook.signingKeySecret.name=promptloop-hooks",
        "--set",
        "notifications.slack.webhookUrlSecret.name=promptloop-hooks",
        "--set",
        "notifications.slack.webhookUrlSecret.key=slack",
        "--set-json",
        'notifications.events=["AwaitingApproval","RolledBack"]',
    )
    assert env == [
        {"name": "PROMPTLOOP_WEBHOOK_URL", "value": "https://hooks.example.com/promptloop"},
        {
            "name": "PROMPTLOOP_WEBHOOK_SIGNING_KEY",
            "valueFrom": {"secretKeyRef": {"name": "promptloop-hooks", "key": "signing-key"}},
        },
        {
            "name": "PROMPTLOOP_SLACK_WEBHOOK_URL",
            "valueFrom": {"secretKeyRef": {"name": "promptloop-hooks", "key": "slack"}},
        },
        {"name": "PROMPTLOOP_NOTIFY_EVENTS", "value": "AwaitingApproval,RolledBack"},
    ]
    # What the operator makes of them (Secret values stand in for what the kubelet injects).
    resolved = {e["name"]: e.get("value", f"<{e['name']}>") for e in env}
    sinks = OperatorSinks.from_env(resolved)
    assert [s.name for s in sinks.sinks()] == ["operator-webhook", "operator-slack"]
    assert sinks.events == {NotificationEvent.AWAITING_APPROVAL, NotificationEvent.ROLLED_BACK}


def test_bad_notification_values_are_refused_naming_the_key(helm: Helm) -> None:
    for values, path in [
        (["--set", "notifications.webhook.url=ftp://x"], "/notifications/webhook/url"),
        (["--set-json", 'notifications.events=["Promotd"]'], "/notifications/events/0"),
        (["--set", "notifications.slack.url=https://x"], "/notifications/slack"),
    ]:
        proc = helm.run("template", "x", str(CHART), *values, check=False)
        assert proc.returncode != 0
        assert f"at '{path}'" in proc.stderr, proc.stderr
