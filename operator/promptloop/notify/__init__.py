"""Notifications: delivery of the transitions ``rollout/notifications`` records (webhook, Slack)."""
