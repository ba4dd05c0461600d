"""What the channel tests share: notifications and messages to send, sending them through a
channel, and a far side's long error body (the far side itself is in
:mod:`tests.notify.far_side`)."""

from __future__ import annotations

import gc
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from vigil.notify.channels.base import Channel, DeliveryFailed, Message, Thread, links
from vigil.notify.store import Notification

AT = datetime(2026, 12, 7, 21, 30, 5, tzinfo=UTC)
EXTERNAL = "https://vigil.example.com"


def notification(**fields: Any) -> Notification:
    """An ``action_failed`` notification of web-cpu-high on web-01, changed by ``fields``."""
    values: dict[str, Any] = {
        "id": 11,
        "at": AT,
        "event": "action_failed",
        "policy_name": "web-cpu-high",
        "target": "web-01",
        "action_id": 42,
        "reason": "scale-up on web-01 failed at attempt 3: quota exceeded",
        "details": {"action": "scale-up", "value": 97.5, "attempt": 3},
        "severity": "critical",
        "tags": {"team": "web"},
        "episode": 7,
        "delivery_status": "pending",
        "attempts": 0,
        "next_attempt_at": AT,
        "last_error": None,
        "delivered_at": None,
        "deliveries": None,
    }
    values.update(fields)
    return Notification(**values)


def message(
    *records: Notification,
    base_url: str | None = EXTERNAL,
    threads: dict[int, Thread] | None = None,
    test: bool = False,
) -> Message:
    """A message of ``records`` (default: one :func:`notification`), linked under
    ``base_url`` (``None``: paths)."""
    records = records or (notification(),)
    return Message(
        notifications=tuple(records),
        links={r.id: links(r, base_url) for r in records},
        threads=threads or {},
        test=test,
    )


LONG_ANSWER = ("quota exceeded " * 40).encode()
"""A far side's long error body: a delivery error keeps its first 200 characters."""


def refused(status: int) -> str:
    """The delivery error of a far side answering ``status`` with :data:`LONG_ANSWER`."""
    return f"answered {status}: " + LONG_ANSWER.decode()[:200].strip()


FACTS = {
    "Policy": "web-cpu-high",
    "Target": "web-01",
    "Severity": "critical",
    "Action": "scale-up",
    "Action id": "42",
    "Value": "97.5",
    "Episode": "7",
    "At": "2026-12-07T21:30:05+00:00",
}
"""The facts of :func:`notification`, as a channel shows them."""


async def deliver(channel: Channel, *messages: Message) -> list[dict[int, dict[str, Any]]]:
    """Each of ``messages`` (default: one :func:`message`) sent through ``channel``, which is
    closed after; what each send returned."""
    try:
        return [await channel.send(m) for m in messages or (message(),)]
    finally:
        await channel.aclose()


async def failure(channel: Channel, sent: Message | None = None) -> str:
    """What sending ``sent`` (default: :func:`message`) through ``channel`` fails with; the
    channel is closed after."""
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await channel.send(sent or message())
    finally:
        await channel.aclose()
    return str(caught.value)


def stop_smtp(controller: Controller) -> None:
    """Stop a local SMTP server. aiosmtpd's stopped loop leaves the server side of a
    connection whose client hung up without QUIT (a refused STARTTLS or login) to the
    garbage collector: collect it here, where it is known to be the server's, rather than
    in whichever test runs next."""
    controller.stop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
