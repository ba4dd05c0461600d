"""The worker: takes tasks from the queue, runs each attempt once, records what happened.

For each task: claim the action (pending → running, a compare-and-set, so duplicates and
stale tasks fall away), ask the executor (the remediator, or in-process plugins) to run the
attempt while renewing the lease, then record the outcome -- completed, pending again with a
backoff for a retryable failure, or failed and dead-lettered -- and settle the task.

An attempt claimed for the second time (a re-run, see :mod:`vigil.worker.reruns`) keeps
its attempt while the remediator cannot be reached, until that attempt's deadline.

One module, past the usual size, because a task's handling is one sequence -- claim, run
while renewing the lease, record, settle -- whose failure paths (lost lease, database away,
remediator unreachable) are easiest to check side by side; what is separate (backoff,
re-runs, the reconciler) has its own module.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.actions import lifecycle
from vigil.actions.status import Status
from vigil.actions.store import Action, get_action
from vigil.clock import Clock
from vigil.db.engine import Database
from vigil.errors import IllegalTransition, NotFound, StaleAttempt, Unavailable
from vigil.notify.events import NotificationEvent
from vigil.observability.audit import Actor
from vigil.observability.logging import bound, get_logger
from vigil.observability.metrics import VigilMetrics
from vigil.queue.task import Outcome, Reserved, Task, TaskQueue
from vigil.remediation.config import Remediations
from vigil.remediation.service import Executor
from vigil.remediation.wire import RemediateRequest, RemediateResult
from vigil.worker import reruns
from vigil.worker.backoff import RetryPolicy

log = get_logger(__name__)


class Worker:
    """Runs up to ``concurrency`` tasks at once until stopped."""

    def __init__(
        self,
        *,
        name: str,
        database: Database,
        queue: TaskQueue,
        executor: Executor,
        remediations: Remediations,
        clock: Clock,
        metrics: VigilMetrics,
        retry: RetryPolicy,
        concurrency: int,
        lease_seconds: float,
        max_deliveries: int,
        shutdown_timeout: float,
        visibility_timeout: float | None = None,
        block: float = 1.0,
        rng: random.Random | None = None,
        resend_pause: float = 1.0,
        wanted: frozenset[NotificationEvent] = frozenset(),
    ) -> None:
        """``wanted``: the notification events the notifications file records
        (:attr:`vigil.notify.config.Notifications.recorded`); ``action_completed`` is
        recorded only when it is one of them."""
        self.name = name
        self._wanted = wanted
        self._db = database
        self._queue = queue
        self._executor = executor
        self._remediations = remediations
        self._clock = clock
        self._metrics = metrics
        self._retry = retry
        self._concurrency = concurrency
        self._lease = lease_seconds
        self._max_deliveries = max_deliveries
        self._shutdown_timeout = shutdown_timeout
        self._visibility = visibility_timeout
        self._block = block
        self._rng = rng or random.Random()
        self._resend_pause = resend_pause
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def active(self) -> int:
        return len(self._inflight)

    async def start(self) -> None:
        self._stopping.clear()
        self._loop = asyncio.create_task(self._run(), name=f"worker {self.name}")

    async def stop(self) -> None:
        """Stop taking tasks; let running ones finish within the shutdown timeout.

        Tasks still running then are cancelled: their actions keep their lease and are
        reclaimed by the reconciler once it expires, with the same attempt.
        """
        self._stopping.set()
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        if self._inflight:
            log.info("worker.draining", worker=self.name, running=len(self._inflight))
            _, pending = await asyncio.wait(set(self._inflight), timeout=self._shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "worker.drain_timed_out",
                    worker=self.name,
                    still_running=len(pending),
                    waited_seconds=self._shutdown_timeout,
                    note="left to be reclaimed",
                )
                await asyncio.gather(*pending, return_exceptions=True)

    async def _run(self) -> None:
        pause = 0.1
        while not self._stopping.is_set():
            free = self._concurrency - len(self._inflight)
            if free <= 0:
                await asyncio.wait(set(self._inflight), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                batch = await self._queue.reserve(self.name, count=free, block=self._block)
            except Unavailable:
                log.warning("worker.queue_unavailable", worker=self.name, retry_in=pause)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)
                pause = min(pause * 2, 5.0)
                continue
            except Exception:
                # Never let a surprise end the loop: the process would look healthy and
                # take no task again.
                log.exception("worker.reserve_failed", worker=self.name, retry_in=pause)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)
                pause = min(pause * 2, 5.0)
                continue
            pause = 0.1
            for reserved in batch:
                task = asyncio.create_task(self._guarded(reserved))
                self._inflight.add(task)
                self._metrics.worker_active_tasks.inc()
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._metrics.worker_active_tasks.dec()

    async def _guarded(self, reserved: Reserved) -> None:
        task = reserved.task
        try:
            with bound(request_id=task.request_id, action_id=task.action_id, task_id=task.task_id):
                log.info("task.received", attempt=task.attempt, deliveries=reserved.deliveries)
                await self.handle(reserved)
        except asyncio.CancelledError:
            raise
        except Unavailable as exc:
            # The database or the queue went away mid-task: the task stays unsettled and
            # comes back after the visibility timeout (or the lease expires).
            log.warning("task.left_for_later", worker=self.name, error=str(exc))
        except Exception:
            log.exception("task.failed_unexpectedly", worker=self.name)

    async def handle(self, reserved: Reserved) -> None:
        """Run one delivered task to its outcome and settle it."""
        task = reserved.task
        if reserved.deliveries > self._max_deliveries:
            await self._give_up(reserved)
            return
        claimed_at = self._clock.now()
        try:
            async with self._db.write() as conn:
                record = await lifecycle.claim(
                    conn,
                    action_id=task.action_id,
                    attempt=task.attempt,
                    owner=self.name,
                    now=claimed_at,
                    lease_seconds=self._lease,
                )
                rerun = record is not None and (
                    await lifecycle.times_claimed(
                        conn, action_id=task.action_id, attempt=task.attempt
                    )
                    > 1
                )
        except Unavailable as exc:
            # The database is down: drop this delivery rather than let it come back again
            # and again until it looks undeliverable. The action is still pending in the
            # database, and the reconciler sends it again once the database answers.
            log.warning("task.dropped", worker=self.name, error=exc.message)
            with contextlib.suppress(Unavailable):
                await self._queue.ack(reserved, outcome=Outcome.DISCARDED)
            self._metrics.tasks_total.labels(result="discarded").inc()
            return
        if record is None:
            await self._queue.ack(reserved, outcome=Outcome.DISCARDED)
            self._metrics.tasks_total.labels(result="discarded").inc()
            return
        self._metrics.actions_total.labels(action=record.action, status="running").inc()
        remediation = self._remediations.resolve(record.action, record.target)
        if remediation is None:
            result = _failure(
                f"no remediation in {self._remediations.source} matches action "
                f"{record.action!r} on target {record.target!r}"
            )
            retry = self._retry
        else:
            retry = RetryPolicy(
                max_attempts=remediation.retries.max_attempts or self._retry.max_attempts,
                base_seconds=remediation.retries.backoff_seconds or self._retry.base_seconds,
                max_seconds=remediation.retries.max_backoff_seconds or self._retry.max_seconds,
            )
            until = reruns.deadline(claimed_at, remediation.timeout) if rerun else None
            result = await self._execute(reserved, record, until)
        await self._record(reserved, record, result, retry)

    async def _execute(
        self,
        reserved: Reserved,
        record: Action,
        rerun_until: datetime | None,
    ) -> RemediateResult:
        attempt = reserved.task.attempt
        try:
            request = RemediateRequest(
                action_id=record.id,
                attempt=attempt,
                action=record.action,
                target=record.target,
                params=record.params or {},
                tags=record.tags or {},
            )
        except ValidationError as exc:
            # Every source checks targets and tags; an action that still cannot be sent
            # (one recorded before a check existed) fails for good rather than looping.
            message = f"the action cannot be sent to a remediation: {exc.errors()[0]['msg']}"
            return _failure(message, retryable=False)
        # The keepers are stopped with an event, not cancelled: cancelling one in the middle
        # of its database transaction can leak the pooled connection.
        done = asyncio.Event()
        renewing = [asyncio.create_task(self._keep_lease(record.id, attempt, done))]
        if self._visibility is not None:
            renewing.append(
                asyncio.create_task(self._keep_visible(reserved, self._visibility, done))
            )
        started = time.monotonic()
        try:
            result = await reruns.ask(
                self._executor,
                request,
                clock=self._clock,
                until=rerun_until,
                pause=self._resend_pause,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the executor's contract is to answer, but be safe
            log.exception("task.executor_raised", worker=self.name, action_id=record.id)
            result = _failure(f"{type(exc).__name__}: {exc}", retryable=True)
        finally:
            done.set()
            await asyncio.gather(*renewing, return_exceptions=True)
        self._metrics.action_duration_seconds.labels(action=record.action).observe(
            time.monotonic() - started
        )
        return result

    async def _keep_lease(self, action_id: int, attempt: int, done: asyncio.Event) -> None:
        while not await _wait(done, self._lease / 3):
            try:
                async with self._db.write() as conn:
                    held = await lifecycle.renew_lease(
                        conn,
                        action_id=action_id,
                        attempt=attempt,
                        owner=self.name,
                        now=self._clock.now(),
                        lease_seconds=self._lease,
                    )
            except Unavailable:
                continue
            if not held:
                return

    async def _keep_visible(
        self, reserved: Reserved, visibility: float, done: asyncio.Event
    ) -> None:
        """Keep the delivery from being handed to another worker while this one runs it.

        A copy would be discarded by the claim, but settling it would settle this delivery
        too (skewing the queue's counters), and a run longer than a few visibility timeouts
        would pile up deliveries until the task looked undeliverable.
        """
        while not await _wait(done, visibility / 3):
            with contextlib.suppress(Unavailable):
                await self._queue.touch(reserved, consumer=self.name)

    async def _record(
        self,
        reserved: Reserved,
        record: Action,
        result: RemediateResult,
        retry: RetryPolicy,
    ) -> None:
        task = reserved.task
        attempt = task.attempt
        answer = result.model_dump(mode="json")
        now = self._clock.now()
        used = attempt - record.attempt_floor
        final = not result.retryable or retry.exhausted(used)
        due = now + timedelta(seconds=retry.delay(used, self._rng))
        common: dict[str, Any] = {
            "action_id": task.action_id,
            "attempt": attempt,
            "owner": self.name,
            "now": now,
        }

        async def write(conn: AsyncConnection) -> None:
            if result.status == "success":
                await lifecycle.complete(
                    conn,
                    **common,
                    result=answer,
                    message=result.message,
                    wanted=self._wanted,
                )
            elif final:
                await lifecycle.fail(conn, **common, error=result.message, result=answer)
            else:
                await lifecycle.retry_later(
                    conn, **common, error=result.message, result=answer, due=due
                )

        outcome = (
            Status.COMPLETED
            if result.status == "success"
            else Status.FAILED
            if final
            else Status.PENDING
        )
        try:
            await self._write_outcome(write, action_id=task.action_id, attempt=attempt, to=outcome)
        except (StaleAttempt, IllegalTransition, NotFound):
            # Cancelled or reclaimed meanwhile: keep the result in its history only.
            async with self._db.write() as conn:
                await lifecycle.record_late_result(
                    conn, **common, outcome=f"{result.status}: {result.message}"
                )
            await self._queue.ack(reserved, outcome=Outcome.DISCARDED)
            self._metrics.tasks_total.labels(result="discarded").inc()
            return
        action = record.action
        if result.status == "success":
            await self._queue.ack(reserved, outcome=Outcome.COMPLETED)
            self._metrics.tasks_total.labels(result="completed").inc()
            self._metrics.actions_total.labels(action=action, status="completed").inc()
        elif final:
            await self._queue.dead_letter(reserved, task, error=result.message)
            self._metrics.tasks_total.labels(result="failed").inc()
            self._metrics.actions_total.labels(action=action, status="failed").inc()
        else:
            next_task = Task(
                action_id=task.action_id,
                attempt=attempt + 1,
                target=task.target,
                request_id=task.request_id,
            )
            await self._queue.retry_at(reserved, next_task, due)
            self._metrics.tasks_total.labels(result="retried").inc()
            self._metrics.actions_total.labels(action=action, status="pending").inc()

    async def _write_outcome(
        self,
        write: Callable[[AsyncConnection], Awaitable[None]],
        *,
        action_id: int,
        attempt: int,
        to: Status,
    ) -> None:
        """Record an attempt's outcome with ``write``, trying again while the database is
        unavailable (for up to a lease): the result is in hand and only this record keeps
        it -- left alone, the action would stay ``running`` until its lease expired.

        A COMMIT that got no answer may have landed, so before writing again the action is
        read: if it already shows ``attempt`` settled as ``to``, nothing more is written.
        Raises :class:`Unavailable` once the lease's time has passed.
        """
        deadline = time.monotonic() + self._lease
        pause = 0.1
        unsure = False
        while True:
            try:
                async with self._db.write() as conn:
                    if unsure and _shows(
                        await get_action(conn, action_id=action_id), attempt=attempt, outcome=to
                    ):
                        log.info("task.outcome_was_recorded", worker=self.name, attempt=attempt)
                        return
                    await write(conn)
                return
            except Unavailable as exc:
                if time.monotonic() + pause > deadline:
                    raise
                log.warning(
                    "task.outcome_not_recorded_yet",
                    worker=self.name,
                    attempt=attempt,
                    error=exc.message,
                    retry_in=pause,
                )
                unsure = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    async def _give_up(self, reserved: Reserved) -> None:
        """A task delivered too often without being settled (workers crashing on it): its
        action fails and the task goes to the dead letter -- unless the action has moved on
        (another copy runs it, or it ended), when this copy is merely dropped."""
        task = reserved.task
        error = (
            f"task delivered {reserved.deliveries} times without being settled "
            f"(limit {self._max_deliveries})"
        )
        async with self._db.write() as conn:
            failed = await lifecycle.fail_pending(
                conn,
                action_id=task.action_id,
                attempt=task.attempt,
                actor=Actor(self.name),
                now=self._clock.now(),
                error=error,
            )
        if failed is None:
            await self._queue.ack(reserved, outcome=Outcome.DISCARDED)
            self._metrics.tasks_total.labels(result="discarded").inc()
            return
        await self._queue.dead_letter(reserved, task, error=error)
        self._metrics.tasks_total.labels(result="dead_lettered").inc()
        self._metrics.actions_total.labels(action=failed.action, status="failed").inc()


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; whether it is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


def _shows(record: Action, *, attempt: int, outcome: Status) -> bool:
    """Whether the action ``record`` already shows ``attempt`` settled as ``outcome``
    (pending: its next attempt is due; a reclaim keeps the same attempt instead)."""
    if outcome is Status.PENDING:
        return record.next_attempt > attempt
    return record.status == outcome.value and record.attempts == attempt


def _failure(message: str, *, retryable: bool = False) -> RemediateResult:
    return RemediateResult(
        status="failed", message=message, details={}, duration_ms=0.0, retryable=retryable
    )
