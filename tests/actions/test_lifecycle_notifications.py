"""An action that fails for good, or whose task is dead-lettered, records a notification in
the same transaction; on SQLite and on PostgreSQL."""

from __future__ import annotations

from tests.worker.support import ScriptedExecutor, World, failure, world
from vigil.actions import store as actions_store
from vigil.api.routes.notifications import notification_out
from vigil.notify import store
from vigil.observability.audit import Actor
from vigil.queue.task import Reserved, Task


async def notifications(w: World) -> list[store.Notification]:
    async with w.database.read() as conn:
        rows, _ = await store.list_notifications(conn, page=1, limit=100)
    return rows


async def take(w: World) -> Reserved:
    [reserved] = await w.queue.reserve("test", count=1, block=0)
    return reserved


async def test_the_last_failed_attempt_notifies_action_failed_once(database_url: str) -> None:
    async with world(database_url) as w:
        action_id = await w.manual(action="flaky", target="web-07")  # 2 attempts
        worker = w.worker(ScriptedExecutor([failure("still down")]))
        await worker.handle(await take(w))
        assert await notifications(w) == []  # a retry is coming: nothing to tell yet
        w.clock.advance(10)
        await worker.handle(await take(w))

        [notification] = await notifications(w)
        assert notification_out(notification) | {"delivery": None} == {
            "id": notification.id,
            "at": w.clock.now(),
            "event": "action_failed",
            "policy_name": None,
            "target": "web-07",
            "action_id": action_id,
            "reason": "flaky on web-07 failed at attempt 2: still down",
            "details": {"action": "flaky", "attempt": 2, "error": "still down"},
            "severity": None,
            "tags": None,
            "episode": None,
            "delivery": None,
        }
        assert notification.delivery_status == "pending"


async def test_a_permanent_failure_of_a_policys_action_names_the_policy(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        async with w.database.write() as conn:
            record = await actions_store.create_action(
                conn,
                now=w.clock.now(),
                actor=Actor("policy"),
                dedup_key=actions_store.policy_key("web-cpu-high"),
                policy_name="web-cpu-high",
                target="web-01",
                action="restart-service",
                params={},
                reason="violation",
            )
        await w.queue.enqueue(Task(action_id=record.id, attempt=1, target="web-01"))
        executor = ScriptedExecutor([failure("invalid params", retryable=False)])
        await w.worker(executor).handle(await take(w))

        [notification] = await notifications(w)
        assert (notification.event, notification.policy_name, notification.action_id) == (
            "action_failed",
            "web-cpu-high",
            record.id,
        )


async def test_a_task_delivered_too_often_notifies_action_dead_lettered(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        action_id = await w.manual()
        reserved = await take(w)
        worn = Reserved(task=reserved.task, receipt=reserved.receipt, deliveries=6)
        await w.worker(ScriptedExecutor(), max_deliveries=5).handle(worn)

        [notification] = await notifications(w)
        assert notification.event == "action_dead_lettered"
        assert (notification.target, notification.action_id) == ("web-01", action_id)
        assert "delivered 6 times" in notification.reason
        assert notification.details is not None
        assert notification.details["attempt"] == 1

        # A worn copy of a task whose action moved on is only dropped: nothing to tell.
        await w.worker(ScriptedExecutor(), max_deliveries=5).handle(worn)
        assert len(await notifications(w)) == 1
