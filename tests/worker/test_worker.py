"""The worker on both databases: claim, run once, record, retry with backoff, dead letter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.helpers import connection_lost
from tests.worker.support import ScriptedExecutor, World, failure, success, world
from vigil.db.engine import Database
from vigil.errors import Unavailable
from vigil.observability.audit import Actor
from vigil.queue.task import Reserved
from vigil.remediation.wire import RemediateResult


async def take(w: World) -> Reserved:
    batch = await w.queue.reserve("test", count=1, block=0)
    assert len(batch) == 1, "expected a task in the queue"
    return batch[0]


async def test_a_pending_action_runs_once_and_completes(database_url: str) -> None:
    async with world(database_url) as w:
        action_id = await w.manual(tags={"service": "nginx"})
        executor = ScriptedExecutor([success("restarted")])
        await w.worker(executor).handle(await take(w))

        action = await w.action(action_id)
        assert action.status == "completed"
        assert action.attempts == 1
        assert action.result is not None
        assert action.result["message"] == "restarted"
        assert action.started_at is not None
        assert action.completed_at is not None
        assert [c.attempt for c in executor.calls] == [1]
        assert executor.calls[0].params == {"n": 1}
        assert executor.calls[0].tags == {"service": "nginx"}  # read from the action's row
        assert [(h.from_status, h.to_status, h.attempt) for h in await w.history(action_id)] == [
            (None, "pending", 0),
            ("pending", "running", 1),
            ("running", "completed", 1),
        ]
        stats = await w.queue.stats()
        assert (stats.tasks_completed, stats.queue_length) == (1, 0)


async def test_a_retryable_failure_waits_with_backoff_then_runs_the_next_attempt(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        action_id = await w.manual()
        executor = ScriptedExecutor([failure("connection reset"), success()])
        worker = w.worker(executor)
        started = w.clock.now()
        await worker.handle(await take(w))

        action = await w.action(action_id)
        assert action.status == "pending"
        assert action.error_message == "connection reset"
        assert action.next_attempt == 2
        # Base 2 s with equal jitter: between 1 and 2 seconds after the failure.
        assert action.next_attempt_at is not None
        wait = action.next_attempt_at - started
        assert timedelta(seconds=1) <= wait <= timedelta(seconds=2)
        last = (await w.history(action_id))[-1]
        assert (last.from_status, last.to_status) == ("running", "pending")
        assert "connection reset" in str(last.reason)

        # Not before it is due...
        assert await w.queue.reserve("test", count=1, block=0) == []
        w.clock.advance(2)
        reserved = await take(w)
        assert reserved.task.attempt == 2
        await worker.handle(reserved)

        action = await w.action(action_id)
        assert (action.status, action.attempts) == ("completed", 2)
        assert [c.attempt for c in executor.calls] == [1, 2]


async def test_after_the_last_attempt_the_action_fails_and_its_task_is_dead_lettered(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        action_id = await w.manual(action="flaky")  # max_attempts 2 in the remediations file
        executor = ScriptedExecutor([failure("still down")])
        worker = w.worker(executor)
        await worker.handle(await take(w))
        w.clock.advance(10)
        await worker.handle(await take(w))

        action = await w.action(action_id)
        assert (action.status, action.attempts) == ("failed", 2)
        assert action.error_message == "still down"
        dead = await w.queue.dead_letters(limit=10)
        assert [(d.task.action_id, d.attempts, d.error) for d in dead] == [
            (action_id, 2, "still down")
        ]
        assert (await w.queue.stats()).dead_letter_length == 1

        # A redrive continues the attempt count with a fresh budget.
        redriven, skipped = await w.actions.redrive(None, actor=Actor("operator"))
        assert skipped == []
        assert [r.id for r in redriven] == [action_id]
        action = await w.action(action_id)
        assert (action.status, action.next_attempt) == ("pending", 3)
        assert await w.queue.dead_letters(limit=10) == []
        executor.answers = [failure("again"), success()]
        executor.calls.clear()
        await worker.handle(await take(w))
        w.clock.advance(10)
        await worker.handle(await take(w))
        assert [c.attempt for c in executor.calls] == [3, 4]
        assert (await w.action(action_id)).status == "completed"


async def test_a_permanent_failure_fails_at_once(database_url: str) -> None:
    async with world(database_url) as w:
        action_id = await w.manual()
        await w.worker(ScriptedExecutor([failure("invalid params", retryable=False)])).handle(
            await take(w)
        )
        action = await w.action(action_id)
        assert (action.status, action.attempts) == ("failed", 1)
        assert len(await w.queue.dead_letters(limit=10)) == 1


async def test_an_action_no_remediation_matches_fails_without_running(database_url: str) -> None:
    async with world(database_url) as w:
        action_id = await w.manual()
        w.remediations = w.remediations.__class__(source="an emptied file", entries=())
        executor = ScriptedExecutor()
        await w.worker(executor).handle(await take(w))
        action = await w.action(action_id)
        assert action.status == "failed"
        assert "no remediation in an emptied file matches action 'restart-service'" in str(
            action.error_message
        )
        assert executor.calls == []


async def test_duplicate_tasks_run_the_attempt_once(database_url: str) -> None:
    async with world(database_url) as w:
        action_id = await w.manual()
        first = await take(w)
        await w.queue.enqueue(first.task)  # the same task delivered twice
        second = await take(w)
        gate = asyncio.Event()
        executor = ScriptedExecutor(gate=gate)
        one, two = w.worker(executor, "worker-1"), w.worker(executor, "worker-2")
        running = asyncio.create_task(one.handle(first))
        await executor.entered.wait()
        await two.handle(second)  # the claim fails: the action is already running
        gate.set()
        await running
        assert len(executor.calls) == 1
        assert (await w.action(action_id)).status == "completed"


async def test_a_result_arriving_after_cancel_is_recorded_and_the_action_stays_cancelled(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        action_id = await w.manual()
        gate = asyncio.Event()
        executor = ScriptedExecutor([success("restarted anyway")], gate=gate)
        running = asyncio.create_task(w.worker(executor).handle(await take(w)))
        await executor.entered.wait()
        await w.actions.cancel(action_id, reason="operator changed their mind", actor=Actor("op"))
        gate.set()
        await running
        action = await w.action(action_id)
        assert action.status == "cancelled"
        last = (await w.history(action_id))[-1]
        assert (last.from_status, last.to_status) == ("cancelled", "cancelled")
        assert "restarted anyway" in str(last.reason)


@pytest.mark.parametrize("deliveries", [6])
async def test_a_task_delivered_too_often_is_dead_lettered(
    database_url: str, deliveries: int
) -> None:
    async with world(database_url) as w:
        action_id = await w.manual()
        reserved = await take(w)
        worn = Reserved(task=reserved.task, receipt=reserved.receipt, deliveries=deliveries)
        executor = ScriptedExecutor()
        await w.worker(executor, max_deliveries=5).handle(worn)
        action = await w.action(action_id)
        assert action.status == "failed"
        assert "delivered 6 times" in str(action.error_message)
        assert executor.calls == []
        assert len(await w.queue.dead_letters(limit=10)) == 1


async def test_the_worker_loop_runs_tasks_and_stops_gracefully(database_url: str) -> None:
    async with world(database_url) as w:
        gate = asyncio.Event()
        executor = ScriptedExecutor(gate=gate)
        worker = w.worker(executor)
        await worker.start()
        action_id = await w.manual()
        await executor.entered.wait()
        stopping = asyncio.create_task(worker.stop())
        await asyncio.sleep(0)  # stop() is waiting for the running task
        assert not stopping.done()
        gate.set()
        await stopping
        assert (await w.action(action_id)).status == "completed"


async def test_stopping_leaves_a_task_that_outlives_the_timeout_to_be_reclaimed(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        executor = ScriptedExecutor(gate=asyncio.Event())  # never released
        worker = w.worker(executor, shutdown_timeout=0.1)
        await worker.start()
        action_id = await w.manual()
        await executor.entered.wait()
        await worker.stop()
        action = await w.action(action_id)
        assert action.status == "running"  # its lease will expire; the reconciler reclaims
        assert action.lease_owner == "worker-1"


async def test_a_worn_copy_of_a_task_whose_action_moved_on_is_only_dropped(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        action_id = await w.manual()
        reserved = await take(w)
        await w.worker(ScriptedExecutor()).handle(reserved)  # completed
        worn = Reserved(task=reserved.task, receipt="copy", deliveries=9)
        await w.worker(ScriptedExecutor(), max_deliveries=5).handle(worn)
        assert (await w.action(action_id)).status == "completed"
        assert await w.queue.dead_letters(limit=10) == []


class DownDatabase(Database):
    """A database whose writes fail as an unreachable one's do."""

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        raise Unavailable("database unavailable")
        yield  # pragma: no cover


