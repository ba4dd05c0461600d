"""What only the Redis Streams queue has to show: data loss, outages, several processes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from tests import services
from tests.helpers import wait_for_async
from tests.queue.conftest import LONG_VISIBILITY, VISIBILITY, QueueFactory, delete_prefix
from vigil.clock import SystemClock
from vigil.errors import Unavailable
from vigil.queue.keys import QueueKeys
from vigil.queue.redis import RedisConnection, RedisStreamQueue
from vigil.queue.task import Outcome, Task


def task(n: int = 1, *, attempt: int = 1) -> Task:
    return Task(action_id=n, attempt=attempt, target=f"web-{n:02d}", task_id=f"task_{n}_{attempt}")


@pytest.fixture
async def raw(keys: QueueKeys) -> AsyncIterator[Redis]:
    """A plain client on the shared server, to look behind the queue's back."""
    services.need_redis()
    client = Redis.from_url(services.REDIS_URL)
    yield client
    await client.aclose()


async def test_connection_pool_waits_instead_of_raising() -> None:
    services.need_redis()
    connection = RedisConnection(services.REDIS_URL, max_connections=2, pool_timeout=5)
    try:
        assert isinstance(connection.client.connection_pool, BlockingConnectionPool)
        # More concurrent commands than connections: they queue for one instead of failing.
        await asyncio.gather(*(connection.client.ping() for _ in range(20)))
        await connection.ping()
    finally:
        await connection.close()


async def test_keys_stay_under_the_prefix(
    redis_queues: QueueFactory, raw: Redis, keys: QueueKeys
) -> None:
    queue = await redis_queues()
    await queue.enqueue(task(1))
    await queue.enqueue(task(2))
    a, b = await queue.reserve("c1", count=2, block=0)
    await queue.retry_at(a, task(1, attempt=2), datetime.now(UTC) + timedelta(hours=1))
    await queue.dead_letter(b, b.task, error="x")
    used = {key.decode() async for key in raw.scan_iter(match=keys.pattern)}
    assert used == set(keys.all())


async def test_two_processes_share_the_queue_and_its_counters(redis_queues: QueueFactory) -> None:
    one = await redis_queues(visibility_timeout=LONG_VISIBILITY)
    two = await redis_queues(visibility_timeout=LONG_VISIBILITY)
    for n in range(20):
        await (one if n % 2 else two).enqueue(task(n))
    got = await asyncio.gather(
        *(
            q.reserve(f"{name}-{i}", count=3, block=0.2)
            for i in range(5)
            for name, q in (("one", one), ("two", two))
        )
    )
    handed = [r for batch in got for r in batch]
    assert sorted(r.task.action_id for r in handed) == list(range(20))
    for i, reserved in enumerate(handed):
        await (one if i % 2 else two).ack(reserved, outcome=Outcome.COMPLETED)
    for queue in (one, two):
        stats = await queue.stats()
        assert (stats.tasks_enqueued, stats.tasks_dequeued, stats.tasks_completed) == (20, 20, 20)
        assert stats.queue_length == 0


async def test_due_retries_are_moved_once_by_racing_processes(
    redis_queues: QueueFactory, raw: Redis, keys: QueueKeys
) -> None:
    queues = [await redis_queues(visibility_timeout=LONG_VISIBILITY) for _ in range(4)]
    past = datetime.now(UTC) - timedelta(seconds=1)
    for n in range(200):
        await raw.zadd(keys.delayed, {orjson.dumps(task(n).to_json()): past.timestamp()})
    batches = await asyncio.gather(
        *(q.reserve(f"c{i}", count=100, block=0) for i, q in enumerate(queues))
    )
    handed = [r for batch in batches for r in batch]
    handed += await queues[0].reserve("last", count=500, block=0)
    assert sorted(r.task.action_id for r in handed) == list(range(200))
    stats = await queues[0].stats()
    assert (stats.tasks_enqueued, stats.delayed_length, stats.queue_length) == (200, 0, 200)


async def test_long_block_is_served_in_slices_and_wakes_on_arrival(
    redis_queues: QueueFactory,
) -> None:
    # A block longer than the socket timeout must neither time out nor hold up a new task.
    # (Upper bounds catch a hang or a wait for the whole block, not a slow machine.)
    queue = await redis_queues(visibility_timeout=LONG_VISIBILITY)
    started = time.monotonic()
    assert await queue.reserve("c1", count=1, block=2.2) == []
    assert 2.2 <= time.monotonic() - started < 2.2 + 10

    waiting = asyncio.create_task(queue.reserve("c1", count=1, block=30))
    await asyncio.sleep(0.1)
    sent_at = time.monotonic()
    await queue.enqueue(task())
    assert [r.task for r in await waiting] == [task()]
    assert time.monotonic() - sent_at < 15


async def test_entry_deleted_while_pending_is_not_redelivered(
    redis_queues: QueueFactory, raw: Redis, keys: QueueKeys
) -> None:
    queue = await redis_queues(visibility_timeout=VISIBILITY)
    await queue.enqueue(task(1))
    await queue.enqueue(task(2))
    first, second = await queue.reserve("crashed", count=2, block=0)
    await raw.xdel(keys.stream, first.receipt)  # gone behind the queue's back

    again = await queue.reserve("other", count=5, block=2)
    assert [(r.task, r.deliveries) for r in again] == [(second.task, 2)]
    await queue.ack(again[0], outcome=Outcome.COMPLETED)
    assert await queue.reserve("other", count=5, block=VISIBILITY * 2) == []
    assert (await raw.xpending(keys.stream, keys.group))["pending"] == 0
    await queue.ack(first, outcome=Outcome.COMPLETED)  # a no-op, not an error
    assert (await queue.stats()).tasks_completed == 1


