"""Channels built from the notifications file's specs."""

from __future__ import annotations

import httpx

from vigil.notify.channels.base import Channel
from vigil.notify.channels.email import EmailChannel
from vigil.notify.channels.pagerduty import PagerDutyChannel
from vigil.notify.channels.teams import TeamsChannel
from vigil.notify.channels.webhook import WebhookChannel
from vigil.notify.config import EmailSpec, Notifications, PagerDutySpec, TeamsSpec, WebhookSpec


def build_channels(
    notifications: Notifications,
    *,
    timeout: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Channel]:
    """One channel per spec, by name. ``transport`` (tests) carries every HTTP request;
    ``timeout`` bounds each request (for email: the connection and each SMTP command)."""
    channels: dict[str, Channel] = {}
    for name, spec in notifications.channels.items():
        if isinstance(spec, WebhookSpec):
            channels[name] = WebhookChannel(spec, timeout=timeout, transport=transport)
        elif isinstance(spec, PagerDutySpec):
            channels[name] = PagerDutyChannel(spec, timeout=timeout, transport=transport)
        elif isinstance(spec, TeamsSpec):
            channels[name] = TeamsChannel(spec, timeout=timeout, transport=transport)
        elif isinstance(spec, EmailSpec):
            channels[name] = EmailChannel(spec, timeout=timeout)
        else:
            raise NotImplementedError(f"channel type {spec.type!r}")
    return channels
