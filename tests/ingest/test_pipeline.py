"""The ingest pipeline's group commit, on SQLite and on PostgreSQL.

Requests waiting together are written in one transaction. These tests hold the writer at
the door of its first transaction so that the requests queued meanwhile form one group,
then check that every request gets its own answer, and that a request the database refuses
fails alone: its neighbours in the group are stored, and none of its own samples is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vigil.clock import FakeClock
from vigil.container import Container
from vigil.db.engine import Database
from vigil.db.tables import actions, metrics
from vigil.errors import Unavailable
from vigil.ingest.pipeline import IngestPipeline, IngestResult
from vigil.ingest.schemas import Sample
from vigil.observability.audit import Actor
from vigil.observability.metrics import VigilMetrics
from vigil.policy.models import PolicySpec
from vigil.policy.store import PolicyCache, create_policy


class GatedDatabase(Database):
    """A database whose write transactions wait until ``gate`` is open."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self.failed = 0

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        self.waiting.set()
        await self.gate.wait()
        try:
            async with super().write() as conn:
                yield conn
        except Exception:
            self.failed += 1
            raise


@pytest.fixture
async def gated(container: Container) -> AsyncIterator[GatedDatabase]:
    database = GatedDatabase(container.database.engine)
    yield database
    await database.dispose()


@pytest.fixture
def queue_limit() -> int:
    """Parametrize to change the pipeline's queue limit."""
    return 10_000


@pytest.fixture
async def pipeline(
    gated: GatedDatabase, clock: FakeClock, queue_limit: int
) -> AsyncIterator[IngestPipeline]:
    ingest = IngestPipeline(
        database=gated,
        policies=PolicyCache(),
        metrics=VigilMetrics(),
        clock=clock,
        group_size=10_000,
        queue_limit=queue_limit,
    )
    await ingest.start()
    yield ingest
    gated.gate.set()
    await ingest.stop()


def sample(clock: FakeClock, name: str, value: float, target: str = "web-01") -> Sample:
    return Sample(name=name, value=value, target=target, tags={"n": str(value)}, ts=clock.now())


def refused(clock: FakeClock) -> Sample:
    """A sample no database will store: its tags cannot be written as JSON."""
    tags = cast(dict[str, str], {"bad": object()})
    return Sample(name="bad", value=-1.0, target="web-01", tags=tags, ts=clock.now())


async def grouped(
    pipeline: IngestPipeline,
    gated: GatedDatabase,
    clock: FakeClock,
    requests: Sequence[Sequence[Sample]],
) -> list[IngestResult | BaseException]:
    """Ingest ``requests`` as one group: queued while the writer waits at its first write."""
    first = [Sample("blocker", 0.0, None, {}, clock.now())]
    blocker = asyncio.create_task(pipeline.ingest(first, source="test", actor=Actor()))
    await gated.waiting.wait()  # the writer holds the blocker, waiting for the gate
    tasks = [
        asyncio.create_task(pipeline.ingest(samples, source="test", actor=Actor()))
        for samples in requests
    ]
    # One turn of the event loop: each task runs up to its first wait, having queued itself.
    await asyncio.sleep(0)
    gated.gate.set()
    await blocker
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def stored(database: Database, *where: Any) -> list[dict[str, Any]]:
    async with database.read() as conn:
        rows = await conn.execute(select(metrics).where(*where).order_by(metrics.c.id))
        return [dict(r._mapping) for r in rows]


async def test_each_request_of_a_group_gets_its_own_ids(
    pipeline: IngestPipeline, gated: GatedDatabase, clock: FakeClock
) -> None:
    requests = [[sample(clock, f"m{i}", float(j)) for j in range(i % 4 + 1)] for i in range(30)]
    results = await grouped(pipeline, gated, clock, requests)
    by_id = {row["id"]: row for row in await stored(gated, metrics.c.name != "blocker")}
    assert len(by_id) == sum(len(r) for r in requests)
    for samples, result in zip(requests, results, strict=True):
        assert isinstance(result, IngestResult), result
        assert len(result.metric_ids) == len(samples)
        assert [(by_id[i]["name"], by_id[i]["value"]) for i in result.metric_ids] == [
            (s.name, s.value) for s in samples
        ]
        assert result.evaluated == [True] * len(samples)


async def test_refused_request_does_not_fail_its_neighbours(
    pipeline: IngestPipeline, gated: GatedDatabase, clock: FakeClock
) -> None:
    good = [[sample(clock, "cpu_usage", float(i))] for i in range(20)]
    # A lone bad sample, and a bad one sharing its request with a good one (all or none).
    requests = [
        *good[:10],
        [refused(clock)],
        *good[10:],
        [sample(clock, "mixed", 1.0), refused(clock)],
    ]
    results = await grouped(pipeline, gated, clock, requests)

    # More failed transactions than refused requests: one held good neighbours as well.
    assert gated.failed > 2, "the refused requests were never grouped with good ones"
    assert isinstance(results[10], Exception)
    assert isinstance(results[-1], Exception)
    ok = [r for r in results if isinstance(r, IngestResult)]
    assert len(ok) == 20
    ids = [i for r in ok for i in r.metric_ids]
    assert len(set(ids)) == 20
    rows = await stored(gated, metrics.c.name != "blocker")
    assert sorted(row["id"] for row in rows) == sorted(ids)
    assert sorted(row["value"] for row in rows) == [float(i) for i in range(20)]
    assert not [row for row in rows if row["name"] in ("mixed", "bad")]


