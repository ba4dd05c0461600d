"""Routes, groups, repeats and threads: what the sender does with each notification, on
SQLite and on PostgreSQL. The channels here record the messages they are given; the far
sides themselves are tested with each channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import func, select

from vigil.api.routes.notifications import notification_out
from vigil.clock import FakeClock
from vigil.db.engine import Database, create_engine
from vigil.db.tables import notification_marks
from vigil.notify import store
from vigil.notify.channels.base import Channel, DeliveryFailed, Message
from vigil.notify.config import parse_notifications
from vigil.notify.events import NotificationEvent
from vigil.notify.sender import Notifier
from vigil.observability.metrics import VigilMetrics
from vigil.settings import Settings
from vigil.worker.backoff import RetryPolicy


class Recording(Channel):
    """A channel that keeps each message; refuses while ``refusing`` is set."""

    type = "webhook"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.messages: list[Message] = []
        self.refusing: str | None = None

    async def send(self, message: Message) -> dict[int, dict[str, Any]]:
        if self.refusing:
            raise DeliveryFailed(self.refusing)
        self.messages.append(message)
        return {n.id: {"ts": f"{self.name}-{n.id}"} for n in message.notifications}

    def events(self) -> list[list[str]]:
        return [[n.event for n in m.notifications] for m in self.messages]


@dataclass
class Rig:
    database: Database
    clock: FakeClock
    metrics: VigilMetrics
    notifier: Notifier
    channels: dict[str, Recording] = field(default_factory=dict)

    async def record(self, event: NotificationEvent, **fields: Any) -> int:
        values: dict[str, Any] = {
            "policy_name": "web-cpu-high",
            "target": "web-01",
            "reason": "why",
            "severity": "critical",
            **fields,
        }
        async with self.database.write() as conn:
            return await store.record_notification(
                conn, now=self.clock.now(), event=event, **values
            )

    async def row(self, notification_id: int) -> store.Notification:
        async with self.database.read() as conn:
            row = await store.get_notification(conn, notification_id=notification_id)
        assert row is not None
        return row

    async def drain(self) -> None:
        while await self.notifier.run_once():
            pass


FILE = """
channels:
  - {name: chat, type: webhook, url: "http://chat.invalid/"}
  - {name: pager, type: webhook, url: "http://pager.invalid/"}
  - {name: mail, type: webhook, url: "http://mail.invalid/"}
routes:
  - event: [approval_waiting, action_completed, action_failed]
    policy: "web-*"
    channels: [chat]
    continue: true
  - event: [action_failed, escalation_exhausted]
    severity: critical
    channels: [pager]
    group_wait: 30s
    group_interval: 2m
  - event: [action_failed, escalation_exhausted, breaker_opened]
    channels: [mail]
    repeat_interval: 1h
