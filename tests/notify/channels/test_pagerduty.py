"""The pagerduty channel against a local Events API stand-in: the exact events it sends."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

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
from vigil.notify.channels.base import DeliveryFailed
from vigil.notify.channels.pagerduty import PagerDutyChannel, dedup_key
from vigil.notify.channels.registry import build_channels
from vigil.notify.config import NotificationsInvalid, parse_notifications

ROUTING_KEY = "R0UT1NG-k3y-0123456789abcdef"
ACCEPTED = Answer(202, b'{"status":"success","message":"Event processed"}')


def pager(url: str) -> PagerDutyChannel:
    text = f"""
channels:
  - name: pager
    type: pagerduty
    routing_key: ${{PAGERDUTY_ROUTING_KEY}}
    url: {url}/v2/enqueue
routes:
  - event: [action_failed, escalation_exhausted, breaker_opened, episode_resolved]
    channels: [pager]
"""
    notifications = parse_notifications(
        text, source="notifications.yaml", env={"PAGERDUTY_ROUTING_KEY": ROUTING_KEY}
    )
    channel = build_channels(notifications, timeout=2.0)["pager"]
    assert isinstance(channel, PagerDutyChannel)
    return channel


def sent(far_side: FarSide) -> list[dict[str, Any]]:
    assert all(r.path == "/v2/enqueue" for r in far_side.requests)
    assert all(r.headers["content-type"] == "application/json" for r in far_side.requests)
    return [orjson.loads(r.body) for r in far_side.requests]


async def test_a_failure_triggers_an_incident_with_the_action_linked(far_side: FarSide) -> None:
    far_side.answers = [ACCEPTED]
    channel = pager(far_side.url)
    [refs] = await deliver(channel, message(notification()))

    [event] = sent(far_side)
    assert event == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "vigil/web-cpu-high/web-01/7",
        "payload": {
            "summary": "Action failed: web-cpu-high on web-01:"
            " scale-up on web-01 failed at attempt 3: quota exceeded",
            "source": "web-01",
            "severity": "critical",
            "timestamp": "2026-12-07T21:30:05+00:00",
            "component": "scale-up",
            "group": "web-cpu-high",
            "class": "action_failed",
            "custom_details": {
                "event": "action_failed",
                "policy": "web-cpu-high",
                "target": "web-01",
                "action_id": 42,
                "episode": 7,
                "reason": "scale-up on web-01 failed at attempt 3: quota exceeded",
                "details": {"action": "scale-up", "value": 97.5, "attempt": 3},
                "tags": {"team": "web"},
                "facts": FACTS,
            },
        },
        "client": "Vigil",
        "client_url": "https://vigil.example.com/api/v1/actions/42",
        "links": [
            {"href": "https://vigil.example.com/api/v1/actions/42", "text": "The action in Vigil"},
            {
                "href": "https://vigil.example.com/api/v1/policies/web-cpu-high",
                "text": "The policy in Vigil",
            },
        ],
    }
    assert refs == {11: {"dedup_key": "vigil/web-cpu-high/web-01/7"}}


async def test_the_episode_resolving_resolves_the_same_incident(far_side: FarSide) -> None:
    far_side.answers = [ACCEPTED]
    channel = pager(far_side.url)
    await deliver(
        channel,
        message(notification(id=1, event="escalation_exhausted", action_id=None)),
        message(notification(id=2, event="action_failed", action_id=43)),
        message(notification(id=3, event="episode_resolved", action_id=None, severity=None)),
    )

    events = sent(far_side)
    assert [e["event_action"] for e in events] == ["trigger", "trigger", "resolve"]
    assert {e["dedup_key"] for e in events} == {"vigil/web-cpu-high/web-01/7"}
    assert events[2] == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": "vigil/web-cpu-high/web-01/7",
    }


async def test_another_episode_is_another_incident(far_side: FarSide) -> None:
    far_side.answers = [ACCEPTED]
    channel = pager(far_side.url)
    await deliver(
        channel,
        message(notification(id=1, episode=7)),
        message(notification(id=2, episode=8)),
        message(notification(id=3, episode=8, target="web-02")),
    )
    assert [e["dedup_key"] for e in sent(far_side)] == [
        "vigil/web-cpu-high/web-01/7",
        "vigil/web-cpu-high/web-01/8",
        "vigil/web-cpu-high/web-02/8",
    ]


def test_keys_without_an_episode_and_long_keys() -> None:
    assert dedup_key(notification(episode=None)) == "vigil/web-cpu-high/web-01/action-42"
    assert (
        dedup_key(notification(episode=None, action_id=None, target=None, event="breaker_opened"))
        == "vigil/web-cpu-high/-/notification-11"
    )
    assert dedup_key(notification(target="ns/pod a")) == "vigil/web-cpu-high/ns%2Fpod%20a/7"
    long = notification(target="t" * 300)
    key = dedup_key(long)
    assert len(key) <= 255
    assert key.startswith("vigil/sha256/")
    assert dedup_key(notification(id=99, target="t" * 300)) == key
    assert dedup_key(notification(target="u" * 300)) != key


@pytest.mark.parametrize(
    ("severity", "expected"),
    [("critical", "critical"), ("warning", "warning"), ("info", "info"), (None, "error")],
)
async def test_severity_is_mapped(far_side: FarSide, severity: str | None, expected: str) -> None:
    far_side.answers = [ACCEPTED]
    channel = pager(far_side.url)
    await deliver(channel, message(notification(severity=severity)))
    assert sent(far_side)[0]["payload"]["severity"] == expected


async def test_the_summary_is_cut_to_1024_characters(far_side: FarSide) -> None:
    far_side.answers = [ACCEPTED]
    channel = pager(far_side.url)
    await deliver(channel, message(notification(reason="disk full\n" * 500)))
    summary = sent(far_side)[0]["payload"]["summary"]
    assert len(summary) == 1024
    assert summary.startswith("Action failed: web-cpu-high on web-01: disk full disk full")
    assert summary.endswith("…")


async def test_without_an_external_url_the_paths_go_in_the_details(far_side: FarSide) -> None:
    far_side.answers = [ACCEPTED]
    channel = pager(far_side.url)
    await deliver(channel, message(notification(), base_url=None))
    [event] = sent(far_side)
    assert event["links"] == []
    assert "client_url" not in event
    assert event["payload"]["custom_details"]["links"] == {
        "action": "/api/v1/actions/42",
        "policy": "/api/v1/policies/web-cpu-high",
        "notifications": "/api/v1/notifications",
    }


async def test_a_group_is_one_event_each(far_side: FarSide) -> None:
    far_side.answers = [ACCEPTED]
    channel = pager(far_side.url)
    records = [notification(id=i, target=f"web-0{i}", action_id=40 + i) for i in (1, 2, 3)]
    [refs] = await deliver(channel, message(*records))
    assert sorted(e["dedup_key"] for e in sent(far_side)) == [
        "vigil/web-cpu-high/web-01/7",
        "vigil/web-cpu-high/web-02/7",
        "vigil/web-cpu-high/web-03/7",
    ]
    assert refs == {i: {"dedup_key": f"vigil/web-cpu-high/web-0{i}/7"} for i in (1, 2, 3)}


async def test_one_event_of_a_group_refused_fails_the_message(far_side: FarSide) -> None:
    far_side.answers = [ACCEPTED, Answer(400, b'{"status":"invalid event"}'), ACCEPTED]
    channel = pager(far_side.url)
    records = [notification(id=i, target=f"web-0{i}") for i in (1, 2, 3)]
    assert await failure(channel, message(*records)) == 'answered 400: {"status":"invalid event"}'
    assert len(far_side.requests) == 3


async def test_events_that_do_not_page_send_nothing(far_side: FarSide) -> None:
    channel = pager(far_side.url)
    quiet = [
        message(notification(event=event))
        for event in ("approval_waiting", "action_completed", "automation_paused")
    ]
    # an episode's end with no episode known resolves nothing
    quiet.append(message(notification(event="episode_resolved", episode=None)))
    assert await deliver(channel, *quiet) == [{}] * 4
    assert far_side.requests == []


async def test_a_test_message_triggers_then_resolves(far_side: FarSide) -> None:
    far_side.answers = [ACCEPTED]
    channel = pager(far_side.url)
    await deliver(channel, message(notification(event="approval_waiting"), test=True))
    trigger, resolve = sent(far_side)
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"]
    assert trigger["payload"]["summary"].startswith("[test] Approval waiting")


@pytest.mark.parametrize("status", [500, 200, 429])
async def test_any_answer_but_202_is_a_failure(far_side: FarSide, status: int) -> None:
    far_side.answers = [Answer(status, LONG_ANSWER)]
    channel = pager(far_side.url)
    error = await failure(channel)
    assert error == refused(status)
    assert ROUTING_KEY not in error


async def test_a_far_side_that_is_down() -> None:
    channel = pager(f"http://127.0.0.1:{closed_port()}")
    assert "ConnectError" in await failure(channel)


def test_a_route_naming_an_event_that_does_not_page_is_refused() -> None:
    text = """
