"""The notification sender against real HTTP servers, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from tests.notify.far_side import Answer, FarSide, closed_port
from vigil.api.routes.notifications import notification_out
from vigil.clock import FakeClock
from vigil.db.engine import Database, create_engine
from vigil.notify import store
from vigil.notify.channels.registry import build_channels
from vigil.notify.config import Notifications, load_notifications
from vigil.notify.events import NotificationEvent
from vigil.notify.sender import Notifier
from vigil.observability.metrics import VigilMetrics
from vigil.settings import Settings
from vigil.worker.backoff import RetryPolicy

TOKEN = "T0K3N-s3cret"


@dataclass
class Setup:
    database: Database
    clock: FakeClock
    metrics: VigilMetrics

    def notifier(
        self, urls: list[str], *, notifications: Notifications | None = None, **overrides: Any
    ) -> Notifier:
        """A sender to ``urls`` (as VIGIL_NOTIFY_WEBHOOK_URLS) or by ``notifications``."""
        if notifications is None:
            notifications = load_notifications(None, webhook_urls=urls)
        options: dict[str, Any] = {
            "database": self.database,
            "clock": self.clock,
            "metrics": self.metrics,
            "notifications": notifications,
            "channels": build_channels(notifications, timeout=2.0),
            "timeout": 2.0,
            "retry": RetryPolicy(max_attempts=3, base_seconds=1, max_seconds=60),
            "interval": 3600.0,  # only a wake (or a test) runs a pass
        }
        options.update(overrides)
        return Notifier(**options)

    async def record(self, **fields: Any) -> int:
        values: dict[str, Any] = {
            "event": NotificationEvent.ACTION_FAILED,
            "policy_name": "web-cpu-high",
            "target": "web-01",
            "action_id": 42,
            "reason": "scale-up on web-01 failed at attempt 3: quota exceeded",
            "details": {"action": "scale-up", "attempt": 3},
            "severity": "critical",
            "episode": 7,
            "tags": {"region": "eu"},
            **fields,
        }
        async with self.database.write() as conn:
            return await store.record_notification(conn, now=self.clock.now(), **values)

    async def row(self, notification_id: int) -> store.Notification:
        async with self.database.read() as conn:
            row = await store.get_notification(conn, notification_id=notification_id)
        assert row is not None
        return row


@asynccontextmanager
async def setup(database_url: str) -> AsyncIterator[Setup]:
    database = Database(create_engine(Settings(database_url=database_url, db_pool_size=4)))
    try:
        yield Setup(database=database, clock=FakeClock(), metrics=VigilMetrics())
    finally:
        await database.dispose()


def sent(metrics: VigilMetrics, result: str) -> float:
    """Tries with this result, over every event."""
    return sum(
        sample.value
        for family in metrics.registry.collect()
        if family.name == "vigil_notifications"
        for sample in family.samples
        if sample.name == "vigil_notifications_total" and sample.labels["result"] == result
    )


async def test_a_refused_notification_is_sent_again_after_a_backoff_until_delivered(
    database_url: str, far_side: FarSide
) -> None:
    far_side.answers_by_path[f"/hooks/{TOKEN}"] = [Answer(500, b"{}"), Answer(204)]
    async with setup(database_url) as s:
        notifier = s.notifier([f"{far_side.url}/hooks/{TOKEN}"])
        notification_id = await s.record()
        recorded_at = s.clock.now()

        assert await notifier.run_once() == 1
        row = await s.row(notification_id)
        assert (row.delivery_status, row.attempts) == ("pending", 1)
        assert row.last_error == "webhook-1: answered 500: {}"
        # Base 1 s with equal jitter: the next try is due between 0.5 and 1 s later.
        assert row.next_attempt_at is not None
        wait = (row.next_attempt_at - recorded_at).total_seconds()
        assert 0.5 <= wait <= 1.0
        assert await notifier.run_once() == 0  # not due yet

        s.clock.advance(1)
        assert await notifier.run_once() == 1
        row = await s.row(notification_id)
        assert (row.delivery_status, row.attempts) == ("delivered", 2)
        assert row.delivered_at == s.clock.now()
        assert row.last_error is None
        assert row.next_attempt_at is None
        assert await notifier.run_once() == 0

    assert len(far_side.requests) == 2
    first = far_side.requests[0]
    assert first.path == f"/hooks/{TOKEN}"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["x-vigil-event"] == "action_failed"
    assert first.json() == {
        "id": notification_id,
        "event": "action_failed",
        "at": "2026-01-19T12:00:00Z",
        "policy": "web-cpu-high",
        "target": "web-01",
        "action": 42,
        "severity": "critical",
        "episode": 7,
        "tags": {"region": "eu"},
        "reason": "scale-up on web-01 failed at attempt 3: quota exceeded",
        "details": {"action": "scale-up", "attempt": 3},
        "links": {
            "action": "/api/v1/actions/42",
            "policy": "/api/v1/policies/web-cpu-high",
            "notifications": "/api/v1/notifications",
        },
    }
    assert far_side.requests[1].json() == first.json()
    assert (sent(s.metrics, "retrying"), sent(s.metrics, "delivered")) == (1, 1)


async def test_an_unreachable_webhook_fails_after_the_last_attempt(database_url: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hooks/{TOKEN}?key={TOKEN}"
    async with setup(database_url) as s:
        notifier = s.notifier([url])
        notification_id = await s.record(event=NotificationEvent.APPROVAL_WAITING)
        for attempt in (1, 2, 3):
            assert await notifier.run_once() == 1
            row = await s.row(notification_id)
            assert row.attempts == attempt
            s.clock.advance(2 ** (attempt - 1))  # the nominal backoff, jitter or not
        assert row.delivery_status == "failed"
        assert row.next_attempt_at is None
        assert "ConnectError" in str(row.last_error)
        assert await notifier.run_once() == 0
        async with s.database.read() as conn:
            [listed], _ = await store.list_notifications(conn, page=1, limit=10)
        out = notification_out(listed)
        assert out["delivery"]["status"] == "failed"
        [webhook] = out["delivery"]["channels"]
        assert (webhook["channel"], webhook["type"]) == ("webhook-1", "webhook")
        assert webhook["attempts"] == 3
        assert webhook["delivered_at"] is None
    assert TOKEN not in json.dumps(out, default=str)
    assert sent(s.metrics, "failed") == 1


async def test_a_webhook_that_took_it_is_not_sent_it_again(
    database_url: str, far_side: FarSide
) -> None:
    far_side.answers_by_path["/second"] = [Answer(503, b"{}"), Answer(200)]
    async with setup(database_url) as s:
        notifier = s.notifier([f"{far_side.url}/first", f"{far_side.url}/second"])
        notification_id = await s.record(action_id=None, policy_name=None)
        await notifier.run_once()
        row = await s.row(notification_id)
        assert (row.delivery_status, row.attempts) == ("pending", 1)
        assert row.last_error == "webhook-2: answered 503: {}"
        s.clock.advance(1)
        await notifier.run_once()
        row = await s.row(notification_id)
        assert (row.delivery_status, row.attempts) == ("delivered", 2)
        webhooks = notification_out(row)["delivery"]["channels"]
        assert sorted(w["attempts"] for w in webhooks) == [1, 2]
    assert sorted(r.path for r in far_side.requests) == ["/first", "/second", "/second"]
    links = far_side.requests[0].json()["links"]
    assert links == {"action": None, "policy": None, "notifications": "/api/v1/notifications"}


async def test_two_senders_send_each_notification_once(
    database_url: str, far_side: FarSide
) -> None:
    async with setup(database_url) as s, setup(database_url) as other:
        other.clock = s.clock
        ids = [await s.record(target=f"web-{i:02}") for i in range(10)]
        one = s.notifier([far_side.url], batch=4)
        two = other.notifier([far_side.url], batch=4)
        while sum(await asyncio.gather(one.run_once(), two.run_once())):
            pass
        rows = [await s.row(i) for i in ids]
    assert {r.delivery_status for r in rows} == {"delivered"}
    assert sorted(r.json()["id"] for r in far_side.requests) == ids


async def test_without_channels_nothing_is_sent_and_notifications_settle_as_none(
    database_url: str,
) -> None:
    async with setup(database_url) as s:
        notifier = s.notifier([])
        notification_id = await s.record()
        assert await notifier.run_once() == 1
        row = await s.row(notification_id)
        assert (row.delivery_status, row.attempts) == ("none", 0)
        assert await notifier.run_once() == 0


async def test_a_commit_that_recorded_a_notification_wakes_the_sender(
    database_url: str, far_side: FarSide
) -> None:
    async with setup(database_url) as s:
        notifier = s.notifier([far_side.url])  # an hour between passes otherwise
        await notifier.start()
        try:
            async with asyncio.timeout(10):
                await notifier.wait_for_passes(1)
                notification_id = await s.record()
                while True:
                    # The count before looking: a pass that ends between the look and the
                    # wait is not waited for in vain.
                    passes = notifier.passes
                    if (await s.row(notification_id)).delivery_status == "delivered":
                        break
                    await notifier.wait_for_passes(passes + 1)
        finally:
            await notifier.stop()
    assert [r.json()["id"] for r in far_side.requests] == [notification_id]


async def test_a_failing_pass_does_not_stop_the_sender(
    database_url: str, far_side: FarSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    claim_due = store.claim_due
    calls = 0

    async def flaky_claim(*args: Any, **kwargs: Any) -> list[store.Notification]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a surprise")
        return await claim_due(*args, **kwargs)

    monkeypatch.setattr(store, "claim_due", flaky_claim)
    async with setup(database_url) as s:
        notifier = s.notifier([far_side.url])
        notification_id = await s.record()
        await notifier.start()
        try:
            async with asyncio.timeout(10):
                await notifier.wait_for_passes(1)  # the one that failed
                notifier.wake()
                await notifier.wait_for_passes(2)
        finally:
            await notifier.stop()
        assert (await s.row(notification_id)).delivery_status == "delivered"
