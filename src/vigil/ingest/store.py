"""Metric samples in the database: insert, latest values per target, retention."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.tables import metric_latest, metrics
from vigil.ingest.schemas import Sample


async def insert_samples(
    conn: AsyncConnection, *, samples: Sequence[Sample], now: datetime
) -> list[int]:
    """Store samples; their ids, in the order given."""
    rows = [
        {
            "name": s.name,
            "value": s.value,
            "target": s.target,
            "tags": s.tags,
            "ts": s.ts,
            "received_at": now,
        }
        for s in samples
    ]
    if len(rows) == 1:
        result = await conn.execute(metrics.insert().returning(metrics.c.id), rows[0])
        return [int(result.scalar_one())]
    result = await conn.execute(
        metrics.insert().returning(metrics.c.id, sort_by_parameter_order=True), rows
    )
    return [int(i) for i in result.scalars()]


async def upsert_latest(conn: AsyncConnection, *, samples: Iterable[Sample]) -> None:
    """Keep each (target, metric)'s newest value; older samples never overwrite newer ones."""
    newest: dict[tuple[str, str], Sample] = {}
    for s in samples:
        if s.target is None:
            continue
        key = (s.target, s.name)
        seen = newest.get(key)
        if seen is None or s.ts >= seen.ts:
            newest[key] = s
    if not newest:
        return
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(metric_latest)
    stmt = stmt.on_conflict_do_update(
        index_elements=[metric_latest.c.target, metric_latest.c.name],
        set_={"value": stmt.excluded.value, "ts": stmt.excluded.ts},
        where=metric_latest.c.ts <= stmt.excluded.ts,
    )
    await conn.execute(
        stmt,
        [{"target": t, "name": n, "value": s.value, "ts": s.ts} for (t, n), s in newest.items()],
    )


async def latest_values(
    conn: AsyncConnection, *, targets: Iterable[str]
) -> dict[str, dict[str, tuple[float, datetime]]]:
    """For each target, its latest (value, timestamp) of every metric it sent."""
    wanted = list(set(targets))
    values: dict[str, dict[str, tuple[float, datetime]]] = {t: {} for t in wanted}
    if not wanted:
        return values
    for chunk_start in range(0, len(wanted), 500):
        chunk = wanted[chunk_start : chunk_start + 500]
        rows = await conn.execute(
            select(
                metric_latest.c.target,
                metric_latest.c.name,
                metric_latest.c.value,
                metric_latest.c.ts,
            ).where(metric_latest.c.target.in_(chunk))
        )
        for target, name, value, ts in rows:
            values[target][name] = (value, ts)
    return values


async def prune_before(conn: AsyncConnection, *, cutoff: datetime, limit: int) -> int:
    """Delete up to ``limit`` samples older than ``cutoff``; how many were deleted."""
    oldest = select(metrics.c.id).where(metrics.c.ts < cutoff).order_by(metrics.c.ts).limit(limit)
    result = await conn.execute(delete(metrics).where(metrics.c.id.in_(oldest.scalar_subquery())))
    return int(result.rowcount or 0)


async def prune_latest_before(conn: AsyncConnection, *, cutoff: datetime) -> int:
    """Forget latest values not refreshed since ``cutoff``; how many were forgotten."""
    result = await conn.execute(delete(metric_latest).where(metric_latest.c.ts < cutoff))
    return int(result.rowcount or 0)
