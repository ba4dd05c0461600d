"""The remediator: run each (action_id, attempt) at most once and remember how it went.

:class:`Remediator` is the core the HTTP service (``vigil.remediation.app``) serves, and the
one workers call in-process (through :class:`LocalExecutor`) when no remediator URL is
configured, so both shapes deduplicate the same way (docs/design.md invariants 3 and 7):

    claim the key (one short transaction) ─► run the change (no transaction held)
        ─► record the result (one short transaction) ─► return what was recorded

A request for a key already finished gets the recorded result; one still running gets
:class:`InProgress`. What actually makes the change is injected as a :data:`Run`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic_core import PydanticSerializationError

from vigil.clock import Clock
from vigil.db.engine import Database
from vigil.errors import InvalidInput, Unavailable
from vigil.remediation.metrics import RemediatorMetrics
from vigil.remediation.runs import RunRecord, claim_run, finish_run
from vigil.remediation.wire import RemediateRequest, RemediateResult

log = logging.getLogger(__name__)

Run = Callable[[RemediateRequest], Awaitable[RemediateResult]]
"""Makes the change for one request and reports how it went (a plugin failure is a
``failed`` result, not an exception)."""

EXPIRY_GRACE_SECONDS = 30.0
"""How long past its timeout a run may stay ``running`` before it counts as interrupted."""


class Executor(Protocol):
    """Runs one attempt of a remediation, remotely or in-process, and says how it went."""

    async def execute(self, request: RemediateRequest) -> RemediateResult:
        """The attempt's result; a failure to get one is a ``failed`` result, not an error."""
        ...


@dataclass(frozen=True, slots=True)
class InProgress:
    """The key is claimed and its run has not finished yet: ask again later, same key."""

    action_id: int
    attempt: int
    started_at: datetime


class IdempotencyKeyReused(InvalidInput):
    """A request reuses an (action_id, attempt) recorded for another action or target.

    Never silently answered with the other request's result: that would report a change
    that was not made (two Vigil installations sharing one remediator database would do it).
    """


