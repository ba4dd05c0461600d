"""``vigil notifications validate`` and ``vigil notifications test``, the check ``vigil serve``
and ``vigil worker`` make of the notifications file before they start, and the start-up line
saying how links in messages are written."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vigil.errors import VigilError
from vigil.settings import Settings

if TYPE_CHECKING:
    from vigil.notify.config import (
        EmailSpec,
        Notifications,
        PagerDutySpec,
        Route,
        SlackSpec,
        TeamsSpec,
        WebhookSpec,
    )

    AnyChannel = SlackSpec | PagerDutySpec | TeamsSpec | EmailSpec | WebhookSpec

notifications_app = typer.Typer(help="The notifications file.", no_args_is_help=True)

TEST_REASON = "test message from vigil notifications test"


def check_notifications(settings: Settings, *, secrets: bool = True) -> None:
    """Refuse to start on an invalid notifications file (or, with ``secrets``, one naming
    an environment variable that is not set), naming the setting. A worker reads only the
    routes, never sends, so it is checked without ``secrets``."""
    from vigil.notify.config import EVERY_VARIABLE, load_notifications

    try:
        load_notifications(
            settings.notifications_file,
            webhook_urls=settings.notify_webhook_urls,
            env=None if secrets else EVERY_VARIABLE,
        )
    except VigilError as exc:
        typer.echo(f"invalid setting VIGIL_NOTIFICATIONS_FILE: {exc.message}", err=True)
        raise typer.Exit(2) from exc


def log_links(settings: Settings) -> None:
    """Say once, at start-up, that links in messages are paths when VIGIL_EXTERNAL_URL is
    unset (a reader of a chat message then has no address to click)."""
    if settings.external_url is not None:
        return
    from vigil.observability.logging import get_logger

    get_logger(__name__).info(
        "notify.links_are_paths",
        note="VIGIL_EXTERNAL_URL is not set: links in notification messages are paths "
        "(/api/v1/actions/7); set it to where people reach Vigil to make them absolute",
    )


@notifications_app.command("validate")
def notifications_validate(
    file: Annotated[
        Path, typer.Argument(help="A notifications file (YAML, top-level `channels:`, `routes:`)")
    ],
    no_env: Annotated[
        bool,
        typer.Option(
            "--no-env",
            help="Check the shape only: take every ${ENV} reference as set (by default a "
            "reference to an unset variable is an error, as at start-up)",
        ),
    ] = False,
) -> None:
    """Check a notifications file as `vigil serve` would; print its channels and routes, or
    exit 1 naming each problem."""
    from vigil.notify.config import EVERY_VARIABLE, NotificationsInvalid, load_notifications
    from vigil.notify.events import ALWAYS_RECORDED

    try:
        notifications = load_notifications(file, env=EVERY_VARIABLE if no_env else None)
    except NotificationsInvalid as exc:
        typer.echo(f"invalid: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    channels, routes = len(notifications.channels), len(notifications.routes)
    typer.echo(
        f"{file}: valid: {channels} channel{'s' * (channels != 1)}, "
        f"{routes} route{'s' * (routes != 1)}"
        + (" (environment references not checked)" if no_env else "")
    )
    for name, spec in notifications.channels.items():
        typer.echo(f"  channel {name}: {_channel(spec)}")
    for number, route in enumerate(notifications.routes, start=1):
        typer.echo(f"  route {number}: {_route(route)}")
    optional = sorted(e.value for e in notifications.recorded - ALWAYS_RECORDED)
    typer.echo(
        "  recorded besides the events always recorded: "
        + (", ".join(optional) if optional else "nothing")
    )


def _channel(spec: AnyChannel) -> str:
    """One channel as ``validate`` shows it: its type and where it sends (never a secret,
    and a URL only as scheme and host)."""
    from vigil.notify.channels.webhook import shown
    from vigil.notify.config import EmailSpec, SlackSpec

    if isinstance(spec, SlackSpec):
        approvers = len(spec.approvers) + len(spec.approver_groups)
        who = f"{approvers} approver(s)" if approvers else "no approvers"
        return f"slack, {spec.channel} via {shown(spec.api_url)}, {who}"
    if isinstance(spec, EmailSpec):
        return f"email, {spec.host}:{spec.port} ({spec.security}), to {', '.join(spec.to)}"
    return f"{spec.type}, {shown(spec.url)}"


def _route(route: Route) -> str:
    """One route as ``validate`` shows it: what it matches, where it sends, how it groups."""
    matched = [", ".join(sorted(route.events)) if route.events else "every event"]
    for key in ("severity", "policy", "target"):
        value = getattr(route, key)
        if value is not None:
            matched.append(f"{key} {value}")
    if route.tags:
        matched.append("tags " + ", ".join(f"{k}={v}" for k, v in route.tags.items()))
    timing = [
        f"{key} {_duration(value)}"
        for key in ("group_wait", "group_interval", "repeat_interval")
        if (value := getattr(route, key)) is not None
    ]
    if route.continue_:
        timing.insert(0, "continue")
    tail = f" ({', '.join(timing)})" if timing else ""
    return f"{'; '.join(matched)} -> {', '.join(route.channels)}{tail}"


def _duration(seconds: float) -> str:
    """``4h``, ``90s``, ``5m``: in the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@notifications_app.command("test")