"""


@asynccontextmanager
async def rig(database_url: str, text: str = FILE) -> AsyncIterator[Rig]:
    database = Database(create_engine(Settings(database_url=database_url, db_pool_size=4)))
    notifications = parse_notifications(text, source="notifications.yaml", env={})
    channels = {name: Recording(name) for name in notifications.channels}
    clock = FakeClock()
    metrics = VigilMetrics()
    notifier = Notifier(
        database=database,
        clock=clock,
        metrics=metrics,
        notifications=notifications,
        channels=channels,
        timeout=2.0,
        retry=RetryPolicy(max_attempts=3, base_seconds=1, max_seconds=60),
        interval=3600.0,
        external_url="https://vigil.example.com",
    )
    try:
        yield Rig(database, clock, metrics, notifier, channels)
    finally:
        await database.dispose()


async def test_the_first_matching_route_wins_unless_it_says_continue(database_url: str) -> None:
    async with rig(database_url) as r:
        failed = await r.record(NotificationEvent.ACTION_FAILED, action_id=5)
        waiting = await r.record(NotificationEvent.APPROVAL_WAITING, action_id=6)
        warning = await r.record(NotificationEvent.ACTION_FAILED, severity="warning")
        other = await r.record(NotificationEvent.ACTION_FAILED, policy_name="db-disk")
        await r.drain()
        # action_failed, critical, web-*: chat (continue), then pager (held for its group):
        # the pager route matched and does not continue, so mail is not reached.
        assert (await r.row(failed)).delivery_status == "pending"
        assert notification_out(await r.row(failed))["delivery"]["channels"][1]["held_until"]
        assert (await r.row(waiting)).delivery_status == "delivered"
        # A warning is not for the pager: it falls through to mail.
        assert (await r.row(warning)).delivery_status == "delivered"
        assert (await r.row(other)).delivery_status == "pending"  # pager, held
    chat = [[n.id for n in m.notifications] for m in r.channels["chat"].messages]
    assert sorted(chat) == [[failed], [waiting], [warning]]
    assert [[n.id for n in m.notifications] for m in r.channels["mail"].messages] == [[warning]]
    assert r.channels["pager"].messages == []


async def test_events_no_route_names_are_settled_as_none(database_url: str) -> None:
    async with rig(database_url) as r:
        paused = await r.record(NotificationEvent.AUTOMATION_PAUSED, policy_name=None)
        await r.drain()
        row = await r.row(paused)
    assert (row.delivery_status, row.deliveries) == ("none", None)
    assert not any(c.messages for c in r.channels.values())


async def test_a_group_goes_out_as_one_message_after_group_wait(database_url: str) -> None:
    async with rig(database_url) as r:
        first = await r.record(NotificationEvent.ACTION_FAILED, target="api-1", policy_name="x")
        r.clock.advance(10)
        second = await r.record(NotificationEvent.ACTION_FAILED, target="api-2", policy_name="x")
        r.clock.advance(10)
        third = await r.record(
            NotificationEvent.ESCALATION_EXHAUSTED, target="api-3", policy_name="x"
        )
        await r.drain()
        assert r.channels["pager"].messages == []
        held = await r.row(third)
        assert held.next_attempt_at == (await r.row(first)).at.replace() + _seconds(30)
        r.clock.advance(9)  # 29 s after the first: not yet
        await r.drain()
        assert r.channels["pager"].messages == []
        r.clock.advance(1)
        await r.drain()
        assert [[n.id for n in m.notifications] for m in r.channels["pager"].messages] == [
            [first, second, third]
        ]
        for notification_id in (first, second, third):
            assert (await r.row(notification_id)).delivery_status == "delivered"
        # A later event of the group waits for group_interval after that message.
        r.clock.advance(5)
        fourth = await r.record(NotificationEvent.ACTION_FAILED, target="api-4", policy_name="x")
        await r.drain()
        row = await r.row(fourth)
        assert row.next_attempt_at == r.clock.now() - _seconds(5) + _seconds(120)
        r.clock.advance(115)
        await r.drain()
        assert (await r.row(fourth)).delivery_status == "delivered"
    assert len(r.channels["pager"].messages) == 2
    assert r.channels["pager"].messages[0].grouped


async def test_a_refused_group_is_tried_again_as_one(database_url: str) -> None:
    async with rig(database_url) as r:
        ids = [
            await r.record(NotificationEvent.ACTION_FAILED, target=f"api-{i}", policy_name="x")
            for i in range(3)
        ]
        r.clock.advance(30)
        r.channels["pager"].refusing = "answered 500: quota"
        await r.drain()
        rows = [await r.row(i) for i in ids]
        assert {row.delivery_status for row in rows} == {"pending"}
        assert {row.last_error for row in rows} == {"pager: answered 500: quota"}
        assert len({row.next_attempt_at for row in rows}) == 1
        r.channels["pager"].refusing = None
        r.clock.advance(2)
        await r.drain()
        assert {(await r.row(i)).delivery_status for i in ids} == {"delivered"}
    assert [len(m.notifications) for m in r.channels["pager"].messages] == [3]


async def test_a_repeat_within_repeat_interval_is_skipped(database_url: str) -> None:
    async with rig(database_url) as r:
        first = await r.record(NotificationEvent.BREAKER_OPENED)
        await r.drain()
        r.clock.advance(600)
        again = await r.record(NotificationEvent.BREAKER_OPENED)
        elsewhere = await r.record(NotificationEvent.BREAKER_OPENED, target="web-02")
        await r.drain()
        skipped = await r.row(again)
        assert skipped.delivery_status == "delivered"
        [entry] = notification_out(skipped)["delivery"]["channels"]
        assert (entry["channel"], entry["skipped"], entry["attempts"]) == ("mail", "repeat", 0)
        r.clock.advance(3000)  # an hour after the first
        later = await r.record(NotificationEvent.BREAKER_OPENED)
        await r.drain()
    sent = [[n.id for n in m.notifications] for m in r.channels["mail"].messages]
    assert sent == [[first], [elsewhere], [later]]
    skipped_count = sum(
        sample.value
        for family in r.metrics.registry.collect()
        for sample in family.samples
        if sample.name == "vigil_notifications_total"
        and sample.labels == {"event": "breaker_opened", "channel": "mail", "result": "skipped"}
    )
    assert skipped_count == 1


async def test_later_messages_about_an_action_continue_the_first_ones_thread(
    database_url: str,
) -> None:
    async with rig(database_url) as r:
        waiting = await r.record(NotificationEvent.APPROVAL_WAITING, action_id=9)
        await r.drain()
        completed = await r.record(NotificationEvent.ACTION_COMPLETED, action_id=9)
        other = await r.record(NotificationEvent.ACTION_COMPLETED, action_id=10)
        await r.drain()
    first, second, third = r.channels["chat"].messages
    assert first.threads == {}
    assert second.notifications[0].id == completed
    thread = second.threads[completed]
    assert (thread.ref, thread.origin.id) == ({"ts": f"chat-{waiting}"}, waiting)
    assert third.notifications[0].id == other
    assert third.threads == {}
    assert second.links[completed] == {
        "action": "https://vigil.example.com/api/v1/actions/9",
        "policy": "https://vigil.example.com/api/v1/policies/web-cpu-high",
        "notifications": "https://vigil.example.com/api/v1/notifications",
    }


async def test_messages_about_one_action_due_together_go_in_order(database_url: str) -> None:
    async with rig(database_url) as r:
        waiting = await r.record(NotificationEvent.APPROVAL_WAITING, action_id=9)
        completed = await r.record(NotificationEvent.ACTION_COMPLETED, action_id=9)
        await r.drain()
    first, second = r.channels["chat"].messages
    assert [first.notifications[0].id, second.notifications[0].id] == [waiting, completed]
    assert second.threads[completed].origin.id == waiting


@pytest.mark.parametrize("attempts", [3])
async def test_a_channel_that_keeps_refusing_ends_failed_with_its_answer(
    database_url: str, attempts: int
) -> None:
    async with rig(database_url) as r:
        r.channels["mail"].refusing = "answered 500: " + "x" * 200
        notification_id = await r.record(NotificationEvent.BREAKER_OPENED)
        for _ in range(attempts):
            await r.drain()
            r.clock.advance(120)
        row = await r.row(notification_id)
    assert (row.delivery_status, row.attempts) == ("failed", attempts)
    assert row.last_error == "mail: answered 500: " + "x" * 200


def _seconds(value: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)


async def test_a_channel_that_gives_up_does_not_end_another_ones_wait(database_url: str) -> None:
    text = """
