"""Redis access: the connection and the Redis Streams task queue.

The only module of Vigil that imports redis. The layout of the keys (all named in
:mod:`vigil.queue.keys`):

- ``stream``: one entry per task ready or handed out, read through the consumer group
  ``group``; an entry is acked and deleted when its delivery is settled, so the stream's
  length is the queue's depth. Never trimmed with MAXLEN (that drops unacked entries).
- ``delayed``: retries not yet due (member = task JSON, score = due unix time). A Lua
  script moves due ones into the stream atomically, so two processes never move one twice.
- ``dead`` (stream) and ``dead_index`` (task id → entry id): the dead letter.
- ``stats``: the shared counters (see :class:`~vigil.queue.task.QueueStats`).

Deliveries that stay unsettled longer than the visibility timeout are claimed again with
XAUTOCLAIM; their delivery counts come from XPENDING. Losing Redis's data (FLUSHALL, an
empty restart) does not wedge the queue: the group is recreated on NOGROUP and settling an
entry that is gone is a no-op.

One module, past the usual size, on purpose: it is the only one allowed to import redis (an
import contract), so every key, script and command Vigil sends Redis can be read in one
place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from vigil.clock import Clock
from vigil.errors import Unavailable
from vigil.queue.keys import QueueKeys
from vigil.queue.task import DeadTask, LastProcessed, Outcome, QueueStats, Reserved, Task

log = logging.getLogger(__name__)

SOCKET_TIMEOUT = 2.0
"""Seconds a command may take before Redis counts as unavailable."""
MAX_BLOCK = 1.0
"""Longest single XREADGROUP BLOCK, kept under SOCKET_TIMEOUT; reserve loops for longer."""
MOVE_BATCH = 500
"""Most delayed retries moved into the stream per reserve."""
CLAIM_ROUNDS = 10
"""Most XAUTOCLAIM calls (each scans up to 10 x count pending entries) per claim pass."""

# Why Unavailable: the server is down, unreachable, overloaded or a read-only replica.
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)

# Error replies that say "not now" rather than "wrong command" (redis-py raises some of them
# as ResponseError subclasses, e.g. OutOfMemoryError).
_UNAVAILABLE_REPLIES = ("OOM", "MISCONF", "BUSY", "LOADING", "MASTERDOWN", "NOREPLICAS", "READONLY")

_COUNTER_OF_OUTCOME = {Outcome.COMPLETED: "completed", Outcome.FAILED: "failed"}

# Settles a delivery: ARGV[1] group, ARGV[2] entry id ('' for none), ARGV[3] last-processed
# JSON. Defined first in each script that settles; true when the delivery was outstanding.
_SETTLE_FN = """
local function settle(stream, stats)
  if ARGV[2] == '' then return false end
  if redis.call('XACK', stream, ARGV[1], ARGV[2]) == 0 then return false end
  redis.call('XDEL', stream, ARGV[2])
  redis.call('HSET', stats, 'last_processed', ARGV[3])
  return true
end
"""

# KEYS stream, stats. ARGV[4] the counter to increment ('' for none).
_ACK = (
    _SETTLE_FN
    + """
if settle(KEYS[1], KEYS[2]) then
  if ARGV[4] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[4], 1) end
  return 1
end
return 0
"""
)

# KEYS stream, stats, delayed. ARGV[4] task JSON, ARGV[5] due unix time.
_RETRY = (
    _SETTLE_FN
    + """
settle(KEYS[1], KEYS[2])
if redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'retried', 1)
end
return 1
"""
)

# KEYS stream, stats, dead, dead_index. ARGV[4] task id, [5] task JSON, [6] error,
# [7] dead_at, [8] attempts. A task already in the dead letter is not added twice.
_DEAD = (
    _SETTLE_FN
    + """
settle(KEYS[1], KEYS[2])
local existing = redis.call('HGET', KEYS[4], ARGV[4])
if existing and #redis.call('XRANGE', KEYS[3], existing, existing) > 0 then return 0 end
local id = redis.call('XADD', KEYS[3], '*', 'task', ARGV[5], 'error', ARGV[6],
                      'dead_at', ARGV[7], 'attempts', ARGV[8])
redis.call('HSET', KEYS[4], ARGV[4], id)
redis.call('HINCRBY', KEYS[2], 'failed', 1)
return 1
"""
)

# KEYS delayed, stream, stats. ARGV[1] now (unix time), ARGV[2] batch size.
# Returns {moved, score of the earliest retry still waiting or false}.
_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('XADD', KEYS[2], '*', 'task', member)
end
if #due > 0 then redis.call('HINCRBY', KEYS[3], 'enqueued', #due) end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, nxt[2] or false}
"""

