"""The reconciler: the database is the truth, so it re-sends what the queue may have lost.

Every interval, the one process holding the ``reconciler`` lease re-dispatches pending
actions that are due and whose last dispatch is older than the visibility timeout (a task
lost with Redis, or never enqueued), and reclaims running actions whose worker lease expired
(the worker died): they go back to pending with the same attempt, which the remediator
answers from its record if it already ran it. Duplicates this creates are absorbed by the
worker's compare-and-set claim.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from vigil.actions import lifecycle
from vigil.clock import Clock
from vigil.db import leases
from vigil.db.engine import Database
from vigil.errors import Unavailable
from vigil.observability.audit import Actor
from vigil.observability.logging import get_logger
from vigil.observability.metrics import VigilMetrics
from vigil.queue.task import Task, TaskQueue

LEASE = "reconciler"
log = get_logger(__name__)


class Reconciler:
    """Runs :meth:`run_once` every ``interval`` seconds until stopped."""

    def __init__(
        self,
        *,
        name: str,
        database: Database,
        queue: TaskQueue,
        clock: Clock,
        metrics: VigilMetrics,
        interval: float,
        visibility_timeout: float,
        batch: int = 500,
    ) -> None:
        self.name = name
        self._db = database
        self._queue = queue
        self._clock = clock
        self._metrics = metrics
        self._interval = interval
        self._visibility = visibility_timeout
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"reconciler {self.name}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        with contextlib.suppress(Unavailable):
            async with self._db.write() as conn:
                await leases.release(conn, name=LEASE, holder=self.name)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Unavailable as exc:
                log.warning("reconciler.unavailable", reconciler=self.name, error=exc.message)
            except Exception:
                log.exception("reconciler.pass_failed", reconciler=self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)

    async def run_once(self) -> int:
        """One pass, if this process leads; how many tasks it sent."""
        now = self._clock.now()
        async with self._db.write() as conn:
            leading = await leases.acquire(
                conn, name=LEASE, holder=self.name, now=now, ttl=self._interval * 3
            )
        if not leading:
            return 0
        async with self._db.write() as conn:
            reclaimed = await lifecycle.reclaim_expired(
                conn, now=now, actor=Actor(self.name), limit=self._batch
            )
        async with self._db.write() as conn:
            stale = await lifecycle.stale_dispatches(
                conn,
                now=now,
                older_than=now - timedelta(seconds=self._visibility),
                limit=self._batch,
            )
        for reason, found in (("lease_expired", reclaimed), ("stale_dispatch", stale)):
            for dispatch in found:
                await self._queue.enqueue(
                    Task(
                        action_id=dispatch.action_id,
                        attempt=dispatch.attempt,
                        target=dispatch.target,
                    )
                )
                self._metrics.reconciled_total.labels(reason=reason).inc()
        if reclaimed or stale:
            log.info(
                "reconciler.redispatched",
                reconciler=self.name,
                reclaimed=len(reclaimed),
                redispatched=len(stale),
            )
        return len(reclaimed) + len(stale)
