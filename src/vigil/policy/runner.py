"""The background runner. For now it applies metric retention; later it evaluates
duration, window and absence conditions over stored samples."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from vigil.clock import Clock
from vigil.db.engine import Database
from vigil.ingest.store import prune_before, prune_latest_before
from vigil.observability.metrics import VigilMetrics

log = logging.getLogger(__name__)


class PolicyRunner:
    """Runs a pass every ``interval`` seconds until stopped."""

    def __init__(
        self,
        *,
        database: Database,
        metrics: VigilMetrics,
        clock: Clock,
        enabled: bool,
        interval: float,
        retention: float,
        prune_chunk: int,
    ) -> None:
        self._db = database
        self._metrics = metrics
        self._clock = clock
        self.enabled = enabled
        self.interval = interval
        self.retention = retention
        self._prune_chunk = prune_chunk
        self._task: asyncio.Task[None] | None = None
        self.last_run_at: datetime | None = None
        self.last_duration_ms: float | None = None
        self.last_pruned = 0
        self.last_error: str | None = None
        self.runs = 0
        self._ran = asyncio.Condition()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="vigil-runner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # keep running: the next pass may succeed
                self.last_error = repr(exc)
                log.exception("runner pass failed")
            await asyncio.sleep(self.interval)

    async def run_once(self) -> int:
        """One pass: delete samples older than the retention; how many were deleted."""
        started = time.perf_counter()
        cutoff = self._clock.now() - timedelta(seconds=self.retention)
        pruned = 0
        while True:
            async with self._db.write() as conn:
                deleted = await prune_before(conn, cutoff=cutoff, limit=self._prune_chunk)
            pruned += deleted
            if deleted < self._prune_chunk:
                break
        async with self._db.write() as conn:
            await prune_latest_before(conn, cutoff=cutoff)
        duration = time.perf_counter() - started
        self.last_run_at = self._clock.now()
        self.last_duration_ms = round(duration * 1000, 3)
        self.last_pruned = pruned
        self.last_error = None
        self.runs += 1
        self._metrics.metrics_pruned_total.inc(pruned)
        self._metrics.runner_last_run.set(self.last_run_at.timestamp())
        self._metrics.runner_duration.set(duration)
        async with self._ran:
            self._ran.notify_all()
        return pruned

    async def wait_for_runs(self, count: int) -> None:
        """Return once at least ``count`` passes have finished."""
        async with self._ran:
            await self._ran.wait_for(lambda: self.runs >= count)

    def status(self) -> dict[str, Any]:
        """The runner's state, as ``GET /api/v1/policies/runner/status`` shows it."""
        return {
            "enabled": self.enabled,
            "running": self.running,
            "interval_seconds": self.interval,
            "last_run_at": self.last_run_at,
            "last_duration_ms": self.last_duration_ms,
            "leader": True,
            "runs": self.runs,
            "retention_seconds": self.retention,
            "last_pruned": self.last_pruned,
            "last_error": self.last_error,
        }