channels:
  - {name: pager, type: webhook, url: "http://pager.invalid/"}
  - {name: teams, type: webhook, url: "http://teams.invalid/"}
routes:
  - {channels: [pager], group_wait: 60s, continue: true}
  - {channels: [teams]}
"""
    async with rig(database_url, text) as r:
        r.channels["teams"].refusing = "answered 500: down"
        failed = await r.record(NotificationEvent.ACTION_FAILED)
        for _ in range(3):  # every attempt teams has, within the pager's group_wait
            await r.drain()
            r.clock.advance(8)
        row = await r.row(failed)
        assert row.delivery_status == "pending"
        channels = {c["channel"]: c for c in notification_out(row)["delivery"]["channels"]}
        assert channels["teams"]["attempts"] == 3
        assert channels["pager"]["held_until"] is not None
        r.clock.advance(60)
        await r.drain()
        row = await r.row(failed)
    assert (row.delivery_status, row.last_error) == ("failed", "teams: answered 500: down")
    assert [[n.id for n in m.notifications] for m in r.channels["pager"].messages] == [[failed]]
    assert r.channels["teams"].messages == []


async def test_a_resolve_waits_for_its_trigger_that_is_retrying(database_url: str) -> None:
    text = """
channels:
  - {name: pager, type: webhook, url: "http://pager.invalid/"}
