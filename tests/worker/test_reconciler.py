"""The reconciler on both databases: the database is the truth, the queue may lose tasks."""

from __future__ import annotations

import asyncio

from tests.worker.support import ScriptedExecutor, World, failure, world
from vigil.db import leases
from vigil.queue.memory import MemoryQueue
from vigil.worker.reconciler import Reconciler


def reconciler(
    w: World, name: str = "reconciler-1", queue: MemoryQueue | None = None
) -> Reconciler:
    return Reconciler(
        name=name,
        database=w.database,
        queue=queue or w.queue,
        clock=w.clock,
        metrics=w.metrics,
        interval=10,
        visibility_timeout=30,
    )


async def test_a_pending_action_whose_task_was_lost_is_dispatched_again(database_url: str) -> None:
    async with world(database_url) as w:
        action_id = await w.manual()
        lost = MemoryQueue(clock=w.clock, visibility_timeout=30)  # Redis restarted empty
        r = reconciler(w, queue=lost)
        assert await r.run_once() == 0, "not before the visibility timeout"
        w.clock.advance(31)
        assert await r.run_once() == 1
        assert await r.run_once() == 0, "one pass re-sends each once"
        batch = await lost.reserve("test", count=10, block=0)
        assert [(b.task.action_id, b.task.attempt) for b in batch] == [(action_id, 1)]
        await lost.close()


async def test_a_retry_in_the_delayed_set_is_left_to_it_until_long_overdue(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        action_id = await w.manual()
        reserved = (await w.queue.reserve("test", count=1, block=0))[0]
        await w.worker(ScriptedExecutor([failure()])).handle(reserved)  # retry due in 1-2 s
        lost = MemoryQueue(clock=w.clock, visibility_timeout=30)
        r = reconciler(w, queue=lost)
        w.clock.advance(20)  # due, but its dispatch (into the delayed set) is recent
        assert await r.run_once() == 0
        w.clock.advance(13)  # 30 s past its due time: the queue lost it
        assert await r.run_once() == 1
        batch = await lost.reserve("test", count=10, block=0)
        assert [(b.task.action_id, b.task.attempt) for b in batch] == [(action_id, 2)]
        await lost.close()


async def test_a_running_action_whose_worker_died_is_reclaimed_with_the_same_attempt(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        action_id = await w.manual()
        gate = asyncio.Event()
        executor = ScriptedExecutor(gate=gate)
        dead = asyncio.create_task(
            w.worker(executor, "worker-dead").handle(
                (await w.queue.reserve("test", count=1, block=0))[0]
            )
        )
        await executor.entered.wait()
        dead.cancel()  # the worker dies mid-attempt: its lease is left behind
        r = reconciler(w)
        assert await r.run_once() == 0, "the lease still holds"
        w.clock.advance(61)
        assert await r.run_once() == 1
        action = await w.action(action_id)
        assert (action.status, action.next_attempt, action.attempts) == ("pending", 1, 1)
        last = (await w.history(action_id))[-1]
        assert (last.from_status, last.to_status, last.attempt) == ("running", "pending", 1)
        assert "lease of worker-dead expired" in str(last.reason)

        # Another worker takes the re-sent task and runs the same attempt.
        executor.gate = None
        reserved = (await w.queue.reserve("test", count=1, block=0))[0]
        assert (reserved.task.action_id, reserved.task.attempt) == (action_id, 1)
        await w.worker(executor, "worker-2").handle(reserved)
        assert (await w.action(action_id)).status == "completed"
        assert [c.attempt for c in executor.calls] == [1, 1]


async def test_only_one_reconciler_acts_at_a_time_and_a_dead_ones_lease_is_taken_over(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        await w.manual()
        w.clock.advance(31)
        first, second = reconciler(w, "r-1"), reconciler(w, "r-2")
        results = await asyncio.gather(first.run_once(), second.run_once())
        assert sorted(results) == [0, 1]
        async with w.database.read() as conn:
            holder = await leases.holder_of(conn, name="reconciler", now=w.clock.now())
        assert holder in ("r-1", "r-2")
        w.clock.advance(31)  # the holder stopped renewing (interval 10 s, lease 30 s)
        other = second if holder == "r-1" else first
        await other.run_once()
        async with w.database.read() as conn:
            assert await leases.holder_of(conn, name="reconciler", now=w.clock.now()) == other.name


async def test_a_running_action_without_a_lease_is_reclaimed(database_url: str) -> None:
    """Left running by a version of Vigil that had no workers (no lease was ever taken)."""
    from vigil.actions.status import Status
    from vigil.actions.store import transition
    from vigil.observability.audit import Actor

    async with world(database_url) as w:
        action_id = await w.manual()
        async with w.database.write() as conn:
            await transition(
                conn,
                action_id=action_id,
                to=Status.RUNNING,
                now=w.clock.now(),
                actor=Actor("old-vigil"),
                reason="by hand",
            )
        assert await reconciler(w).run_once() == 1
        action = await w.action(action_id)
        assert (action.status, action.next_attempt) == ("pending", 1)
