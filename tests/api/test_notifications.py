"""GET /api/v1/notifications, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.api.support import assert_utc_timestamps
from vigil.actions import lifecycle
from vigil.clock import FakeClock
from vigil.container import Container
from vigil.notify import store
from vigil.notify.events import NotificationEvent


async def record(container: Container, **fields: Any) -> int:
    values: dict[str, Any] = {"event": NotificationEvent.ACTION_FAILED, "reason": "x", **fields}
    async with container.database.write() as conn:
        return await store.record_notification(conn, now=container.clock.now(), **values)


async def listed(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/v1/notifications", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_lists_notifications_newest_first_with_filters_and_pages(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    first = await record(
        container,
        event=NotificationEvent.BREAKER_OPENED,
        policy_name="web-cpu-high",
        target="web-01",
        reason="3 failures in 10 minutes",
        details={"failures": 3},
    )
    clock.advance(60)
    second = await record(
        container, event=NotificationEvent.ACTION_FAILED, target="web-02", action_id=7
    )
    clock.advance(60)
    third = await record(
        container,
        event=NotificationEvent.APPROVAL_WAITING,
        policy_name="web-cpu-high",
        target="web-02",
        action_id=8,
    )

    body = await listed(client)
    assert (body["count"], body["total"], body["page"], body["page_size"]) == (3, 3, 1, 50)
    assert [n["id"] for n in body["notifications"]] == [third, second, first]
    assert assert_utc_timestamps(body) >= 3
    oldest = body["notifications"][2]
    assert {k: v for k, v in oldest.items() if k != "delivery"} == {
        "id": first,
        "at": "2026-01-19T12:00:00Z",
        "event": "breaker_opened",
        "policy_name": "web-cpu-high",
        "target": "web-01",
        "action_id": None,
        "reason": "3 failures in 10 minutes",
        "details": {"failures": 3},
        "severity": None,
        "tags": None,
        "episode": None,
    }
    assert set(oldest["delivery"]) >= {"status", "attempts", "last_error", "delivered_at"}

    def ids(page: dict[str, Any]) -> list[int]:
        return [n["id"] for n in page["notifications"]]

    assert ids(await listed(client, event="approval_waiting")) == [third]
    assert ids(await listed(client, policy="web-cpu-high")) == [third, first]
    assert ids(await listed(client, target="web-02")) == [third, second]
    assert ids(await listed(client, start_time="2026-01-19T12:01:00Z")) == [third, second]
    assert ids(await listed(client, end_time="2026-01-19T12:01:00Z")) == [second, first]
    assert ids(await listed(client, policy="nope")) == []
    page = await listed(client, limit=2, page=2)
    assert (ids(page), page["count"], page["total"], page["page_size"]) == ([first], 1, 3, 2)


@pytest.mark.parametrize(
    "params",
    [
        {"event": "breaker_closed"},
        {"delivery": "lost"},
        {"page": "0"},
        {"limit": "0"},
        {"limit": "501"},
        {"start_time": "yesterday"},
        {"end_time": "2026"},
        {"target": "x" * 256},
    ],
)
async def test_bad_filters_get_422_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/api/v1/notifications", params=params)
    assert response.status_code == 422, response.text
    [name] = params
    assert response.json()["detail"][0]["loc"] == ["query", name]


async def test_without_channels_nothing_is_sent_and_notifications_still_list(
    client: httpx.AsyncClient, container: Container
) -> None:
    assert container.notifier.channels == {}
    notification_id = await record(container)
    async with asyncio.timeout(10):
        while True:
            passes = container.notifier.passes  # before looking: no pass slips between
            body = await listed(client, delivery="none")
            if body["notifications"]:
                break
            await container.notifier.wait_for_passes(passes + 1)
    [notification] = body["notifications"]
    assert notification["id"] == notification_id
    assert notification["delivery"] == {
        "status": "none",
        "attempts": 0,
        "last_error": None,
        "delivered_at": None,
        "next_attempt_at": None,
        "channels": [],
    }
    assert (await listed(client, delivery="pending"))["notifications"] == []


async def test_an_action_that_fails_is_listed_as_action_failed(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    response = await client.post(
        "/api/v1/actions", json={"target": "web-01", "action": "restart-service"}
    )
    assert response.status_code == 201, response.text
    action_id = response.json()["action_id"]
    async with container.database.write() as conn:
        await lifecycle.claim(
            conn, action_id=action_id, attempt=1, owner="w", now=clock.now(), lease_seconds=60
        )
        await lifecycle.fail(
            conn,
            action_id=action_id,
            attempt=1,
            owner="w",
            now=clock.now() + timedelta(seconds=1),
            error="permission denied",
            result=None,
        )
    [notification] = (await listed(client, event="action_failed"))["notifications"]
    assert (notification["action_id"], notification["target"]) == (action_id, "web-01")
    assert notification["reason"].endswith("permission denied")
