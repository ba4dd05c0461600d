"""Channels built from the notifications file's specs."""

from __future__ import annotations

from typing import assert_never

import httpx

from vigil.notify.channels.base import Channel
from vigil.notify.channels.email import EmailChannel
from vigil.notify.channels.pagerduty import PagerDutyChannel
from vigil.notify.channels.slack import SlackChannel
from vigil.notify.channels.teams import TeamsChannel
from vigil.notify.channels.webhook import WebhookChannel
from vigil.notify.config import (
    EmailSpec,
    Notifications,
    PagerDutySpec,
    SlackSpec,
    TeamsSpec,
    WebhookSpec,
)


def build_channels(
    notifications: Notifications,
    *,
    timeout: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Channel]:
    """One channel per spec, by name. ``transport`` (tests) carries every HTTP request made
    with httpx (Slack's goes through slack-sdk: point its ``api_url`` at a stand-in);
    ``timeout`` bounds each request (for email: the connection and each SMTP command)."""
    channels: dict[str, Channel] = {}
    for name, spec in notifications.channels.items():
        if isinstance(spec, WebhookSpec):
            channels[name] = WebhookChannel(spec, timeout=timeout, transport=transport)
        elif isinstance(spec, SlackSpec):
            channels[name] = SlackChannel(spec, timeout=timeout)
        elif isinstance(spec, PagerDutySpec):
            channels[name] = PagerDutyChannel(spec, timeout=timeout, transport=transport)
        elif isinstance(spec, TeamsSpec):
            channels[name] = TeamsChannel(spec, timeout=timeout, transport=transport)
        elif isinstance(spec, EmailSpec):
            channels[name] = EmailChannel(spec, timeout=timeout)
        else:
            assert_never(spec)
    return channels
