"""Notifications in the database, on SQLite and on PostgreSQL: recorded in the caller's
transaction, listed, claimed by one sender at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import vigil.notify.store as store
from vigil.api.routes.notifications import notification_out
from vigil.db.engine import Database, create_engine
from vigil.notify.events import DeliveryStatus, NotificationEvent
from vigil.settings import Settings

NOW = datetime(2026, 1, 19, 12, 0, tzinfo=UTC)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(create_engine(Settings(database_url=database_url, db_pool_size=4)))
    yield db
    await db.dispose()


async def record(
    database: Database,
    *,
    now: datetime = NOW,
    event: NotificationEvent = NotificationEvent.ACTION_FAILED,
    reason: str = "restart-service on web-01 failed",
    **fields: Any,
) -> int:
    async with database.write() as conn:
        return await store.record_notification(conn, now=now, event=event, reason=reason, **fields)


async def test_a_notification_round_trips(database: Database) -> None:
    notification_id = await record(
        database,
        event=NotificationEvent.BREAKER_OPENED,
        policy_name="web-cpu-high",
        target="web-01",
        action_id=2**40,
        reason="3 failures in 10 minutes",
        details={"failures": 3, "window": "10m", "nested": {"ok": True}},
    )
    async with database.read() as conn:
        rows, total = await store.list_notifications(conn, page=1, limit=10)
    assert total == 1
    [row] = rows
    assert notification_out(row) == {
        "id": notification_id,
        "at": NOW,
        "event": "breaker_opened",
        "policy_name": "web-cpu-high",
        "target": "web-01",
        "action_id": 2**40,
        "reason": "3 failures in 10 minutes",
        "details": {"failures": 3, "window": "10m", "nested": {"ok": True}},
        "severity": None,
        "tags": None,
        "episode": None,
        "delivery": {
            "status": "pending",
            "attempts": 0,
            "last_error": None,
            "delivered_at": None,
            "next_attempt_at": NOW,
            "channels": [],
        },
    }


async def test_a_notification_commits_with_the_change_that_caused_it_or_not_at_all(
    database: Database,
) -> None:
    async def failing_change() -> None:
        async with database.write() as conn:
            await store.record_notification(
                conn, now=NOW, event=NotificationEvent.ACTION_FAILED, reason="rolled back"
            )
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        await failing_change()
    async with database.read() as conn:
        assert await store.list_notifications(conn, page=1, limit=10) == ([], 0)


async def test_an_unknown_event_is_refused(database: Database) -> None:
    with pytest.raises(ValueError, match="not_an_event"):
        await record(database, event="not_an_event")  # type: ignore[arg-type]


async def test_filters_and_pages_newest_first(database: Database) -> None:
    ids = [
        await record(database, now=NOW + timedelta(minutes=i), event=event, target=target)
        for i, (event, target) in enumerate(
            [
                (NotificationEvent.ACTION_FAILED, "web-01"),
                (NotificationEvent.APPROVAL_WAITING, "web-02"),
                (NotificationEvent.ACTION_FAILED, "web-02"),
                (NotificationEvent.ACTION_DEAD_LETTERED, "web-01"),
            ]
        )
    ]
    async with database.read() as conn:
        rows, total = await store.list_notifications(conn, page=1, limit=3)
        assert ([r.id for r in rows], total) == (ids[::-1][:3], 4)
        rows, _ = await store.list_notifications(conn, page=2, limit=3)
        assert [r.id for r in rows] == [ids[0]]
        rows, total = await store.list_notifications(
            conn, page=1, limit=10, event=NotificationEvent.ACTION_FAILED
        )
        assert ([r.id for r in rows], total) == ([ids[2], ids[0]], 2)
        rows, _ = await store.list_notifications(
            conn,
            page=1,
            limit=10,
            target="web-02",
            start_time=NOW + timedelta(minutes=2),
            end_time=NOW + timedelta(minutes=3),
        )
        assert [r.id for r in rows] == [ids[2]]


async def test_a_due_notification_is_claimed_once_until_its_claim_expires(
    database: Database,
) -> None:
    notification_id = await record(database)
    until = NOW + timedelta(seconds=30)
    async with database.write() as conn:
        [claimed] = await store.claim_due(conn, now=NOW, until=until, limit=10)
        assert claimed.id == notification_id
        assert claimed.next_attempt_at == until
        # Another sender at the same moment finds nothing due.
        assert await store.claim_due(conn, now=NOW, until=until, limit=10) == []
    # Its sender died: once the claim expires, another takes it over.
    later = until + timedelta(seconds=30)
    async with database.write() as conn:
        [again] = await store.claim_due(conn, now=until, until=later, limit=10)
        assert again.id == notification_id
        # The first sender's claim no longer holds: its outcome is not recorded.
        assert not await store.record_attempt(
            conn,
            notification_id=notification_id,
            claimed_until=until,
            status=DeliveryStatus.DELIVERED,
            attempts=1,
            next_attempt_at=None,
            last_error=None,
            delivered_at=until,
            deliveries={},
        )
        assert await store.record_attempt(
            conn,
            notification_id=notification_id,
            claimed_until=later,
            status=DeliveryStatus.DELIVERED,
            attempts=1,
            next_attempt_at=None,
            last_error=None,
            delivered_at=until,
            deliveries={},
        )
        assert await store.claim_due(conn, now=later, until=later, limit=10) == []
        row = await store.get_notification(conn, notification_id=notification_id)
    assert row is not None
    assert (row.delivery_status, row.attempts, row.delivered_at) == (
        "delivered",
        1,
        until,
    )


async def test_without_webhooks_due_notifications_are_settled_as_none(
    database: Database,
) -> None:
    first = await record(database)
    async with database.write() as conn:
        assert len(await store.settle_unsendable(conn, now=NOW)) == 1
        assert await store.settle_unsendable(conn, now=NOW) == []
        row = await store.get_notification(conn, notification_id=first)
    assert row is not None
    assert (row.delivery_status, row.next_attempt_at) == ("none", None)