# KEYS dead, dead_index. ARGV the task ids to take, or none for all. Returns the entries.
_TAKE_DEAD = """
if #ARGV == 0 then
  local all = redis.call('XRANGE', KEYS[1], '-', '+')
  redis.call('DEL', KEYS[1], KEYS[2])
  return all
end
local taken = {}
for _, task_id in ipairs(ARGV) do
  local id = redis.call('HGET', KEYS[2], task_id)
  if id then
    local entry = redis.call('XRANGE', KEYS[1], id, id)
    if #entry > 0 then
      redis.call('XDEL', KEYS[1], id)
      table.insert(taken, entry[1])
    end
    redis.call('HDEL', KEYS[2], task_id)
  end
end
return taken
"""


class RedisConnection:
    """A client for the configured Redis, on a pool that waits when it is exhausted.

    (redis-py's plain asyncio pool raises instead.) The hiredis parser is used because it is
    installed. Commands taking longer than :data:`SOCKET_TIMEOUT` fail as unavailable.
    """

    def __init__(self, url: str, *, max_connections: int = 32, pool_timeout: float = 10.0) -> None:
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout,
            socket_connect_timeout=SOCKET_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT,
        )
        self.client: Redis = Redis.from_pool(pool)

    async def ping(self) -> None:
        """Raise :class:`Unavailable` unless Redis answers."""
        async with _translated():
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    """Turn a failure to reach Redis, or a Redis that cannot take writes now (out of memory,
    failing to persist, busy, loading), into :class:`Unavailable`."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise Unavailable("redis unavailable") from exc
    except ResponseError as exc:
        if str(exc).startswith(_UNAVAILABLE_REPLIES):
            raise Unavailable(f"redis unavailable: {str(exc).split(chr(10))[0]}") from exc
        raise


def _is_nogroup(exc: ResponseError) -> bool:
    """The stream or its group is gone: NOGROUP, or UNBLOCKED for an XREADGROUP that was
    waiting on the stream when it was deleted (Redis 7)."""
    return str(exc).startswith(("NOGROUP", "UNBLOCKED"))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _task_json(task: Task) -> bytes:
    return orjson.dumps(task.to_json())


def _fields(raw: Sequence[Any] | dict[Any, Any]) -> dict[str, bytes]:
    """Stream entry fields as a dict, from either a parsed dict or a flat Lua array."""
    if isinstance(raw, dict):
        return {_text(k): v for k, v in raw.items()}
    return {_text(raw[i]): raw[i + 1] for i in range(0, len(raw), 2)}


def _entry_order(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


class RedisStreamQueue:
    """A :class:`~vigil.queue.task.TaskQueue` on Redis Streams, shared by every process.

    ``client`` is borrowed (``close`` leaves it open) unless ``owns_client``; use
    :meth:`from_url` for a queue with its own connection. ``clock`` stamps delayed retries,
    dead letters and the last processed task; redelivery uses Redis's own idle times.
    """

    def __init__(
        self,
        client: Redis,
        *,
        keys: QueueKeys,
        clock: Clock,
        visibility_timeout: float,
        owns_client: bool = False,
    ) -> None:
        if visibility_timeout <= 0:
            raise ValueError("visibility_timeout must be positive")
        self._client = client
        self._keys = keys
        self._clock = clock
        self._visibility = visibility_timeout
        self._owns_client = owns_client
        self._group_ready = False
        self._next_claim = float("-inf")  # event-loop time of the next XAUTOCLAIM pass
        self._ack_script = client.register_script(_ACK)
        self._retry_script = client.register_script(_RETRY)
        self._dead_script = client.register_script(_DEAD)
        self._move_script = client.register_script(_MOVE_DUE)
        self._take_dead_script = client.register_script(_TAKE_DEAD)

    @classmethod
    def from_url(
        cls, url: str, *, keys: QueueKeys, clock: Clock, visibility_timeout: float
    ) -> RedisStreamQueue:
        """A queue with its own connection pool to ``url``, closed by :meth:`close`."""
        client = RedisConnection(url).client
        return cls(
            client, keys=keys, clock=clock, visibility_timeout=visibility_timeout, owns_client=True
        )

    async def enqueue(self, task: Task) -> None:
        async with _translated(), self._client.pipeline(transaction=True) as pipe:
            pipe.xadd(self._keys.stream, {"task": _task_json(task)})
            pipe.hincrby(self._keys.stats, "enqueued", 1)
            await pipe.execute()

    async def reserve(self, consumer: str, *, count: int, block: float) -> list[Reserved]:
        if count < 1:
            raise ValueError("count must be at least 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(block, 0.0)
        async with _translated():
            while True:
                try:
                    handed = await self._reserve_once(consumer, count, deadline)
                except ResponseError as exc:
                    if not _is_nogroup(exc):
                        raise
                    # Redis lost the stream or the group (FLUSHALL, empty restart).
                    log.warning("queue_group_missing", extra={"group": self._keys.group})
                    self._group_ready = False
                    continue
                if handed or loop.time() >= deadline:
                    if handed:
                        await self._client.hincrby(self._keys.stats, "dequeued", len(handed))
                    return handed

    async def _reserve_once(self, consumer: str, count: int, deadline: float) -> list[Reserved]:
        """One pass: move due retries, claim stale deliveries, read new ones (blocking a bit)."""
        loop = asyncio.get_running_loop()
        if not self._group_ready:
            await self._create_group()
        next_due = await self._move_due()
        if loop.time() >= self._next_claim:
            claimed = await self._claim(consumer, count)
            if claimed:
                return claimed
        wait = min(deadline - loop.time(), MAX_BLOCK, self._next_claim - loop.time())
        if next_due is not None:
            wait = min(wait, next_due)
        return await self._read_new(consumer, count, wait)

    async def _create_group(self) -> None:
        try:
            # From id 0: tasks enqueued before the group existed are delivered too.
            await self._client.xgroup_create(
                self._keys.stream, self._keys.group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
        self._group_ready = True

    async def _move_due(self) -> float | None:
        """Move due retries into the stream; seconds until the next one is due, if any."""
        now = self._clock.now().timestamp()
        keys = self._keys
        _, next_score = await self._move_script(
            keys=[keys.delayed, keys.stream, keys.stats], args=[repr(now), MOVE_BATCH]
        )
        if next_score is None:
            return None
        return max(float(next_score) - now, 0.0)

    async def _claim(self, consumer: str, count: int) -> list[Reserved]:
        """Take over deliveries left unsettled longer than the visibility timeout."""
        loop = asyncio.get_running_loop()
        self._next_claim = loop.time() + self._visibility / 2
        claimed: list[tuple[str, dict[str, bytes]]] = []
        start: str = "0-0"
        for _ in range(CLAIM_ROUNDS):
            reply = await self._client.xautoclaim(
                self._keys.stream,
                self._keys.group,
                consumer,
                min_idle_time=int(self._visibility * 1000),
                start_id=start,
                count=count - len(claimed),
            )
            start = _text(reply[0])
            # Entries deleted while pending: Redis 7 lists their ids apart (already dropped
            # from the pending list); Redis 6.2 returns them as empty entries.
            for entry_id, fields in reply[1]:
                if entry_id is not None and fields is not None:
                    claimed.append((_text(entry_id), _fields(fields)))
            if start == "0-0" or len(claimed) >= count:
                break
        if len(claimed) >= count:
            self._next_claim = loop.time()  # there may be more: look again next time
        if not claimed:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for entry_id, _ in claimed:
                pipe.xpending_range(
                    self._keys.stream, self._keys.group, entry_id, entry_id, 1, consumer
                )
            pending: list[list[dict[str, Any]]] = await pipe.execute()
        return await self._decode(
            (entry_id, fields, int(rows[0]["times_delivered"]))
            for (entry_id, fields), rows in zip(claimed, pending, strict=True)
            if rows  # settled by its old consumer in the meantime
        )

    async def _read_new(self, consumer: str, count: int, wait: float) -> list[Reserved]:
        # BLOCK 0 would wait forever: without time left, read without BLOCK.
        block_ms = int(wait * 1000) if wait >= 0.001 else None
        reply = await self._client.xreadgroup(
            self._keys.group, consumer, {self._keys.stream: ">"}, count=count, block=block_ms
        )
        streams: Iterable[Any] = (
            reply.values() if isinstance(reply, dict) else (entries for _, entries in (reply or []))
        )
        return await self._decode(
            (_text(entry_id), _fields(fields), 1)
            for entries in streams
            for entry_id, fields in entries
            if fields is not None
        )

    async def _decode(self, entries: Iterable[tuple[str, dict[str, bytes], int]]) -> list[Reserved]:
        handed: list[Reserved] = []
        for entry_id, fields, deliveries in entries:
            try:
                task = Task.from_json(orjson.loads(fields["task"]))
            except (KeyError, ValueError, TypeError) as exc:
                # Not ours to run and never will be: drop it rather than redeliver forever.
                log.error("queue_entry_unreadable", extra={"entry_id": entry_id, "error": str(exc)})
                await self._client.xack(self._keys.stream, self._keys.group, entry_id)
                await self._client.xdel(self._keys.stream, entry_id)
                continue
            handed.append(Reserved(task=task, receipt=entry_id, deliveries=deliveries))
        return handed

    def _last_processed(self, task: Task) -> bytes:
        return orjson.dumps(
            {
                "task_id": task.task_id,
                "action_id": task.action_id,
                "target": task.target,
                "timestamp": self._clock.now().isoformat(),
            }
        )

    def _settle_args(self, reserved: Reserved | None) -> list[Any]:
        """The arguments of the Lua ``settle`` function (see _SETTLE_FN)."""
        if reserved is None:
            return [self._keys.group, "", ""]
        return [self._keys.group, reserved.receipt, self._last_processed(reserved.task)]

    async def ack(self, reserved: Reserved, *, outcome: Outcome) -> None:
        keys = self._keys
        async with _translated():
            await self._ack_script(
                keys=[keys.stream, keys.stats],
                args=[
                    *self._settle_args(reserved),
                    _COUNTER_OF_OUTCOME.get(outcome, ""),
                ],
            )

    async def touch(self, reserved: Reserved, *, consumer: str) -> None:
        # XCLAIM with no minimum idle time resets the entry's idle time (JUSTID: without
        # counting a delivery); an entry already settled is not in the pending list: no-op.
        async with _translated():
            try:
                await self._client.xclaim(
                    self._keys.stream,
                    self._keys.group,
                    consumer,
                    min_idle_time=0,
                    message_ids=[reserved.receipt],
                    justid=True,
                )
            except ResponseError as exc:
                if not _is_nogroup(exc):
                    raise

    async def retry_at(self, reserved: Reserved, task: Task, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("when must be timezone-aware")
        keys = self._keys
        async with _translated():
            await self._retry_script(
                keys=[keys.stream, keys.stats, keys.delayed],
                args=[*self._settle_args(reserved), _task_json(task), repr(when.timestamp())],
            )

    async def dead_letter(self, reserved: Reserved | None, task: Task, *, error: str) -> None:
        keys = self._keys
        async with _translated():
            await self._dead_script(
                keys=[keys.stream, keys.stats, keys.dead, keys.dead_index],
                args=[
                    *self._settle_args(reserved),
                    task.task_id,
                    _task_json(task),
                    error,
                    self._clock.now().isoformat(),
                    task.attempt,
                ],
            )

    async def dead_letters(self, *, limit: int) -> list[DeadTask]:
        if limit <= 0:
            return []
        async with _translated():
            entries = await self._client.xrange(self._keys.dead, count=limit)
        return [_dead_task(fields) for _, fields in entries or [] if fields is not None]

    async def take_dead(self, task_ids: list[str] | None) -> list[DeadTask]:
        if task_ids is not None and not task_ids:
            return []
        keys = self._keys
        async with _translated():
            entries = await self._take_dead_script(
                keys=[keys.dead, keys.dead_index], args=task_ids or []
            )
        ordered = sorted(entries, key=lambda entry: _entry_order(_text(entry[0])))
        return [_dead_task(entry[1]) for entry in ordered]

    async def stats(self) -> QueueStats:
        keys = self._keys
        async with _translated(), self._client.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.stats)
            pipe.xlen(keys.stream)
            pipe.zcard(keys.delayed)
            pipe.xlen(keys.dead)
            raw, queue_length, delayed_length, dead_length = await pipe.execute()
        counters = {_text(k): v for k, v in raw.items()}
        last = counters.get("last_processed")
        return QueueStats(
            queue_length=int(queue_length),
            tasks_enqueued=int(counters.get("enqueued", 0)),
            tasks_dequeued=int(counters.get("dequeued", 0)),
            tasks_failed=int(counters.get("failed", 0)),
            tasks_completed=int(counters.get("completed", 0)),
            tasks_retried=int(counters.get("retried", 0)),
            dead_letter_length=int(dead_length),
            delayed_length=int(delayed_length),
            last_processed_task=None if last is None else _last_processed(last),
        )

    async def depth(self) -> int:
        async with _translated():
            return int(await self._client.xlen(self._keys.stream))

    async def close(self) -> None:
        """Close the connection if this queue owns it; the queue's contents stay in Redis."""
        if self._owns_client:
            await self._client.aclose()


def _dead_task(raw: Sequence[Any] | dict[Any, Any]) -> DeadTask:
    fields = _fields(raw)
    return DeadTask(
        task=Task.from_json(orjson.loads(fields["task"])),
        error=fields["error"].decode(),
        dead_at=datetime.fromisoformat(fields["dead_at"].decode()),
        attempts=int(fields["attempts"]),
    )


def _last_processed(raw: bytes) -> LastProcessed:
    data = orjson.loads(raw)
    timestamp = datetime.fromisoformat(data["timestamp"])
    return LastProcessed(
        task_id=str(data["task_id"]),
        action_id=int(data["action_id"]),
        target=str(data["target"]),
        timestamp=timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC),
    )