async def test_a_task_met_by_a_database_outage_is_dropped_and_left_to_the_reconciler(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        action_id = await w.manual()
        executor = ScriptedExecutor()
        worker = w.worker(executor, database=DownDatabase(w.database.engine))
        await worker.handle(await take(w))
        assert executor.calls == []
        # Not redelivered again and again (which would end in the dead letter): dropped.
        assert (await w.queue.stats()).queue_length == 0
        assert await w.queue.dead_letters(limit=10) == []
        assert (await w.action(action_id)).status == "pending"


async def fail_for_good(w: World, target: str = "web-01") -> int:
    action_id = await w.manual(target=target)
    executor = ScriptedExecutor([failure("broken", retryable=False)])
    await w.worker(executor).handle(await take(w))
    assert (await w.action(action_id)).status == "failed"
    return action_id


async def test_a_failed_action_whose_dead_letter_entry_was_lost_is_redriven_by_id(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        action_id = await fail_for_good(w)
        await w.queue.take_dead(None)  # the in-process dead letter, after a restart
        redriven, skipped = await w.actions.redrive(action_ids=[action_id], actor=Actor("op"))
        assert ([r.id for r in redriven], skipped) == ([action_id], [])
        assert (await w.action(action_id)).status == "pending"
        assert (await take(w)).task.attempt == 2


async def test_an_entry_whose_pair_has_another_action_open_stays_in_the_dead_letter(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        failed_id = await fail_for_good(w)
        newer = await w.manual()  # same action and target: open now
        redriven, skipped = await w.actions.redrive(None, actor=Actor("op"))
        assert redriven == []
        assert [(s.action_id, "open" in s.reason) for s in skipped] == [(failed_id, True)]
        assert len(await w.queue.dead_letters(limit=10)) == 1, "kept, to re-drive later"
        # Once the newer one ends, the redrive goes through.
        await w.actions.cancel(newer, reason=None, actor=Actor("op"))
        redriven, skipped = await w.actions.redrive(None, actor=Actor("op"))
        assert [r.id for r in redriven] == [failed_id]
        assert await w.queue.dead_letters(limit=10) == []


async def test_an_entry_whose_action_is_no_longer_failed_leaves_the_dead_letter(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        action_id = await fail_for_good(w)
        await w.actions.redrive(action_ids=[action_id], actor=Actor("op"))  # entry removed
        reserved = await take(w)
        await w.queue.dead_letter(None, reserved.task, error="a stale copy")
        redriven, skipped = await w.actions.redrive(None, actor=Actor("op"))
        assert redriven == []
        assert "pending" in skipped[0].reason
        assert await w.queue.dead_letters(limit=10) == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("landed", [False, True], ids=["commit-lost", "answer-lost"])
@pytest.mark.parametrize(
    ("answer", "status"), [(success(), "completed"), (failure("flaky"), "pending")]
)
async def test_an_outcome_whose_commit_loses_its_connection_is_recorded_once(
    database_url: str, landed: bool, answer: RemediateResult, status: str
) -> None:
    """The remediator answered, then the COMMIT recording it lost its connection (before
    reaching the server, or after, with only the answer lost): the worker records the
    outcome again at once -- once -- instead of leaving the action running until its lease
    expires."""
    async with world(database_url) as w:
        action_id = await w.manual()
        executor = ScriptedExecutor([answer])
        worker = w.worker(executor)
        # The second transaction updating the action: the first is the claim.
        with connection_lost(
            w.database.engine, after="UPDATE actions ", nth=2, landed=landed
        ) as lost:
            await worker.handle(await take(w))
        assert lost
        action = await w.action(action_id)
        assert (action.status, action.attempts, action.lease_owner) == (status, 1, None)
        settled = [h for h in await w.history(action_id) if h.from_status == "running"]
        assert [(h.to_status, h.attempt) for h in settled] == [(status, 1)]
        assert [c.attempt for c in executor.calls] == [1]
        stats = await w.queue.stats()
        settled_as = (stats.tasks_completed, stats.tasks_retried, stats.queue_length)
        assert settled_as == ((1, 0, 0) if status == "completed" else (0, 1, 0))
