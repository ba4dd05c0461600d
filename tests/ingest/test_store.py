"""The metric store on SQLite and PostgreSQL: large inserts and upserts, stored as Core would.

On SQLite the store sends its own statements (many rows each) to the driver; these tests
pin that what it stores reads back exactly as rows written through SQLAlchemy Core do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from vigil.container import Container
from vigil.db.engine import Database
from vigil.db.tables import metric_latest, metrics
from vigil.ingest.schemas import Sample
from vigil.ingest.store import insert_samples, latest_values, upsert_latest

T0 = datetime(2026, 1, 19, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
async def database(container: Container) -> AsyncIterator[Database]:
    yield container.database
    await container.database.dispose()


def samples(count: int, *, targets: int = 300, ts: datetime = T0) -> list[Sample]:
    return [
        Sample(
            name=f"m{i // targets % 40}",
            value=i + 0.25,
            target=f"host-{i % targets:04d}",
            tags={"host": f"host-{i % targets:04d}", "i": str(i), "ünï": "cödé"},
            ts=ts + timedelta(microseconds=i % 7),
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("count", [1, 3, 5_000])
async def test_insert_returns_ids_in_order_and_stores_every_field(
    database: Database, count: int
) -> None:
    batch = samples(count)
    now = T0 + timedelta(seconds=1)
    async with database.write() as conn:
        ids = await insert_samples(conn, samples=batch, now=now)
    assert len(ids) == count
    assert len(set(ids)) == count
    async with database.read() as conn:
        rows = {r.id: r for r in await conn.execute(select(metrics))}
    for sample, metric_id in zip(batch, ids, strict=True):
        row = rows[metric_id]
        assert (row.name, row.value, row.target, row.tags) == (
            sample.name,
            sample.value,
            sample.target,
            sample.tags,
        )
        assert row.ts == sample.ts
        assert row.ts.tzinfo is not None
        assert row.received_at == now


async def test_inserted_rows_are_stored_as_core_stores_them(database: Database) -> None:
    sample = samples(1)[0]
    async with database.write() as conn:
        await conn.execute(
            metrics.insert().values(
                name="core",
                value=sample.value,
                target=sample.target,
                tags=sample.tags,
                ts=sample.ts,
                received_at=T0,
            )
        )
        await insert_samples(conn, samples=[sample], now=T0)
    async with database.read() as conn:
        raw = (
            await conn.exec_driver_sql(
                "SELECT name, value, target, tags, ts, received_at FROM metrics ORDER BY id"
            )
        ).all()
    core, ours = (tuple(row)[1:] for row in raw)
    assert ours == core


async def test_ids_keep_growing_across_transactions(database: Database) -> None:
    seen: list[int] = []
    for _ in range(3):
        async with database.write() as conn:
            seen += await insert_samples(conn, samples=samples(10), now=T0)
    assert seen == sorted(seen)
    assert len(set(seen)) == 30


async def test_upsert_keeps_the_newest_value_of_each_series(database: Database) -> None:
    # More series than fit one SQLite statement, sent twice: newer, then older again.
    newer = samples(9_000, targets=9_000, ts=T0 + timedelta(minutes=1))
    older = [Sample(s.name, -s.value, s.target, s.tags, s.ts - timedelta(minutes=5)) for s in newer]
    async with database.write() as conn:
        await upsert_latest(conn, samples=newer)
    async with database.write() as conn:
        await upsert_latest(conn, samples=older)
    async with database.read() as conn:
        rows = {(r.target, r.name): r for r in await conn.execute(select(metric_latest))}
    assert len(rows) == 9_000
    for sample in newer:
        assert sample.target is not None
        row = rows[(sample.target, sample.name)]
        assert (row.value, row.ts) == (sample.value, sample.ts)


async def test_latest_values_of_many_targets(database: Database) -> None:
    batch = samples(3_000, targets=1_000)
    async with database.write() as conn:
        await upsert_latest(conn, samples=batch)
    wanted = [f"host-{i:04d}" for i in range(0, 1_000, 3)] + ["never-seen"]
    async with database.read() as conn:
        values = await latest_values(conn, targets=wanted)
    expected: dict[str, dict[str, tuple[float, datetime]]] = {t: {} for t in wanted}
    for s in batch:
        if s.target in expected:
            expected[s.target][s.name] = (s.value, s.ts)
    assert values == expected
    assert all(ts.tzinfo is not None for v in values.values() for _, ts in v.values())


async def test_a_refused_insert_is_a_database_error(database: Database) -> None:
    bad: Any = None
    with pytest.raises(DBAPIError):
        async with database.write() as conn:
            await insert_samples(conn, samples=[Sample(bad, 1.0, "web-01", {}, T0)], now=T0)
    async with database.read() as conn:
        assert (await conn.execute(select(metrics))).all() == []