def notifications_test(
    channel: Annotated[str, typer.Argument(help="The name of a channel of the file")],
    file: Annotated[
        Path | None,
        typer.Option("--file", help="The notifications file [default: VIGIL_NOTIFICATIONS_FILE]"),
    ] = None,
) -> None:
    """Send a test message through a channel, as Vigil would send a notification, and print
    what the far side answered; exit 1 when it did not take the message."""
    from vigil.cli import load_settings
    from vigil.notify.config import load_notifications

    settings = load_settings()
    path = file or settings.notifications_file
    try:
        notifications = load_notifications(path, webhook_urls=settings.notify_webhook_urls)
    except VigilError as exc:
        typer.echo(f"invalid: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    if channel not in notifications.channels:
        from vigil.strict import unknown_field

        known = list(notifications.channels)
        where = path or "VIGIL_NOTIFY_WEBHOOK_URLS"
        listed = ", ".join(known) if known else "none"
        typer.echo(
            f"error: {unknown_field(channel, known, kind='channel')} in {where}"
            f" (channels: {listed})",
            err=True,
        )
        raise typer.Exit(2)
    ok, answer = asyncio.run(_send_test(notifications, channel, settings))
    spec = notifications.channels[channel]
    if not ok:
        typer.echo(
            f"{channel} ({_channel(spec)}) did not take the test message: {answer}", err=True
        )
        raise typer.Exit(1)
    typer.echo(f"{channel} ({_channel(spec)}) took the test message: {answer}")


async def _send_test(
    notifications: Notifications, name: str, settings: Settings
) -> tuple[bool, str]:
    """Send the test message through channel ``name``: whether it was taken, and what the
    far side answered (the reference it gave, or why it refused)."""
    from vigil.notify.channels.base import DeliveryFailed, Message, links
    from vigil.notify.channels.registry import build_channels
    from vigil.notify.events import NotificationEvent
    from vigil.notify.store import Notification

    record = Notification(
        id=0,
        at=datetime.now(UTC),
        event=NotificationEvent.ACTION_COMPLETED.value,
        policy_name=None,
        target=None,
        action_id=None,
        reason=TEST_REASON,
        details=None,
        severity="info",
        tags=None,
        episode=None,
        delivery_status="pending",
        attempts=0,
        next_attempt_at=None,
        last_error=None,
        delivered_at=None,
        deliveries=None,
    )
    message = Message(
        notifications=(record,),
        links={record.id: links(record, settings.external_url)},
        test=True,
    )
    only = _only(notifications, name)
    channels = build_channels(only, timeout=settings.notify_timeout_seconds)
    channel = channels[name]
    try:
        refs = await channel.send(message)
    except DeliveryFailed as exc:
        return False, str(exc)
    finally:
        for built in channels.values():
            await built.aclose()
    ref: dict[str, Any] = dict(refs.get(record.id) or {})
    answer = ref.pop("answer", None)
    parts = [str(answer)] if answer else []
    if ref:
        parts.append(json.dumps(ref, sort_keys=True, default=str))
    return True, "; ".join(parts) or "taken"


def _only(notifications: Notifications, name: str) -> Notifications:
    """``notifications`` with channel ``name`` alone: only the channel tested is built."""
    from dataclasses import replace

    return replace(notifications, channels={name: notifications.channels[name]}, routes=())