async def test_violations_of_one_pair_in_one_group_create_one_action(
    pipeline: IngestPipeline, gated: GatedDatabase, clock: FakeClock
) -> None:
    spec = PolicySpec.model_validate(
        {
            "name": "cpu-hot",
            "auto_remediate": True,
            "condition": {"type": "metric_exceeds", "metric": "cpu_usage", "threshold": 90},
            "action": "scale-up",
        }
    )
    async with gated.engine.begin() as conn:
        await create_policy(conn, spec=spec, now=clock.now(), actor=Actor())
    requests = [[sample(clock, "cpu_usage", 95.0 + i)] for i in range(5)]
    results = await grouped(pipeline, gated, clock, requests)

    decisions = [d for r in results if isinstance(r, IngestResult) for d in r.decisions]
    assert len(decisions) == 5
    assert [d.action is not None for d in decisions] == [True, False, False, False, False]
    assert [d.suppressed for d in decisions[1:]] == ["action already open"] * 4
    async with gated.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(actions))).scalar_one() == 1


async def test_stop_answers_the_request_in_flight_and_every_queued_one(
    pipeline: IngestPipeline, gated: GatedDatabase, clock: FakeClock
) -> None:
    in_flight = asyncio.create_task(
        pipeline.ingest([sample(clock, "first", 1.0)], source="test", actor=Actor())
    )
    await gated.waiting.wait()  # the writer holds it, at the door of its transaction
    queued = [
        asyncio.create_task(
            pipeline.ingest([sample(clock, f"q{i}", float(i))], source="test", actor=Actor())
        )
        for i in range(5)
    ]
    await asyncio.sleep(0)  # let them queue
    stopping = asyncio.create_task(pipeline.stop())
    await asyncio.sleep(0)
    with pytest.raises(Unavailable):
        await pipeline.ingest([sample(clock, "late", 1.0)], source="test", actor=Actor())
    gated.gate.set()
    async with asyncio.timeout(10):
        await stopping
        results = await asyncio.gather(in_flight, *queued)
    assert all(len(r.metric_ids) == 1 for r in results)
    names = {row["name"] for row in await stored(gated)}
    assert names == {"first", "q0", "q1", "q2", "q3", "q4"}


@pytest.mark.parametrize("queue_limit", [2])
async def test_a_full_queue_refuses_with_unavailable(
    pipeline: IngestPipeline, gated: GatedDatabase, clock: FakeClock
) -> None:
    held = asyncio.create_task(
        pipeline.ingest([sample(clock, "held", 1.0)], source="t", actor=Actor())
    )
    await gated.waiting.wait()  # the writer holds it; the queue is empty again
    waiting = [
        asyncio.create_task(
            pipeline.ingest([sample(clock, f"w{i}", 1.0)], source="t", actor=Actor())
        )
        for i in range(2)
    ]
    await asyncio.sleep(0)  # let them fill the queue
    with pytest.raises(Unavailable, match="overloaded"):
        await pipeline.ingest([sample(clock, "over", 1.0)], source="t", actor=Actor())
    gated.gate.set()
    await asyncio.gather(held, *waiting)
    assert "over" not in {row["name"] for row in await stored(gated)}


async def test_replicas_writing_the_same_targets_in_opposite_orders_never_fail(
    container: Container, settings: Any, clock: FakeClock
) -> None:
    """Two processes' groups over the same targets (one forwards, one backwards) take their
    locks in one order: no deadlock, no failed request (it was a 500 on PostgreSQL)."""
    from vigil.container import build_container

    replicas = [container, build_container(settings, clock=clock)]
    for replica in replicas:
        await replica.start(run_runner=False)
    targets = [f"t{i:03d}" for i in range(200)]

    async def send(replica: Container, order: list[str]) -> None:
        for _ in range(10):
            batch = [Sample("m", 1.0, t, {}, clock.now()) for t in order]
            await replica.ingest.ingest(batch, source="test", actor=Actor())

    try:
        await asyncio.gather(send(replicas[0], targets), send(replicas[1], targets[::-1]))
        async with container.database.read() as conn:
            count = (await conn.execute(select(func.count()).select_from(metrics))).scalar_one()
    finally:
        for replica in replicas:
            await replica.stop()
    assert count == 2 * 10 * len(targets)


class BrokenQueue:
    """A queue that refuses every task, as a Redis out of memory does."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.tried = 0

    async def enqueue(self, task: object) -> None:
        self.tried += 1
        raise self.error


@pytest.mark.parametrize("error", [RuntimeError("OOM"), Unavailable("redis unavailable")])
async def test_a_queue_that_refuses_tasks_never_stops_ingest(
    container: Container, clock: FakeClock, error: Exception
) -> None:
    from vigil.actions.dispatch import Dispatcher

    spec = PolicySpec.model_validate(
        {
            "name": "cpu-hot",
            "auto_remediate": True,
            "condition": {"type": "metric_exceeds", "metric": "cpu_usage", "threshold": 90},
            "action": "scale-up",
        }
    )
    async with container.database.write() as conn:
        await create_policy(conn, spec=spec, now=clock.now(), actor=Actor())
    broken = BrokenQueue(error)
    ingest = IngestPipeline(
        database=container.database,
        policies=PolicyCache(),
        metrics=VigilMetrics(),
        clock=clock,
        group_size=10_000,
        dispatcher=Dispatcher(cast(Any, broken)),
    )
    await ingest.start()
    try:
        for target in ("web-01", "web-02", "web-03"):
            result = await ingest.ingest(
                [sample(clock, "cpu_usage", 99.0, target)], source="test", actor=Actor()
            )
            assert [d.action is not None for d in result.decisions] == [True]
    finally:
        await ingest.stop()
    assert broken.tried == 3, "each action was offered to the queue"
    try:
        async with container.database.read() as conn:
            rows = (await conn.execute(select(actions.c.status))).scalars().all()
        assert rows == ["pending"] * 3, "recorded: the reconciler will dispatch them"
    finally:
        await container.database.dispose()