routes:
  - {channels: [pager], event: [escalation_exhausted, episode_resolved]}
"""
    async with rig(database_url, text) as r:
        r.channels["pager"].refusing = "answered 429: slow down"
        trigger = await r.record(NotificationEvent.ESCALATION_EXHAUSTED, episode=3, action_id=8)
        await r.drain()
        r.channels["pager"].refusing = None
        resolve = await r.record(NotificationEvent.EPISODE_RESOLVED, episode=3)
        other = await r.record(NotificationEvent.EPISODE_RESOLVED, episode=4)
        await r.drain()
        assert [m.notifications[0].id for m in r.channels["pager"].messages] == [other]
        row = await r.row(resolve)
        assert row.delivery_status == "pending"
        assert row.next_attempt_at == (await r.row(trigger)).next_attempt_at
        r.clock.advance(2)
        await r.drain()
    sent = [m.notifications[0].id for m in r.channels["pager"].messages]
    assert sent == [other, trigger, resolve]


async def test_one_pass_sends_a_repeat_once(database_url: str) -> None:
    async with rig(database_url) as r:
        ids = [await r.record(NotificationEvent.BREAKER_OPENED) for _ in range(3)]
        await r.drain()
        rows = [await r.row(i) for i in ids]
    assert [[n.id for n in m.notifications] for m in r.channels["mail"].messages] == [ids[:1]]
    assert {row.delivery_status for row in rows} == {"delivered"}
    skipped = [notification_out(row)["delivery"]["channels"][0]["skipped"] for row in rows]
    assert skipped == [None, "repeat", "repeat"]


class Partial(Recording):
    """Posts the first notification of a group, then fails."""

    async def send(self, message: Message) -> dict[int, dict[str, Any]]:
        if len(message.notifications) > 1 and self.refusing:
            first = message.notifications[0]
            raise DeliveryFailed(self.refusing, taken={first.id: {"ts": "first"}})
        return await super().send(message)


async def test_what_went_out_before_a_failure_is_not_sent_again(database_url: str) -> None:
    text = """
channels:
  - {name: chat, type: webhook, url: "http://chat.invalid/"}
routes:
  - {channels: [chat], group_wait: 10s}
"""
    async with rig(database_url, text) as r:
        r.channels["chat"] = partial = Partial("chat")
        r.notifier.channels["chat"] = partial
        partial.refusing = "answered 500: later post failed"
        first = await r.record(NotificationEvent.APPROVAL_WAITING, action_id=1)
        second = await r.record(NotificationEvent.APPROVAL_WAITING, action_id=2)
        r.clock.advance(10)
        await r.drain()
        assert (await r.row(first)).delivery_status == "delivered"
        assert (await r.row(first)).deliveries["chat"]["ref"] == {"ts": "first"}  # type: ignore[index]
        assert (await r.row(second)).delivery_status == "pending"
        partial.refusing = None
        r.clock.advance(5)
        await r.drain()
        assert (await r.row(second)).delivery_status == "delivered"
    assert [[n.id for n in m.notifications] for m in partial.messages] == [[second]]


async def test_messages_about_one_action_go_one_a_pass_in_order_and_the_sender_goes_on(
    database_url: str,
) -> None:
    async with rig(database_url) as r:
        ids = [
            await r.record(event, action_id=4)
            for event in (
                NotificationEvent.APPROVAL_WAITING,
                NotificationEvent.ACTION_COMPLETED,
                NotificationEvent.ACTION_FAILED,
            )
        ]
        assert await r.notifier.run_once() == 3
        assert [m.notifications[0].id for m in r.channels["chat"].messages] == ids[:1]
        assert r.notifier._wake.is_set()  # the next pass comes at once
        await r.drain()
    assert [m.notifications[0].id for m in r.channels["chat"].messages] == ids


PAGES = """
channels:
  - {name: pager, type: webhook, url: "http://pager.invalid/"}
  - {name: chat, type: webhook, url: "http://chat.invalid/"}
