"""Queue fixtures: one factory per implementation, each owning its teardown."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from tests import services
from vigil.clock import Clock, SystemClock
from vigil.queue.keys import QueueKeys
from vigil.queue.memory import MemoryQueue
from vigil.queue.redis import RedisStreamQueue
from vigil.queue.task import TaskQueue

VISIBILITY = 0.2
"""Seconds before an unsettled delivery is handed out again, in tests of redelivery."""
LONG_VISIBILITY = 30.0
"""The visibility timeout of tests that must not see a redelivery."""

QueueFactory = Callable[..., Awaitable[TaskQueue]]


async def delete_prefix(url: str, keys: QueueKeys) -> None:
    """Delete every key of ``keys``' prefix."""
    client = Redis.from_url(url)
    try:
        found = [key async for key in client.scan_iter(match=keys.pattern)]
        if found:
            await client.delete(*found)
    finally:
        await client.aclose()


@pytest.fixture
def keys() -> QueueKeys:
    """A prefix of this test's own on the shared Redis."""
    return QueueKeys(f"vigil-test-{uuid.uuid4().hex}")


@pytest.fixture
async def redis_queues(keys: QueueKeys) -> AsyncIterator[QueueFactory]:
    """Build RedisStreamQueues on the shared server, all on this test's prefix."""
    services.need_redis()
    made: list[RedisStreamQueue] = []

    async def make(
        *, clock: Clock | None = None, visibility_timeout: float = VISIBILITY
    ) -> RedisStreamQueue:
        queue = RedisStreamQueue.from_url(
            services.REDIS_URL,
            keys=keys,
            clock=clock or SystemClock(),
            visibility_timeout=visibility_timeout,
        )
        made.append(queue)
        return queue

    yield make
    for queue in made:
        await queue.close()
    await delete_prefix(services.REDIS_URL, keys)


@pytest.fixture
async def memory_queues() -> AsyncIterator[QueueFactory]:
    made: list[MemoryQueue] = []

    async def make(
        *, clock: Clock | None = None, visibility_timeout: float = VISIBILITY
    ) -> MemoryQueue:
        queue = MemoryQueue(clock=clock or SystemClock(), visibility_timeout=visibility_timeout)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        await queue.close()


@pytest.fixture(params=["memory", "redis"])
def make_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """A queue factory of each implementation (the test runs once per implementation)."""
    factory: QueueFactory = request.getfixturevalue(f"{request.param}_queues")
    return factory


@pytest.fixture
async def queue(make_queue: QueueFactory) -> TaskQueue:
    """A queue of each implementation with the real clock; nothing is redelivered."""
    return await make_queue(visibility_timeout=LONG_VISIBILITY)
