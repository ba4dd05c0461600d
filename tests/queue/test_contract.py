"""The TaskQueue contract, run against the in-memory and the Redis Streams queue."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.queue.conftest import VISIBILITY, QueueFactory
from vigil.clock import FakeClock
from vigil.queue.task import Outcome, Reserved, Task, TaskQueue

# Long enough for any wait in these tests, on a busy machine too; each returns as soon as its
# condition holds, so only a hang waits this long. Timings are asserted as causality (nothing
# before its time) or against this bound, never against a tight upper bound.
PATIENCE = 10.0


def task(n: int = 1, *, attempt: int = 1) -> Task:
    """The same task for the same arguments (each test has a queue of its own)."""
    return Task(action_id=n, attempt=attempt, target=f"web-{n:02d}", task_id=f"task_{n}_{attempt}")


async def reserve_one(queue: TaskQueue, consumer: str = "c1") -> Reserved:
    """The next delivery, waiting for it up to PATIENCE seconds."""
    got = await queue.reserve(consumer, count=1, block=PATIENCE)
    assert len(got) == 1, "nothing was delivered"
    return got[0]


async def test_enqueue_reserve_ack_round_trip(queue: TaskQueue) -> None:
    sent = task()
    await queue.enqueue(sent)

    reserved = await reserve_one(queue)
    assert reserved.task == sent
    assert reserved.deliveries == 1
    assert await queue.depth() == 1  # handed out, not settled

    await queue.ack(reserved, outcome=Outcome.COMPLETED)
    assert await queue.depth() == 0
    assert await queue.reserve("c1", count=10, block=0) == []


async def test_task_survives_the_trip_as_json(queue: TaskQueue) -> None:
    sent = Task(action_id=2**40, attempt=7, target='db-01 ünïcode "quoted"', task_id="task_x")
    assert Task.from_json(sent.to_json()) == sent
    await queue.enqueue(sent)
    assert (await reserve_one(queue)).task == sent


async def test_tasks_come_out_in_order_up_to_count(queue: TaskQueue) -> None:
    sent = [task(n) for n in range(5)]
    for t in sent:
        await queue.enqueue(t)
    first = await queue.reserve("c1", count=3, block=0)
    rest = await queue.reserve("c1", count=10, block=0)
    assert [r.task for r in first + rest] == sent
    assert len({r.receipt for r in first + rest}) == 5


async def test_no_task_is_handed_to_two_consumers_at_once(queue: TaskQueue) -> None:
    sent = {task(n).task_id: task(n) for n in range(40)}
    # Consumers already waiting when the tasks arrive, and more arriving meanwhile.
    waiting = [asyncio.create_task(queue.reserve(f"c{i}", count=3, block=0.5)) for i in range(8)]
    await asyncio.sleep(0)
    for t in sent.values():
        await queue.enqueue(t)
    later = [queue.reserve(f"d{i}", count=7, block=0) for i in range(8)]
    batches = await asyncio.gather(*waiting, *later)
    handed = [r for batch in batches for r in batch]
    handed += await queue.reserve("e", count=100, block=0)
    ids = [r.task.task_id for r in handed]
    assert sorted(ids) == sorted(sent)  # every task, none twice
    assert all(r.deliveries == 1 for r in handed)


async def test_unsettled_delivery_is_handed_out_again_after_the_visibility_timeout(
    make_queue: QueueFactory,
) -> None:
    queue = await make_queue(visibility_timeout=VISIBILITY)
    sent = task()
    await queue.enqueue(sent)
    reserved_after = time.monotonic()
    first = await reserve_one(queue, "crashed")
    assert await queue.reserve("other", count=1, block=0) == []  # still invisible

    second = await reserve_one(queue, "other")
    assert time.monotonic() - reserved_after >= VISIBILITY * 0.9  # not before its time
    assert second.task == sent
    assert second.deliveries == 2
    assert second.receipt == first.receipt

    third = await reserve_one(queue, "third")
    assert third.deliveries == 3
    await queue.ack(third, outcome=Outcome.COMPLETED)
    assert await queue.depth() == 0
    # Settled: it does not come back.
    assert await queue.reserve("other", count=1, block=VISIBILITY * 2) == []


async def test_a_touched_delivery_is_not_handed_out_again_until_touching_stops(
    make_queue: QueueFactory,
) -> None:
    queue = await make_queue(visibility_timeout=VISIBILITY)
    await queue.enqueue(task())
    working = await reserve_one(queue, "working")

    # Touched every quarter of the visibility timeout, for three timeouts: it stays put as
    # long as the last touch is younger than the visibility timeout. (A machine too busy to
    # touch in time may see it handed out: only after a full timeout without a touch.)
    again = None
    until = time.monotonic() + VISIBILITY * 3
    while time.monotonic() < until:
        touching = time.monotonic()
        await queue.touch(working, consumer="working")
        got = await queue.reserve("other", count=1, block=VISIBILITY / 4)
        if got:
            assert time.monotonic() - touching >= VISIBILITY * 0.9, "handed out while touched"
            [again] = got
            break

    # No longer touched (the worker died): handed out again, counted as a second delivery.
    if again is None:
        again = await reserve_one(queue, "other")
    assert (again.task, again.receipt, again.deliveries) == (task(), working.receipt, 2)
    await queue.ack(again, outcome=Outcome.COMPLETED)
    await queue.touch(again, consumer="other")  # settled: nothing to touch, no error
    await queue.touch(working, consumer="working")
    assert await queue.depth() == 0
    assert await queue.reserve("other", count=1, block=VISIBILITY * 2) == []


async def test_retry_waits_until_due_then_delivers(queue: TaskQueue) -> None:
    await queue.enqueue(task(attempt=1))
    reserved = await reserve_one(queue)
    retry = task(attempt=2)
    due = datetime.now(UTC) + timedelta(seconds=0.3)
    await queue.retry_at(reserved, retry, due)

    stats = await queue.stats()
    assert (stats.queue_length, stats.delayed_length, stats.tasks_retried) == (0, 1, 1)
    assert await queue.depth() == 0
    assert await queue.reserve("c1", count=1, block=0) == []

    started = time.monotonic()
    again = await reserve_one(queue)  # waits for the due time, not for `block`
    assert datetime.now(UTC) >= due  # not before its time
    assert time.monotonic() - started < PATIENCE
    assert again.task == retry
    assert again.deliveries == 1
    stats = await queue.stats()
    assert (stats.queue_length, stats.delayed_length) == (1, 0)


async def test_retry_due_in_the_past_is_ready_at_once(queue: TaskQueue) -> None:
    await queue.enqueue(task())
    reserved = await reserve_one(queue)
    await queue.retry_at(reserved, task(attempt=2), datetime.now(UTC) - timedelta(seconds=5))
    got = await queue.reserve("c1", count=1, block=0)
    assert [r.task.attempt for r in got] == [2]


async def test_dead_letter_keeps_tasks_until_taken(queue: TaskQueue) -> None:
    tasks = [task(n, attempt=3) for n in range(4)]
    for t in tasks:
        await queue.enqueue(t)
    delivered = await queue.reserve("c1", count=4, block=0)
    for reserved in delivered[:3]:
        await queue.dead_letter(reserved, reserved.task, error=f"boom {reserved.task.action_id}")
    await queue.dead_letter(None, task(99, attempt=5), error="gave up")

    dead = await queue.dead_letters(limit=10)
    assert [d.task for d in dead] == [*tasks[:3], task(99, attempt=5)]  # oldest first
    assert [d.error for d in dead] == ["boom 0", "boom 1", "boom 2", "gave up"]
    assert [d.attempts for d in dead] == [3, 3, 3, 5]
    assert all(d.dead_at.tzinfo is not None for d in dead)
    assert [d.task for d in await queue.dead_letters(limit=2)] == tasks[:2]
    assert await queue.depth() == 1  # dead-lettering settled three deliveries

    taken = await queue.take_dead([tasks[2].task_id, tasks[0].task_id, "task_unknown"])
    assert [d.task for d in taken] == [tasks[0], tasks[2]]
    assert await queue.take_dead([tasks[0].task_id]) == []  # taken once only
    assert [d.task for d in await queue.dead_letters(limit=10)] == [tasks[1], task(99, attempt=5)]
    assert await queue.take_dead([]) == []

    rest = await queue.take_dead(None)
    assert [d.task for d in rest] == [tasks[1], task(99, attempt=5)]
    assert await queue.dead_letters(limit=10) == []
    assert await queue.take_dead(None) == []
    assert (await queue.stats()).dead_letter_length == 0


async def test_stats_count_what_happened(queue: TaskQueue) -> None:
    empty = await queue.stats()
    assert empty.to_json() == {
        "queue_length": 0,
        "tasks_enqueued": 0,
        "tasks_dequeued": 0,
        "tasks_failed": 0,
        "tasks_completed": 0,
        "tasks_retried": 0,
        "dead_letter_length": 0,
        "delayed_length": 0,
        "last_processed_task": None,
    }

    for n in range(5):
        await queue.enqueue(task(n))
    a, b, c, d = await queue.reserve("c1", count=4, block=0)
    before = datetime.now(UTC)
    await queue.ack(a, outcome=Outcome.COMPLETED)
    await queue.ack(b, outcome=Outcome.FAILED)
    await queue.ack(c, outcome=Outcome.DISCARDED)
    await queue.retry_at(d, task(3, attempt=2), datetime.now(UTC) - timedelta(seconds=1))
    await queue.dead_letter(None, task(42), error="no")

    stats = await queue.stats()
    assert stats.tasks_enqueued == 5
    assert stats.tasks_dequeued == 4
    assert stats.tasks_completed == 1
    assert stats.tasks_failed == 2  # one failed ack, one dead letter
    assert stats.tasks_retried == 1
    assert stats.queue_length == 1
    assert stats.delayed_length == 1
    assert stats.dead_letter_length == 1
    last = stats.last_processed_task
    assert last is not None
    assert (last.task_id, last.action_id, last.target) == (
        d.task.task_id,
        d.task.action_id,
        d.task.target,
    )
    assert before - timedelta(seconds=1) <= last.timestamp <= datetime.now(UTC)

    # The due retry moves in (counted as enqueued) and is handed out with the other one.
    got = await queue.reserve("c1", count=10, block=0)
    assert len(got) == 2
    stats = await queue.stats()
    assert (stats.tasks_enqueued, stats.tasks_dequeued) == (6, 6)
    assert (stats.queue_length, stats.delayed_length) == (2, 0)
    assert stats.to_json()["last_processed_task"]["task_id"] == d.task.task_id


async def test_redelivery_counts_as_dequeued(make_queue: QueueFactory) -> None:
    queue = await make_queue(visibility_timeout=VISIBILITY)
    await queue.enqueue(task())
    await reserve_one(queue, "crashed")
    await reserve_one(queue, "other")
    assert (await queue.stats()).tasks_dequeued == 2


async def test_depth_counts_ready_and_in_flight_not_delayed(queue: TaskQueue) -> None:
    for n in range(3):
        await queue.enqueue(task(n))
    assert await queue.depth() == 3
    reserved = await queue.reserve("c1", count=2, block=0)
    assert await queue.depth() == 3
    await queue.ack(reserved[0], outcome=Outcome.COMPLETED)
    await queue.retry_at(reserved[1], task(1, attempt=2), datetime.now(UTC) + timedelta(hours=1))
    assert await queue.depth() == 1


@pytest.mark.parametrize("block", [0.0, 0.3])
async def test_reserve_with_nothing_queued_returns_empty_after_block(
    queue: TaskQueue, block: float
) -> None:
    started = time.monotonic()
    assert await queue.reserve("c1", count=5, block=block) == []
    elapsed = time.monotonic() - started
    assert elapsed < block + PATIENCE  # returns, not hangs
    assert elapsed >= block * 0.8  # waited for a task that might come


async def test_waiting_reserve_wakes_when_a_task_arrives(queue: TaskQueue) -> None:
    # It blocks far longer than any machine takes to hand over a task: the task arriving,
    # not the end of the block, ends the wait.
    block = PATIENCE * 3
    waiting = asyncio.create_task(queue.reserve("c1", count=1, block=block))
    await asyncio.sleep(0.05)  # let it start waiting (if it has not, it finds the task at once)
    started = time.monotonic()
    await queue.enqueue(task())
    got = await waiting
    assert [r.task for r in got] == [task()]
    assert time.monotonic() - started < block / 2


async def test_settling_twice_is_harmless(queue: TaskQueue) -> None:
    for n in range(3):
        await queue.enqueue(task(n))
    a, b, c = await queue.reserve("c1", count=3, block=0)

    await queue.ack(a, outcome=Outcome.COMPLETED)
    await queue.ack(a, outcome=Outcome.COMPLETED)
    await queue.ack(a, outcome=Outcome.FAILED)

    later = datetime.now(UTC) + timedelta(hours=1)
    await queue.retry_at(b, task(1, attempt=2), later)
    await queue.retry_at(b, task(1, attempt=2), later)
    await queue.ack(b, outcome=Outcome.COMPLETED)

    await queue.dead_letter(c, c.task, error="first")
    await queue.dead_letter(c, c.task, error="second")
    await queue.ack(c, outcome=Outcome.COMPLETED)

    stats = await queue.stats()
    assert (stats.tasks_completed, stats.tasks_failed, stats.tasks_retried) == (1, 1, 1)
    assert (stats.queue_length, stats.delayed_length, stats.dead_letter_length) == (0, 1, 1)
    assert [d.error for d in await queue.dead_letters(limit=10)] == ["first"]
    assert await queue.reserve("c1", count=5, block=0) == []


async def test_a_redriven_task_can_be_dead_lettered_again(queue: TaskQueue) -> None:
    await queue.dead_letter(None, task(), error="first")
    assert len(await queue.take_dead(None)) == 1
    await queue.dead_letter(None, task(), error="again")
    assert [d.error for d in await queue.dead_letters(limit=10)] == ["again"]


async def test_fake_clock_drives_delayed_retries(make_queue: QueueFactory) -> None:
    clock = FakeClock()
    queue = await make_queue(clock=clock)
    await queue.enqueue(task())
    reserved = await reserve_one(queue)
    await queue.retry_at(reserved, task(attempt=2), clock.now() + timedelta(seconds=30))
    assert await queue.reserve("c1", count=1, block=0) == []
    clock.advance(29)
    assert await queue.reserve("c1", count=1, block=0) == []
    clock.advance(1)
    got = await queue.reserve("c1", count=1, block=0)
    assert [r.task for r in got] == [task(attempt=2)]
    await queue.dead_letter(got[0], got[0].task, error="x")
    assert (await queue.dead_letters(limit=1))[0].dead_at == clock.now()
    stats = await queue.stats()
    assert stats.last_processed_task is not None
    assert stats.last_processed_task.timestamp == clock.now()
