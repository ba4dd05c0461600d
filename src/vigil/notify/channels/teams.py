"""The ``teams`` channel: a Microsoft Teams Workflows webhook ("Post to a channel when a
webhook request is received"), given an Adaptive Card.

Not the Office 365 connectors' ``MessageCard``: those connectors are retired. The body is a
``message`` with one attachment of content type ``application/vnd.microsoft.card.adaptive``
(card version 1.4, what Teams renders). A route's group is one card listing each event (at
most :data:`LISTED`, then a count and a link to the rest). Links become buttons only when
absolute (``VIGIL_EXTERNAL_URL``): Teams opens no relative URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

import vigil
from vigil.notify.channels.base import Message, cut, facts, title
from vigil.notify.channels.posting import PostingChannel
from vigil.notify.config import TeamsSpec
from vigil.notify.store import Notification

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.4"
LISTED = 20
"""The most events one card lists; a larger group ends with how many more there are."""
REASON_CHARS = 2000
GROUP_REASON_CHARS = 400
COLORS = {"critical": "Attention", "warning": "Warning"}


def _absolute(href: str | None) -> str | None:
    return href if href and href.startswith(("http://", "https://")) else None


def _event(
    record: Notification, links: Mapping[str, str | None], *, reason_chars: int, head: str
) -> list[dict[str, Any]]:
    """The card elements telling about one event."""
    action = _absolute(links.get("action"))
    items: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": title(record),
            "size": head,
            "weight": "Bolder",
            "wrap": True,
            "color": COLORS.get(record.severity or "", "Default"),
        },
        {
            "type": "TextBlock",
            "text": cut(record.reason, reason_chars, action),
            "wrap": True,
        },
        {
            "type": "FactSet",
            "facts": [{"title": label, "value": value} for label, value in facts(record)],
        },
    ]
    if action is None and links.get("action"):
        items.append(
            {
                "type": "TextBlock",
                "text": f"Action: {links['action']}",
                "wrap": True,
                "size": "Small",
            }
        )
    return items


def card(message: Message) -> dict[str, Any]:
    """The Adaptive Card telling about ``message``."""
    records = message.notifications
    body: list[dict[str, Any]] = []
    if message.test:
        body.append(
            {
                "type": "TextBlock",
                "text": "Test message from Vigil (vigil notifications test)",
                "isSubtle": True,
                "wrap": True,
            }
        )
    actions: list[dict[str, Any]] = []
    if not message.grouped:
        record = records[0]
        links = message.links.get(record.id) or {}
        body.extend(_event(record, links, reason_chars=REASON_CHARS, head="Large"))
        for name, text in (("action", "Open action"), ("policy", "Open policy")):
            href = _absolute(links.get(name))
            if href is not None:
                actions.append({"type": "Action.OpenUrl", "title": text, "url": href})
    else:
        body.append(
            {
                "type": "TextBlock",
                "text": f"{len(records)} Vigil events",
                "size": "Large",
                "weight": "Bolder",
                "wrap": True,
            }
        )
        for record in records[:LISTED]:
            links = message.links.get(record.id) or {}
            body.append(
                {
                    "type": "Container",
                    "separator": True,
                    "items": _event(record, links, reason_chars=GROUP_REASON_CHARS, head="Medium"),
                }
            )
        if len(records) > LISTED:
            body.append(
                {
                    "type": "TextBlock",
                    "text": f"… and {len(records) - LISTED} more",
                    "wrap": True,
                    "separator": True,
                }
            )
    first = message.links.get(records[0].id) or {}
    listing = _absolute(first.get("notifications"))
    if listing is not None:
        actions.append({"type": "Action.OpenUrl", "title": "All notifications", "url": listing})
    content: dict[str, Any] = {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body,
        "msteams": {"width": "Full"},
    }
    if actions:
        content["actions"] = actions
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_TYPE, "contentUrl": None, "content": content}],
    }


class TeamsChannel(PostingChannel):
    type = "teams"

    def __init__(
        self,
        spec: TeamsSpec,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(spec, timeout=timeout, transport=transport)
        self.spec = spec

    async def send(self, message: Message) -> dict[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json", "User-Agent": f"vigil/{vigil.__version__}"}
        answer = await self._poster.post(self.spec.url, orjson.dumps(card(message)), headers)
        return {r.id: {"answer": answer} for r in message.notifications} if message.test else {}