async def test_unreadable_entry_is_dropped(
    redis_queues: QueueFactory, raw: Redis, keys: QueueKeys
) -> None:
    queue = await redis_queues()
    await raw.xadd(keys.stream, {"task": b"not json"})
    await raw.xadd(keys.stream, {"other": b"field"})
    await queue.enqueue(task())
    got = await queue.reserve("c1", count=5, block=0)
    assert [r.task for r in got] == [task()]
    assert await queue.depth() == 1
    assert (await queue.stats()).tasks_dequeued == 1


async def test_queue_keeps_working_after_redis_loses_its_data() -> None:
    with services.own_redis_server() as url:
        queue = RedisStreamQueue.from_url(
            url, keys=QueueKeys("vigil"), clock=SystemClock(), visibility_timeout=LONG_VISIBILITY
        )
        admin = Redis.from_url(url)
        try:
            await queue.enqueue(task(1))
            (before,) = await queue.reserve("c1", count=1, block=0)
            await queue.dead_letter(None, task(9), error="x")

            await admin.flushall()

            # Settling what was lost is a no-op; an empty queue just answers empty.
            await queue.ack(before, outcome=Outcome.COMPLETED)
            await queue.retry_at(
                before, task(1, attempt=2), datetime.now(UTC) - timedelta(seconds=1)
            )
            assert [r.task for r in await queue.reserve("c1", count=5, block=0)] == [
                task(1, attempt=2)
            ]
            await admin.flushall()
            assert await queue.reserve("c1", count=1, block=0.2) == []
            await admin.flushall()
            await queue.enqueue(task(2))
            (after,) = await queue.reserve("c1", count=1, block=1)
            assert after.task == task(2)
            groups = await admin.xinfo_groups(QueueKeys("vigil").stream)
            assert [g["name"] for g in groups] == [QueueKeys("vigil").group.encode()]
            await queue.ack(after, outcome=Outcome.COMPLETED)
            stats = await queue.stats()
            assert (stats.tasks_enqueued, stats.tasks_completed, stats.queue_length) == (1, 1, 0)
            assert await queue.dead_letters(limit=10) == []
        finally:
            await admin.aclose()
            await queue.close()


async def test_a_reserve_waiting_when_redis_loses_its_data_keeps_waiting() -> None:
    # Redis 7 answers an XREADGROUP blocked on a stream that is deleted with "UNBLOCKED";
    # the reserve recreates the group and goes on waiting, like after NOGROUP.
    with services.own_redis_server() as url:
        queue = RedisStreamQueue.from_url(
            url, keys=QueueKeys("vigil"), clock=SystemClock(), visibility_timeout=LONG_VISIBILITY
        )
        admin = Redis.from_url(url)
        try:
            assert await queue.reserve("c1", count=1, block=0) == []  # the group exists

            async def blocked() -> bool:
                clients = await admin.client_list()
                return any(c["cmd"] == "xreadgroup" and "b" in c["flags"] for c in clients)

            waiting = asyncio.create_task(queue.reserve("c1", count=1, block=10))
            await wait_for_async(blocked, what="the reserve to block in XREADGROUP")
            await admin.flushall()
            # Unblocked with an error: it recreates the group and blocks again.
            await wait_for_async(blocked, what="the reserve to block again")
            await queue.enqueue(task(1))
            got = await waiting
            assert [r.task for r in got] == [task(1)]
        finally:
            await admin.aclose()
            await queue.close()


async def test_unavailable_when_the_server_is_gone() -> None:
    with services.own_redis_server() as url:
        connection = RedisConnection(url)
        queue = RedisStreamQueue(
            connection.client,
            keys=QueueKeys("vigil"),
            clock=SystemClock(),
            visibility_timeout=LONG_VISIBILITY,
        )
        await queue.enqueue(task())
        (reserved,) = await queue.reserve("c1", count=1, block=0)
    # The server has stopped.
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="redis unavailable") as caught:
            await queue.enqueue(task(2))
        assert caught.value.__cause__ is not None
        with pytest.raises(Unavailable):
            await queue.reserve("c1", count=1, block=0.5)
        with pytest.raises(Unavailable):
            await queue.ack(reserved, outcome=Outcome.COMPLETED)
        with pytest.raises(Unavailable):
            await queue.stats()
        with pytest.raises(Unavailable):
            await connection.ping()
        assert time.monotonic() - started < 10
    finally:
        await queue.close()  # borrowed client: left open
        await connection.close()


async def test_prefixes_keep_queues_apart(redis_queues: QueueFactory) -> None:
    services.need_redis()
    other_keys = QueueKeys(f"vigil-test-{uuid.uuid4().hex}")
    other = RedisStreamQueue.from_url(
        services.REDIS_URL, keys=other_keys, clock=SystemClock(), visibility_timeout=1
    )
    try:
        mine = await redis_queues()
        await mine.enqueue(task())
        assert await other.reserve("c1", count=1, block=0) == []
        assert await other.depth() == 0
    finally:
        await other.close()
        await delete_prefix(services.REDIS_URL, other_keys)
