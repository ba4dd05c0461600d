"""The Remediator core and the in-process executor, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.clock import FakeClock
from vigil.db.engine import Database, create_engine
from vigil.errors import Unavailable
from vigil.remediation.metrics import RemediatorMetrics
from vigil.remediation.runs import INTERRUPTED_MESSAGE
from vigil.remediation.service import (
    IdempotencyKeyReused,
    InProgress,
    LocalExecutor,
    Remediator,
    storable,
)
from vigil.remediation.wire import RemediateRequest, RemediateResult
from vigil.settings import Settings

TIMEOUT = 30.0
GRACE = 5.0


class FakeRun:
    """A Run that counts its calls and, when ``gate`` is set up, waits on it."""

    def __init__(self, result: RemediateResult | None = None, *, blocking: bool = False) -> None:
        self.calls: list[RemediateRequest] = []
        self.started = asyncio.Event()
        self.gate: asyncio.Event | None = asyncio.Event() if blocking else None
        self.result = result
        self.error: Exception | None = None

    async def __call__(self, request: RemediateRequest) -> RemediateResult:
        self.calls.append(request)
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.result or RemediateResult(
            status="success",
            message=f"restarted {request.target}",
            details={"attempt": request.attempt},
            duration_ms=1.5,
        )


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(create_engine(Settings(database_url=database_url, db_pool_size=4)))
    yield db
    await db.dispose()


@pytest.fixture
def metrics() -> RemediatorMetrics:
    return RemediatorMetrics(CollectorRegistry())


def remediator(
    database: Database,
    run: FakeRun,
    clock: FakeClock,
    metrics: RemediatorMetrics | None = None,
    owner: str = "test",
) -> Remediator:
    return Remediator(
        database=database,
        clock=clock,
        run=run,
        timeout_for=lambda _request: TIMEOUT,
        owner=owner,
        grace=GRACE,
        metrics=metrics,
    )


def request(attempt: int = 1, target: str = "web-01") -> RemediateRequest:
    return RemediateRequest(action_id=42, attempt=attempt, action="restart", target=target)


def count(metrics: RemediatorMetrics, status: str, action: str = "restart") -> float:
    value = metrics.registry.get_sample_value(
        "vigil_remediations_total", {"action": action, "status": status}
    )
    return value or 0.0


async def test_runs_once_and_answers_repeats_from_the_record(
    database: Database, clock: FakeClock, metrics: RemediatorMetrics
) -> None:
    run = FakeRun()
    service = remediator(database, run, clock, metrics)
    first = await service.remediate(request())
    assert isinstance(first, RemediateResult)
    assert first.status == "success"
    assert first.message == "restarted web-01"

    # Another process (another owner) on the same database, later.
    clock.advance(3600)
    other = remediator(database, run, clock, owner="other")
    again = await other.remediate(request())
    assert isinstance(again, RemediateResult)
    assert again.model_dump_json() == first.model_dump_json()
    assert len(run.calls) == 1

    assert count(metrics, "success") == 1
    assert (
        metrics.registry.get_sample_value(
            "vigil_remediation_duration_seconds_count", {"action": "restart"}
        )
        == 1
    )


async def test_each_attempt_runs(database: Database, clock: FakeClock) -> None:
    run = FakeRun()
    service = remediator(database, run, clock)
    await service.remediate(request(1))
    await service.remediate(request(2))
    await service.remediate(request(2))
    assert [r.attempt for r in run.calls] == [1, 2]


async def test_a_duplicate_while_running_is_in_progress_then_gets_the_result(
    database: Database, clock: FakeClock, metrics: RemediatorMetrics
) -> None:
    run = FakeRun(blocking=True)
    service = remediator(database, run, clock, metrics)
    first = asyncio.create_task(service.remediate(request()))
    await run.started.wait()

    # The claim's transaction is over while the run goes on: the duplicate is answered.
    duplicate = await service.remediate(request())
    assert isinstance(duplicate, InProgress)
    assert (duplicate.action_id, duplicate.attempt) == (42, 1)
    assert count(metrics, "in_progress") == 1

    assert run.gate is not None
    run.gate.set()
    result = await first
    assert isinstance(result, RemediateResult)
    assert await service.remediate(request()) == result
    assert len(run.calls) == 1
    assert count(metrics, "duplicate") == 1


async def test_a_run_that_raises_is_recorded_as_a_retryable_failure(
    database: Database, clock: FakeClock, metrics: RemediatorMetrics
) -> None:
    run = FakeRun()
    run.error = RuntimeError("plugin bug")
    service = remediator(database, run, clock, metrics)
    result = await service.remediate(request())
    assert isinstance(result, RemediateResult)
    assert result.status == "failed"
    assert result.retryable
    assert "RuntimeError: plugin bug" in result.message
    assert await service.remediate(request()) == result
    assert len(run.calls) == 1
    assert count(metrics, "failed") == 1


async def test_a_key_recorded_for_another_target_is_refused(
    database: Database, clock: FakeClock
) -> None:
    run = FakeRun()
    service = remediator(database, run, clock)
    await service.remediate(request(target="web-01"))
    with pytest.raises(IdempotencyKeyReused, match="web-02"):
        await service.remediate(request(target="web-02"))
    assert len(run.calls) == 1


async def test_a_run_outliving_its_expiry_is_answered_as_interrupted(
    database: Database, clock: FakeClock
) -> None:
    run = FakeRun(blocking=True)
    dead = remediator(database, run, clock, owner="dead")
    hung = asyncio.create_task(dead.remediate(request()))
    await run.started.wait()

    clock.advance(TIMEOUT + GRACE - 1)
    assert isinstance(await remediator(database, FakeRun(), clock).remediate(request()), InProgress)
    clock.advance(1)
    interrupted = await remediator(database, FakeRun(), clock).remediate(request())
    assert isinstance(interrupted, RemediateResult)
    assert interrupted.status == "failed"
    assert interrupted.retryable
    assert interrupted.message == INTERRUPTED_MESSAGE

    # The hung run finishing late does not change the record, and its caller is told what
    # the record says.
    assert run.gate is not None
    run.gate.set()
    assert await hung == interrupted

    # The next attempt runs normally.
    next_run = FakeRun()
    result = await remediator(database, next_run, clock).remediate(request(attempt=2))
    assert isinstance(result, RemediateResult)
    assert result.status == "success"
    assert len(next_run.calls) == 1


async def test_results_are_made_storable(database: Database, clock: FakeClock) -> None:
    run = FakeRun(
        RemediateResult(
            status="success",
            message="out\x00put",
            details={"stdout": "a\x00b", "ratio": math.nan, "k\x00": [math.inf, 1]},
            duration_ms=math.nan,
        )
    )
    result = await remediator(database, run, clock).remediate(request())
    assert isinstance(result, RemediateResult)
    assert result.message == "out\ufffdput"
    assert result.details == {"stdout": "a\ufffdb", "ratio": None, "k\ufffd": [None, 1]}
    assert math.isfinite(result.duration_ms)


def test_storable_leaves_clean_results_alone() -> None:
    clean = RemediateResult(status="failed", message="m", details={"a": [1, "b"]}, duration_ms=2)
    assert storable(clean, 5.0) is clean


async def test_local_executor_waits_for_a_running_key(database: Database, clock: FakeClock) -> None:
    run = FakeRun(blocking=True)
    service = remediator(database, run, clock)
    executor = LocalExecutor(service, wait_seconds=10, poll_interval=0.01)
    first = asyncio.create_task(executor.execute(request()))
    await run.started.wait()
    second = asyncio.create_task(executor.execute(request()))
    assert run.gate is not None
    run.gate.set()
    assert await first == await second
    assert len(run.calls) == 1


async def test_local_executor_gives_up_at_its_deadline(
    database: Database, clock: FakeClock
) -> None:
    run = FakeRun(blocking=True)
    service = remediator(database, run, clock)
    first = asyncio.create_task(service.remediate(request()))
    await run.started.wait()
    result = await LocalExecutor(service, wait_seconds=0.05, poll_interval=0.01).execute(request())
    assert result.status == "failed"
    assert result.retryable
    assert result.details == {"reason": "in_progress"}
    assert "still running" in result.message
    assert run.gate is not None
    run.gate.set()
    await first


async def test_local_executor_refuses_a_reused_key_permanently(
    database: Database, clock: FakeClock
) -> None:
    service = remediator(database, FakeRun(), clock)
    executor = LocalExecutor(service, wait_seconds=1)
    await executor.execute(request(target="web-01"))
    result = await executor.execute(request(target="web-02"))
    assert result.status == "failed"
    assert not result.retryable
    assert result.details == {"reason": "key_reused"}


async def test_local_executor_answers_when_the_database_does_not(clock: FakeClock) -> None:
    # Nothing listens on port 1.
    settings = Settings(database_url="postgresql://root@127.0.0.1:1/none", db_pool_size=1)
    database = Database(create_engine(settings))
    run = FakeRun()
    try:
        result = await LocalExecutor(remediator(database, run, clock), wait_seconds=1).execute(
            request()
        )
    finally:
        await database.dispose()
    assert result.status == "failed"
    assert result.retryable
    assert result.details == {"reason": "unavailable"}
    assert run.calls == []


class FlakyDatabase(Database):
    """Fails the writes whose numbers (1-based) are in ``fail``, as a database that drops
    out for a moment does."""

    def __init__(self, inner: Database, fail: set[int]) -> None:
        super().__init__(inner.engine)
        self.fail = fail
        self.writes = 0

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        self.writes += 1
        if self.writes in self.fail:
            raise Unavailable("database unavailable")
        async with super().write() as conn:
            yield conn


async def test_a_result_is_recorded_after_a_moment_without_the_database(
    database: Database, clock: FakeClock, metrics: RemediatorMetrics
) -> None:
    """The change was made: its result must be recorded, or a repeat would read as
    interrupted and the next attempt would make the change again."""
    flaky = FlakyDatabase(database, fail={2, 3})  # 1 claims; 2 and 3 (recording) fail
    run = FakeRun()
    result = await remediator(flaky, run, clock, metrics).remediate(request())
    assert isinstance(result, RemediateResult)
    assert result.status == "success"
    again = await remediator(database, run, clock, metrics, owner="other").remediate(request())
    assert isinstance(again, RemediateResult)
    assert (again.status, again.message) == ("success", result.message)
    assert len(run.calls) == 1