routes:
  - {channels: [pager], event: [escalation_exhausted, action_failed], group_wait: 30s}
  - {channels: [pager], event: [episode_resolved]}
  - {channels: [chat], event: [action_failed], group_wait: 10s, continue: true}
"""


async def test_a_resolve_waits_for_its_trigger_held_in_a_group(database_url: str) -> None:
    async with rig(database_url, PAGES) as r:
        trigger = await r.record(NotificationEvent.ESCALATION_EXHAUSTED, episode=5)
        resolve = await r.record(NotificationEvent.EPISODE_RESOLVED, episode=5)
        await r.drain()
        assert r.channels["pager"].messages == []
        assert (await r.row(resolve)).next_attempt_at == r.clock.now() + _seconds(30)
        r.clock.advance(30)
        await r.drain()
    sent = [[n.id for n in m.notifications] for m in r.channels["pager"].messages]
    assert sent == [[trigger], [resolve]]


async def test_a_resolve_waits_while_its_triggers_group_is_refused(database_url: str) -> None:
    async with rig(database_url, PAGES) as r:
        first = await r.record(NotificationEvent.ACTION_FAILED, episode=5, target="web-01")
        other = await r.record(NotificationEvent.ACTION_FAILED, episode=2, target="web-02")
        r.clock.advance(30)
        resolve = await r.record(NotificationEvent.EPISODE_RESOLVED, episode=5)
        r.channels["pager"].refusing = "answered 503: busy"
        await r.drain()
        assert r.channels["pager"].messages == []
        assert (await r.row(resolve)).delivery_status == "pending"
        r.channels["pager"].refusing = None
        r.clock.advance(2)
        await r.drain()
    sent = [[n.id for n in m.notifications] for m in r.channels["pager"].messages]
    assert sent == [[first, other], [resolve]]


async def test_a_channel_keeps_its_backoff_when_another_one_makes_the_notification_due(
    database_url: str,
) -> None:
    text = """
channels:
  - {name: pager, type: webhook, url: "http://pager.invalid/"}
  - {name: chat, type: webhook, url: "http://chat.invalid/"}
routes:
  - {channels: [chat], group_wait: 10s, continue: true}
  - {channels: [pager]}
"""
    async with rig(database_url, text) as r:
        r.notifier._retry = RetryPolicy(max_attempts=3, base_seconds=100, max_seconds=1000)
        r.channels["pager"].refusing = "answered 500: down"
        failed = await r.record(NotificationEvent.ACTION_FAILED)
        await r.drain()  # the pager refuses: its next try is 50-100 s away
        pager = (await r.row(failed)).deliveries["pager"]  # type: ignore[index]
        assert pager["attempts"] == 1
        r.clock.advance(10)  # the chat group is due: the notification is claimed again
        await r.drain()
        row = await r.row(failed)
    assert [[n.id for n in m.notifications] for m in r.channels["chat"].messages] == [[failed]]
    assert row.deliveries["pager"]["attempts"] == 1  # type: ignore[index]
    assert row.deliveries["pager"]["retry_at"] == pager["retry_at"]  # type: ignore[index]
    assert row.next_attempt_at is not None
    assert row.next_attempt_at.isoformat() == pager["retry_at"]


def test_a_routes_marks_follow_it_when_routes_are_added_before_it() -> None:
    route = "  - {channels: [chat], event: [action_failed], repeat_interval: 1h}\n"
    head = "channels:\n  - {name: chat, type: webhook, url: 'http://chat.invalid/'}\nroutes:\n"
    before = parse_notifications(head + route, source="f", env={})
    after = parse_notifications(
        head + "  - {channels: [chat], event: [breaker_opened]}\n" + route, source="f", env={}
    )
    assert before.routes[0].key == after.routes[1].key
    assert after.routes[0].key != after.routes[1].key


class Blocking(Recording):
    """Holds its first send until ``release`` is set."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, message: Message) -> dict[int, dict[str, Any]]:
        if not self.entered.is_set():
            self.entered.set()
            await self.release.wait()
        return await super().send(message)


