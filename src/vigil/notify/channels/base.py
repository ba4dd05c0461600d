"""What every channel shares: the message it is given, what it answers, how it fails, and
the words and links each renders an event with.

A channel's :meth:`Channel.send` delivers one :class:`Message` and returns what the far side
gave back to refer to each message later (a Slack message's channel and ``ts``), keyed by
notification id; it raises :class:`DeliveryFailed` with the far side's answer (its status and
the first 200 characters of its body) when the message was not taken. The sender retries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from vigil.notify.events import NotificationEvent
from vigil.notify.store import Notification

API_PREFIX = "/api/v1"
ANSWER_CHARS = 200
"""How much of a far side's answer a delivery error keeps."""


class DeliveryFailed(Exception):
    """The far side did not take the message; the text says what it answered (never a URL
    with its path, which may carry a token, nor a secret).

    ``taken`` names the notifications of the message that did go out before the failure
    (a send that posts several messages), each with its ref: the sender records them as
    delivered and does not send them again."""

    def __init__(self, text: str, *, taken: dict[int, dict[str, Any]] | None = None) -> None:
        super().__init__(text)
        self.taken = dict(taken or {})


def answer_text(status: int, body: str | bytes) -> str:
    """What an HTTP far side answered: ``answered 500: <first 200 characters of the body>``
    (whitespace folded)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())[:ANSWER_CHARS]
    return f"answered {status}" + (f": {text}" if text else "")


def http_failure(status: int, body: str | bytes) -> DeliveryFailed:
    """A refusal by an HTTP far side, saying what it answered (:func:`answer_text`)."""
    return DeliveryFailed(answer_text(status, body))


@dataclass(frozen=True, slots=True)
class Thread:
    """An earlier message about the same action on the same channel: its ``ref`` (what its
    send returned) and the notification it told about."""

    ref: Mapping[str, Any]
    origin: Notification


@dataclass(frozen=True, slots=True)
class Message:
    """What a channel sends at once: one notification, or a route's group of them (oldest
    first), with each one's links and, per notification, the thread it continues."""

    notifications: tuple[Notification, ...]
    links: Mapping[int, Mapping[str, str | None]]
    """Per notification id: ``action``, ``policy`` and ``notifications`` links (absolute when
    ``VIGIL_EXTERNAL_URL`` is set, else paths)."""
    threads: Mapping[int, Thread] = field(default_factory=dict)
    test: bool = False
    """Sent by ``vigil notifications test``: say so in the message."""

    @property
    def grouped(self) -> bool:
        return len(self.notifications) > 1


class Channel(ABC):
    """One configured channel."""

    type: str

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    async def send(self, message: Message) -> dict[int, dict[str, Any]]:
        """Deliver ``message``; per notification id, what to keep to refer to it later
        (empty when nothing is). Raises :class:`DeliveryFailed` when it was not taken."""

    async def aclose(self) -> None:  # noqa: B027 - most channels hold nothing to close
        """Release what the channel holds (clients, connections)."""


def links(record: Notification, base_url: str | None) -> dict[str, str | None]:
    """Where to read more about ``record``: its action, its policy (``None`` when it has
    none) and the notification list; absolute under ``base_url`` when it is given, else
    paths."""
    base = (base_url or "").rstrip("/") + API_PREFIX
    action, policy = record.action_id, record.policy_name
    return {
        "action": None if action is None else f"{base}/actions/{action}",
        "policy": None if policy is None else f"{base}/policies/{quote(policy, safe='')}",
        "notifications": f"{base}/notifications",
    }


TITLES: Mapping[str, str] = {
    NotificationEvent.BREAKER_OPENED: "Circuit breaker opened",
    NotificationEvent.ESCALATION_EXHAUSTED: "Escalation exhausted",
    NotificationEvent.ACTION_FAILED: "Action failed",
    NotificationEvent.ACTION_DEAD_LETTERED: "Action dead-lettered",
    NotificationEvent.APPROVAL_WAITING: "Approval waiting",
    NotificationEvent.ACTION_COMPLETED: "Action completed",
    NotificationEvent.ACTION_VERIFIED: "Action verified",
    NotificationEvent.ACTION_UNVERIFIED: "Action did not help",
    NotificationEvent.EPISODE_RESOLVED: "Violation resolved",
    NotificationEvent.AUTOMATION_PAUSED: "Automation paused",
    NotificationEvent.AUTOMATION_RESUMED: "Automation resumed",
}


def title(record: Notification) -> str:
    """A short headline: the event's title, and what it is about."""
    head = TITLES.get(record.event, record.event.replace("_", " ").capitalize())
    about = " on ".join(part for part in (record.policy_name, record.target) if part)
    return f"{head}: {about}" if about else head


def facts(record: Notification) -> list[tuple[str, str]]:
    """The (label, value) pairs every channel shows under the headline, those known only."""
    details = record.details or {}
    pairs = [
        ("Policy", record.policy_name),
        ("Target", record.target),
        ("Severity", record.severity),
        ("Action", details.get("action") if isinstance(details.get("action"), str) else None),
        ("Action id", None if record.action_id is None else str(record.action_id)),
        ("Value", _value(details.get("value"))),
        ("Episode", None if record.episode is None else str(record.episode)),
        ("At", record.at.isoformat()),
    ]
    return [(label, value) for label, value in pairs if value]


def _value(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return f"{value:g}"


def cut(text: str, limit: int, more: str | None = None) -> str:
    """``text`` cut to ``limit`` characters; when cut, it ends with ``…`` and, if given, a
    pointer to the rest (``more``), still within the limit."""
    if len(text) <= limit:
        return text
    tail = "…" + (f" {more}" if more else "")
    return text[: max(0, limit - len(tail))] + tail