def default_owner() -> str:
    """A name for this process in the run records: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


FINISH_RETRY_SECONDS = 30.0
"""How long the remediator keeps trying to record a result while the database is down."""


class Remediator:
    """Deduplicating front of a :data:`Run`; see the module docstring."""

    def __init__(
        self,
        *,
        database: Database,
        clock: Clock,
        run: Run,
        timeout_for: Callable[[RemediateRequest], float],
        owner: str | None = None,
        grace: float = EXPIRY_GRACE_SECONDS,
        metrics: RemediatorMetrics | None = None,
    ) -> None:
        self._db = database
        self._clock = clock
        self._run = run
        self._timeout_for = timeout_for
        self.owner = owner or default_owner()
        self._grace = grace
        self._metrics = metrics or RemediatorMetrics()

    async def remediate(self, request: RemediateRequest) -> RemediateResult | InProgress:
        """Run ``request`` unless its key was claimed before; the recorded result, or
        :class:`InProgress` while another call is running it.

        Raises :class:`IdempotencyKeyReused` for a key recorded with another action or
        target, and :class:`~vigil.errors.Unavailable` when the database does not answer.
        """
        now = self._clock.now()
        expires_at = now + timedelta(seconds=self._timeout_for(request) + self._grace)
        async with self._db.write() as conn:
            claim = await claim_run(
                conn, request=request, owner=self.owner, now=now, expires_at=expires_at
            )
        if not claim.claimed:
            return self._answer_from(claim.record, request)

        started = time.monotonic()
        try:
            result = await self._run(request)
        except Exception as exc:
            # Run's contract is to report failures; this is a bug, and the change may have
            # happened in part: retryable, like an interruption.
            log.exception(
                "remediation raised: action_id=%s attempt=%s action=%s target=%s",
                request.action_id,
                request.attempt,
                request.action,
                request.target,
            )
            result = RemediateResult(
                status="failed",
                message=f"remediation raised {type(exc).__name__}: {exc}",
                details={"error": type(exc).__name__},
                duration_ms=(time.monotonic() - started) * 1000,
                retryable=True,
            )
        elapsed = time.monotonic() - started
        # A cancellation (shutdown) leaves the record running: it becomes an interrupted
        # failure once it expires, which is all anyone can know about it.
        recorded, record = await self._finish(request, storable(result, elapsed * 1000))
        if not recorded:
            log.warning(
                "remediation finished after its record expired; the late result is not "
                "recorded: action_id=%s attempt=%s status=%s message=%s",
                request.action_id,
                request.attempt,
                result.status,
                result.message,
            )
        assert record.result is not None
        self._metrics.ran(request.action, record.result.status, elapsed)
        return record.result

    async def _finish(
        self, request: RemediateRequest, result: RemediateResult
    ) -> tuple[bool, RunRecord]:
        """Record the result, trying again for a while if the database does not answer: the
        change has happened (or not) and only this record can say so; without it the key
        stays running and later reads as interrupted."""
        pause = 0.1
        deadline = time.monotonic() + FINISH_RETRY_SECONDS
        while True:
            try:
                async with self._db.write() as conn:
                    return await finish_run(
                        conn,
                        action_id=request.action_id,
                        attempt=request.attempt,
                        owner=self.owner,
                        result=result,
                        now=self._clock.now(),
                    )
            except Unavailable:
                if time.monotonic() + pause > deadline:
                    raise
                log.warning(
                    "cannot record a remediation result yet, trying again: action_id=%s attempt=%s",
                    request.action_id,
                    request.attempt,
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _answer_from(
        self, record: RunRecord, request: RemediateRequest
    ) -> RemediateResult | InProgress:
        if (record.action, record.target) != (request.action, request.target):
            self._metrics.count(request.action, "rejected")
            raise IdempotencyKeyReused(
                f"action_id {request.action_id} attempt {request.attempt} was recorded for "
                f"action {record.action!r} on {record.target!r}, not {request.action!r} on "
                f"{request.target!r}"
            )
        if record.running:
            self._metrics.count(request.action, "in_progress")
            return InProgress(record.action_id, record.attempt, record.started_at)
        self._metrics.count(request.action, "duplicate")
        assert record.result is not None
        return record.result


class LocalExecutor:
    """The in-process :class:`Executor`: a :class:`Remediator` whose answers are awaited.

    ``execute`` waits for a key another caller is running (polling every
    ``poll_interval`` seconds) up to ``wait_seconds``. It always returns a result: still
    running at the deadline, an unavailable database or a reused key come back as a
    ``failed`` result (retryable, except the reused key), never as an exception.
    """

    def __init__(
        self, remediator: Remediator, *, wait_seconds: float, poll_interval: float = 0.05
    ) -> None:
        self._remediator = remediator
        self._wait = wait_seconds
        self._poll = poll_interval

    async def execute(self, request: RemediateRequest) -> RemediateResult:
        deadline = time.monotonic() + self._wait
        while True:
            try:
                outcome = await self._remediator.remediate(request)
            except Unavailable as exc:
                # Maybe before the run, maybe after it while recording: ask again with the
                # same key (safe either way) until the deadline.
                if time.monotonic() + self._poll >= deadline:
                    return failure(
                        f"remediation not confirmed: {exc.message}", reason="unavailable"
                    )
                await asyncio.sleep(self._poll)
                continue
            except IdempotencyKeyReused as exc:
                return failure(exc.message, reason="key_reused", retryable=False)
            if isinstance(outcome, RemediateResult):
                return outcome
            if time.monotonic() >= deadline:
                return still_running(request, self._wait)
            await asyncio.sleep(self._poll)


UNREACHABLE = "unreachable"
"""``details.reason`` of a result for a request that certainly never reached a remediator
(connection refused, say), and before which no request of its call may have: nothing of
that attempt ran on its account."""


def never_sent(result: RemediateResult) -> bool:
    """Whether ``result`` says its request certainly never reached a remediator."""
    return result.status == "failed" and result.details.get("reason") == UNREACHABLE


def failure(message: str, *, reason: str, retryable: bool = True) -> RemediateResult:
    """A ``failed`` result for an attempt whose remediation did not answer; ``details``
    carry ``reason`` so a caller can tell these apart from a plugin's own failures."""
    return RemediateResult(
        status="failed",
        message=message,
        details={"reason": reason},
        duration_ms=0.0,
        retryable=retryable,
    )


def still_running(request: RemediateRequest, waited: float) -> RemediateResult:
    """The result for a key still running after ``waited`` seconds: the same key may be
    asked again later (``details.reason`` is ``in_progress``)."""
    return failure(
        f"action {request.action_id} attempt {request.attempt} is still running at the "
        f"remediator after {waited:.0f} seconds",
        reason="in_progress",
    )


def storable(result: RemediateResult, measured_ms: float) -> RemediateResult:
    """``result`` as every database can store it and JSON can carry it, unchanged where it
    already is: no NUL characters, no non-finite numbers, JSON values only in details."""
    duration = result.duration_ms
    if not math.isfinite(duration) or duration < 0:
        duration = measured_ms
    try:
        details = result.model_dump(mode="json")["details"]
    except PydanticSerializationError:
        details = {"unserializable_details": repr(result.details)}
    cleaned = _clean(details)
    message = _clean(result.message)
    if cleaned == result.details and message == result.message and duration == result.duration_ms:
        return result
    return result.model_copy(
        update={"details": cleaned, "message": message, "duration_ms": duration}
    )


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {_clean(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value