async def test_two_senders_starting_one_group_send_it_once(database_url: str) -> None:
    text = """
channels:
  - {name: chat, type: webhook, url: "http://chat.invalid/"}
  - {name: slow, type: webhook, url: "http://slow.invalid/"}
routes:
  - {channels: [chat], group_wait: 30s, continue: true}
  - {channels: [slow]}
"""
    async with rig(database_url, text) as r:
        slow = Blocking("slow")
        r.notifier.channels["slow"] = slow
        other = Notifier(
            database=r.database,
            clock=r.clock,
            metrics=VigilMetrics(),
            notifications=r.notifier.notifications,
            channels={"chat": r.channels["chat"], "slow": slow},
            timeout=2.0,
            retry=RetryPolicy(max_attempts=3, base_seconds=1, max_seconds=60),
            interval=3600.0,
        )
        first = await r.record(NotificationEvent.ACTION_FAILED, target="web-01")
        busy = asyncio.create_task(r.notifier.run_once())  # held in the slow channel's send
        async with asyncio.timeout(10):
            await slow.entered.wait()
        r.clock.advance(5)
        second = await r.record(NotificationEvent.ACTION_FAILED, target="web-02")
        assert await other.run_once() == 1  # the second one's group: started by the first
        slow.release.set()
        await busy
        r.clock.advance(25)
        await r.drain()
        await other.run_once()
    assert [[n.id for n in m.notifications] for m in r.channels["chat"].messages] == [
        [first, second]
    ]


async def test_marks_nothing_needs_are_forgotten(database_url: str) -> None:
    async def marks() -> int:
        async with r.database.read() as conn:
            count = await conn.execute(select(func.count()).select_from(notification_marks))
            return int(count.scalar_one())

    async with rig(database_url) as r:
        await r.record(NotificationEvent.BREAKER_OPENED)  # mail: a repeat mark
        await r.record(NotificationEvent.ACTION_FAILED, target="db-1", policy_name="x")
        await r.drain()  # pager: a group held for 30 s
        assert await marks() == 2
        assert await r.notifier.prune_marks(force=True) == 0  # both still needed
        r.clock.advance(31)
        await r.drain()  # the group goes out
        r.clock.advance(3600)
        assert await r.notifier.prune_marks(force=True) == 0  # within the kept day
        r.clock.advance(86400)
        assert await r.notifier.prune_marks(force=True) == 2
        assert await marks() == 0


async def test_an_event_that_comes_as_its_group_goes_out_goes_with_it(database_url: str) -> None:
    text = """
channels:
  - {name: chat, type: webhook, url: "http://chat.invalid/"}
routes:
  - {channels: [chat], group_wait: 30s, group_interval: 5m}
"""
    async with rig(database_url, text) as r:
        first = await r.record(NotificationEvent.ACTION_FAILED, target="web-01")
        await r.drain()
        r.clock.advance(40)  # the group was due 10 s ago; the sender comes late
        second = await r.record(NotificationEvent.ACTION_FAILED, target="web-02")
        await r.drain()
        r.clock.advance(600)
        await r.drain()
    assert [[n.id for n in m.notifications] for m in r.channels["chat"].messages] == [
        [first, second]
    ]
