"""What the channel tests share: notifications and messages to send, and a far side's long
error body (the far side itself is in :mod:`tests.notify.far_side`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from vigil.notify.channels.base import Message, Thread, links
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
