"""The teams channel against a local Workflows webhook stand-in: the Adaptive Card it posts."""

from __future__ import annotations

from typing import Any

import orjson

from tests.notify.channels.conftest import (
    FACTS,
    LONG_ANSWER,
    deliver,
    failure,
    message,
    notification,
    refused,
)
from tests.notify.far_side import Answer, FarSide, closed_port
from vigil.notify.channels.registry import build_channels
from vigil.notify.channels.teams import TeamsChannel
from vigil.notify.config import parse_notifications

SIGNATURE = "sig=Zm9vYmFyc2VjcmV0"
ELEMENTS = {"TextBlock", "FactSet", "Container"}


def teams(url: str) -> TeamsChannel:
    text = f"""
channels:
  - name: teams
    type: teams
    url: {url}/workflows/abc/triggers/manual/paths/invoke?api-version=1&{SIGNATURE}
routes:
  - channels: [teams]
"""
    notifications = parse_notifications(text, source="notifications.yaml", env={})
    channel = build_channels(notifications, timeout=2.0)["teams"]
    assert isinstance(channel, TeamsChannel)
    return channel


def card_of(far_side: FarSide) -> dict[str, Any]:
    """The one request's Adaptive Card, after checking the envelope around it."""
    [request] = far_side.requests
    assert request.path.startswith("/workflows/abc/triggers/manual/paths/invoke?")
    assert request.headers["content-type"] == "application/json"
    body = orjson.loads(request.body)
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    card: dict[str, Any] = attachment["content"]
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4"
    assert card["body"]
    for element in walk(card["body"]):
        assert element["type"] in ELEMENTS
        if element["type"] == "TextBlock":
            assert isinstance(element["text"], str)
            assert element["text"]
        if element["type"] == "FactSet":
            assert all(set(f) == {"title", "value"} for f in element["facts"])
    for action in card.get("actions", []):
        assert action["type"] == "Action.OpenUrl"
        assert action["url"].startswith("https://")
    return card


def walk(elements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for element in elements:
        out.append(element)
        out.extend(walk(element.get("items", [])))
    return out


def texts(card: dict[str, Any]) -> list[str]:
    return [e["text"] for e in walk(card["body"]) if e["type"] == "TextBlock"]


async def test_one_event_is_a_card_with_facts_and_buttons(far_side: FarSide) -> None:
    far_side.answers = [Answer(202)]
    channel = teams(far_side.url)
    assert await deliver(channel) == [{}]

    card = card_of(far_side)
    assert texts(card) == [
        "Action failed: web-cpu-high on web-01",
        "scale-up on web-01 failed at attempt 3: quota exceeded",
    ]
    [facts] = [e for e in card["body"] if e["type"] == "FactSet"]
    assert {f["title"]: f["value"] for f in facts["facts"]} == FACTS
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Open action",
            "url": "https://vigil.example.com/api/v1/actions/42",
        },
        {
            "type": "Action.OpenUrl",
            "title": "Open policy",
            "url": "https://vigil.example.com/api/v1/policies/web-cpu-high",
        },
        {
            "type": "Action.OpenUrl",
            "title": "All notifications",
            "url": "https://vigil.example.com/api/v1/notifications",
        },
    ]


async def test_relative_links_are_no_buttons(far_side: FarSide) -> None:
    channel = teams(far_side.url)
    await deliver(channel, message(base_url=None))
    card = card_of(far_side)
    assert "actions" not in card
    assert "Action: /api/v1/actions/42" in texts(card)


async def test_a_group_lists_each_event(far_side: FarSide) -> None:
    channel = teams(far_side.url)
    records = [notification(id=i, target=f"web-0{i}") for i in (1, 2, 3)]
    await deliver(channel, message(*records))
    card = card_of(far_side)
    assert texts(card)[0] == "3 Vigil events"
    heads = [e["items"][0]["text"] for e in card["body"] if e["type"] == "Container"]
    assert heads == [f"Action failed: web-cpu-high on web-0{i}" for i in (1, 2, 3)]


async def test_a_large_group_stays_small(far_side: FarSide) -> None:
    channel = teams(far_side.url)
    records = [notification(id=i, target=f"web-{i}", reason="x" * 5000) for i in range(100)]
    await deliver(channel, message(*records))
    card = card_of(far_side)
    assert len(far_side.requests[0].body) < 28_000  # what Teams takes in one message
    assert sum(e["type"] == "Container" for e in card["body"]) == 20
    assert texts(card)[-1] == "… and 80 more"


async def test_a_test_message_says_so(far_side: FarSide) -> None:
    channel = teams(far_side.url)
    await deliver(channel, message(test=True))
    assert texts(card_of(far_side))[0] == "Test message from Vigil (vigil notifications test)"


async def test_a_refusal_is_a_failure_with_the_answer(far_side: FarSide) -> None:
    far_side.answers = [Answer(500, LONG_ANSWER)]
    channel = teams(far_side.url)
    assert await failure(channel) == refused(500)


async def test_a_far_side_that_is_down_is_a_failure_without_the_signature() -> None:
    channel = teams(f"http://127.0.0.1:{closed_port()}")
    error = await failure(channel)
    assert "ConnectError" in error
    assert SIGNATURE not in error
