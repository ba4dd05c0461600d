"""The in-process queue of the embedded default: one process, asyncio, nothing shared.

It honours the same contract as the Redis queue (one test suite runs against both), counts
the same way (see :class:`~vigil.queue.task.QueueStats`), and loses everything when the
process ends, which is fine: the database is the truth and the reconciler re-dispatches.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from vigil.clock import Clock
from vigil.queue.task import (
    DeadTask,
    LastProcessed,
    Outcome,
    QueueStats,
    Reserved,
    Task,
)


@dataclass(slots=True)
class _Entry:
    """One unsettled task; ``visible_at`` is set while it is handed out."""

    task: Task
    receipt: str
    deliveries: int = 0
    visible_at: datetime | None = None


class MemoryQueue:
    """A :class:`~vigil.queue.task.TaskQueue` held in this process's memory.

    ``reserve`` waits on an event, not by polling. Visibility timeouts and delayed retries
    are measured with ``clock``; a waiting ``reserve`` wakes when the earliest of them is
    due (in real seconds), and with a fake clock a later ``reserve(block=0)`` after
    ``clock.advance`` notices them.
    """

    def __init__(self, *, clock: Clock, visibility_timeout: float) -> None:
        if visibility_timeout <= 0:
            raise ValueError("visibility_timeout must be positive")
        self._clock = clock
        self._visibility = timedelta(seconds=visibility_timeout)
        self._receipts = itertools.count(1)
        self._entries: dict[str, _Entry] = {}  # every unsettled task, by receipt
        self._ready: deque[str] = deque()  # receipts; settled ones are skipped lazily
        self._in_flight: dict[str, _Entry] = {}
        self._delayed: dict[Task, datetime] = {}  # the truth; the heap may hold stale items
        self._delayed_heap: list[tuple[datetime, int, Task]] = []
        self._dead: dict[str, DeadTask] = {}  # by task id, oldest first
        self._wakeup = asyncio.Event()
        self._closed = False
        self._enqueued = 0
        self._dequeued = 0
        self._completed = 0
        self._failed = 0
        self._retried = 0
        self._last: LastProcessed | None = None

    async def enqueue(self, task: Task) -> None:
        self._push(task)
        self._notify()

    async def reserve(self, consumer: str, *, count: int, block: float) -> list[Reserved]:
        if count < 1:
            raise ValueError("count must be at least 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(block, 0.0)
        while not self._closed:
            # Taken before looking, so a notify between the look and the wait is not lost.
            wakeup = self._wakeup
            self._promote()
            handed = self._hand_out(count)
            if handed:
                return handed
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            next_due = self._seconds_until_next_due()
            timeout = remaining if next_due is None else min(remaining, max(next_due, 0.0))
            try:
                async with asyncio.timeout(timeout):
                    await wakeup.wait()
            except TimeoutError:
                pass
        return []

    async def ack(self, reserved: Reserved, *, outcome: Outcome) -> None:
        if not self._settle(reserved):
            return
        if outcome is Outcome.COMPLETED:
            self._completed += 1
        elif outcome is Outcome.FAILED:
            self._failed += 1

    async def touch(self, reserved: Reserved, *, consumer: str) -> None:
        entry = self._entries.get(reserved.receipt)
        if entry is not None and entry.visible_at is not None:
            entry.visible_at = self._clock.now() + self._visibility

    async def retry_at(self, reserved: Reserved, task: Task, when: datetime) -> None:
        self._settle(reserved)
        if task not in self._delayed:
            self._retried += 1
        self._delayed[task] = when
        heapq.heappush(self._delayed_heap, (when, next(self._receipts), task))
        self._notify()

    async def dead_letter(self, reserved: Reserved | None, task: Task, *, error: str) -> None:
        if reserved is not None:
            self._settle(reserved)
        if task.task_id in self._dead:
            return
        self._dead[task.task_id] = DeadTask(
            task=task, error=error, dead_at=self._clock.now(), attempts=task.attempt
        )
        self._failed += 1

    async def dead_letters(self, *, limit: int) -> list[DeadTask]:
        return list(itertools.islice(self._dead.values(), max(limit, 0)))

    async def take_dead(self, task_ids: list[str] | None) -> list[DeadTask]:
        if task_ids is None:
            taken = list(self._dead.values())
            self._dead.clear()
            return taken
        wanted = set(task_ids)
        taken = [dead for task_id, dead in self._dead.items() if task_id in wanted]
        for dead in taken:
            del self._dead[dead.task.task_id]
        return taken

    async def stats(self) -> QueueStats:
        return QueueStats(
            queue_length=len(self._entries),
            tasks_enqueued=self._enqueued,
            tasks_dequeued=self._dequeued,
            tasks_failed=self._failed,
            tasks_completed=self._completed,
            tasks_retried=self._retried,
            dead_letter_length=len(self._dead),
            delayed_length=len(self._delayed),
            last_processed_task=self._last,
        )

    async def depth(self) -> int:
        return len(self._entries)

    async def close(self) -> None:
        """Wake every waiting ``reserve`` (they return nothing); the contents are dropped."""
        self._closed = True
        self._notify()

    def _notify(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    def _push(self, task: Task) -> None:
        receipt = str(next(self._receipts))
        self._entries[receipt] = _Entry(task=task, receipt=receipt)
        self._ready.append(receipt)
        self._enqueued += 1

    def _promote(self) -> None:
        """Move due retries into the queue and make expired deliveries visible again."""
        now = self._clock.now()
        while self._delayed_heap and self._delayed_heap[0][0] <= now:
            due, _, task = heapq.heappop(self._delayed_heap)
            if self._delayed.get(task) == due:
                del self._delayed[task]
                self._push(task)
        expired = [e for e in self._in_flight.values() if e.visible_at and e.visible_at <= now]
        # Oldest receipts go back first, ahead of anything never delivered.
        for entry in sorted(expired, key=lambda e: int(e.receipt), reverse=True):
            entry.visible_at = None
            del self._in_flight[entry.receipt]
            self._ready.appendleft(entry.receipt)

    def _hand_out(self, count: int) -> list[Reserved]:
        handed: list[Reserved] = []
        visible_at = self._clock.now() + self._visibility
        while self._ready and len(handed) < count:
            entry = self._entries.get(self._ready.popleft())
            if entry is None or entry.visible_at is not None:
                continue  # settled, or already handed out again, since it was queued
            entry.deliveries += 1
            entry.visible_at = visible_at
            self._in_flight[entry.receipt] = entry
            handed.append(
                Reserved(task=entry.task, receipt=entry.receipt, deliveries=entry.deliveries)
            )
        self._dequeued += len(handed)
        return handed

    def _seconds_until_next_due(self) -> float | None:
        times = [e.visible_at for e in self._in_flight.values() if e.visible_at is not None]
        if self._delayed_heap:
            times.append(self._delayed_heap[0][0])
        if not times:
            return None
        return (min(times) - self._clock.now()).total_seconds()

    def _settle(self, reserved: Reserved) -> bool:
        """Drop a delivery's task; False if it was already settled."""
        entry = self._entries.pop(reserved.receipt, None)
        if entry is None:
            return False
        self._in_flight.pop(reserved.receipt, None)
        self._last = LastProcessed(
            task_id=entry.task.task_id,
            action_id=entry.task.action_id,
            target=entry.task.target,
            timestamp=self._clock.now(),
        )
        return True