channels:
  - name: pager
    type: pagerduty
    routing_key: ${KEY}
  - name: mail
    type: email
    host: smtp.example.com
    from: vigil@example.com
    to: [oncall@example.com]
routes:
  - event: [action_failed, approval_waiting]
    channels: [mail, pager]
"""
    with pytest.raises(NotificationsInvalid) as caught:
        parse_notifications(text, source="n.yaml", env={"KEY": "k"})
    assert str(caught.value) == (
        "n.yaml: routes[0]: channel 'pager' is a pagerduty channel, which triggers only on"
        " action_dead_lettered, action_failed, breaker_opened, escalation_exhausted and"
        " resolves on episode_resolved; approval_waiting would never reach it: send them to"
        " other channels in a route of their own"
    )


def pager_through(handler: Any) -> PagerDutyChannel:
    """A pagerduty channel whose requests ``handler`` answers (an httpx mock transport)."""
    spec = pager("https://events.example.com").spec
    return PagerDutyChannel(spec, timeout=2.0, transport=httpx.MockTransport(handler))


async def test_the_events_of_one_incident_go_in_order_and_other_incidents_at_once() -> None:
    # web-01: its trigger (id 1) and resolve (id 2) must not overlap; web-02's trigger (id 3)
    # goes alongside: web-01's trigger is answered only once web-02's has arrived.
    seen: list[str] = []
    other_arrived = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        event = orjson.loads(request.content)
        name = f"{event['event_action']} {event['dedup_key'].split('/')[2]}"
        seen.append(f"start {name}")
        if name == "trigger web-02":
            other_arrived.set()
        if name == "trigger web-01":
            await asyncio.wait_for(other_arrived.wait(), 2.0)
            for _ in range(5):  # room for anything else running at once to start
                await asyncio.sleep(0)
        seen.append(f"end {name}")
        return httpx.Response(202, json={"status": "success"})

    channel = pager_through(handler)
    records = [
        notification(id=2, event="episode_resolved"),
        notification(id=1),
        notification(id=3, target="web-02"),
    ]
    [refs] = await deliver(channel, message(*records))

    web01 = [s for s in seen if s.endswith("web-01")]
    assert web01 == [
        "start trigger web-01",
        "end trigger web-01",
        "start resolve web-01",
        "end resolve web-01",
    ]
    assert seen.index("start trigger web-02") < seen.index("end trigger web-01")
    assert sorted(refs) == [1, 2, 3]


async def test_a_refused_trigger_holds_back_its_resolve_and_names_what_went() -> None:
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        event = orjson.loads(request.content)
        target = event["dedup_key"].split("/")[2]
        seen.append(f"{event['event_action']} {target}")
        if target == "web-01":
            return httpx.Response(429, json={"status": "throttled"})
        return httpx.Response(202, json={"status": "success"})

    channel = pager_through(handler)
    records = [
        notification(id=1),
        notification(id=2, event="episode_resolved"),
        notification(id=3, target="web-02"),
    ]
    with pytest.raises(DeliveryFailed) as caught:
        await deliver(channel, message(*records))
    assert str(caught.value) == 'answered 429: {"status":"throttled"}'
    assert sorted(seen) == ["trigger web-01", "trigger web-02"]
    assert caught.value.taken == {3: {"dedup_key": "vigil/web-cpu-high/web-02/7"}}
