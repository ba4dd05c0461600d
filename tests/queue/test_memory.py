"""The in-memory queue under a fake clock: time moves only when the test says so."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from vigil.clock import FakeClock
from vigil.queue.memory import MemoryQueue
from vigil.queue.task import Outcome, Task


def task(n: int = 1, *, attempt: int = 1) -> Task:
    return Task(action_id=n, attempt=attempt, target=f"web-{n:02d}", task_id=f"task_{n}_{attempt}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> MemoryQueue:
    return MemoryQueue(clock=clock, visibility_timeout=60)


async def test_redelivery_follows_the_clock(queue: MemoryQueue, clock: FakeClock) -> None:
    await queue.enqueue(task())
    (first,) = await queue.reserve("crashed", count=1, block=0)
    clock.advance(59)
    assert await queue.reserve("other", count=1, block=0) == []
    clock.advance(1)
    (second,) = await queue.reserve("other", count=1, block=0)
    assert (second.task, second.receipt, second.deliveries) == (task(), first.receipt, 2)


async def test_redelivered_tasks_go_before_new_ones(queue: MemoryQueue, clock: FakeClock) -> None:
    await queue.enqueue(task(1))
    await queue.enqueue(task(2))
    await queue.reserve("crashed", count=2, block=0)
    await queue.enqueue(task(3))
    clock.advance(60)
    got = await queue.reserve("other", count=3, block=0)
    assert [(r.task.action_id, r.deliveries) for r in got] == [(1, 2), (2, 2), (3, 1)]


async def test_late_ack_of_an_expired_delivery_settles_it(
    queue: MemoryQueue, clock: FakeClock
) -> None:
    # As with Redis, the receipt names the task, not one delivery of it.
    await queue.enqueue(task())
    (first,) = await queue.reserve("slow", count=1, block=0)
    clock.advance(61)
    await queue.ack(first, outcome=Outcome.COMPLETED)
    assert await queue.reserve("other", count=1, block=0) == []
    assert await queue.depth() == 0


async def test_rescheduling_a_retry_moves_it(queue: MemoryQueue, clock: FakeClock) -> None:
    await queue.enqueue(task(1))
    await queue.enqueue(task(2))
    a, b = await queue.reserve("c1", count=2, block=0)
    retry = task(1, attempt=2)
    await queue.retry_at(a, retry, clock.now() + timedelta(seconds=10))
    await queue.retry_at(b, retry, clock.now() + timedelta(seconds=20))  # same task: moved
    assert (await queue.stats()).delayed_length == 1
    clock.advance(10)
    assert await queue.reserve("c1", count=1, block=0) == []
    clock.advance(10)
    assert [r.task for r in await queue.reserve("c1", count=5, block=0)] == [retry]


async def test_waiting_reserve_wakes_for_a_retry_that_is_due(
    queue: MemoryQueue, clock: FakeClock
) -> None:
    await queue.enqueue(task())
    (reserved,) = await queue.reserve("c1", count=1, block=0)
    waiting = asyncio.create_task(queue.reserve("c2", count=1, block=5))
    await asyncio.sleep(0)
    await queue.retry_at(reserved, task(attempt=2), clock.now())
    got = await asyncio.wait_for(waiting, 1)
    assert [r.task for r in got] == [task(attempt=2)]


async def test_close_releases_waiting_reserves(queue: MemoryQueue) -> None:
    waiting = asyncio.create_task(queue.reserve("c1", count=1, block=30))
    await asyncio.sleep(0)
    await queue.close()
    assert await asyncio.wait_for(waiting, 1) == []


@pytest.mark.parametrize("count", [0, -1])
async def test_count_must_be_positive(queue: MemoryQueue, count: int) -> None:
    with pytest.raises(ValueError, match="count"):
        await queue.reserve("c1", count=count, block=0)
