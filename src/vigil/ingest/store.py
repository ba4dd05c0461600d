"""Metric samples in the database: insert, latest values per target, retention.

Ingest writes thousands of rows per transaction from the ingest pipeline's one writer task.
On SQLite its statements go to the driver directly, with the values converted by the
columns' own SQLAlchemy types (so what is stored is what SQLAlchemy would store), because:

- converting parameters through SQLAlchemy costs ~40 µs a row, and ``INSERT .. RETURNING``
  with the ids in parameter order costs SQLite one statement per row;
- a statement through SQLAlchemy's aiosqlite adapter takes four trips to the driver's
  thread (cursor, execute, fetch, close), each waiting for the busy event loop: here one;
- ``executemany`` hands the GIL over once per row (sqlite3 releases it around every step),
  and the event loop's thread, busy parsing requests, may keep it for a whole switch
  interval (5 ms) each time: here thousands of rows go in one statement.

PostgreSQL keeps the Core statements (asyncpg batches them well).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.tables import metric_latest, metrics
from vigil.ingest.schemas import Sample

# Bound parameters SQLite accepts in one statement (SQLITE_MAX_VARIABLE_NUMBER).
_SQLITE_MAX_PARAMETERS = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


async def insert_samples(
    conn: AsyncConnection, *, samples: Sequence[Sample], now: datetime
) -> list[int]:
    """Store samples; their ids, in the order given."""
    if conn.dialect.name == "sqlite":
        return await _sqlite_insert_samples(conn, samples=samples, now=now)
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
    if conn.dialect.name == "sqlite":
        ts = _memoized(_bind_converter(metric_latest.c.ts, conn.dialect))
        await _SQLITE_UPSERT_LATEST.execute(
            conn, [(t, n, s.value, ts(s.ts)) for (t, n), s in newest.items()]
        )
        return
    await conn.execute(
        _latest_upsert(postgresql.insert),
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
    if conn.dialect.name == "sqlite":
        await _sqlite_latest_values(conn, wanted, values)
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


def _latest_upsert(insert: Any) -> Any:
    stmt = insert(metric_latest)
    return stmt.on_conflict_do_update(
        index_elements=[metric_latest.c.target, metric_latest.c.name],
        set_={"value": stmt.excluded.value, "ts": stmt.excluded.ts},
        where=metric_latest.c.ts <= stmt.excluded.ts,
    )


# --- SQLite ---------------------------------------------------------------------------------


async def _sqlite_run(conn: AsyncConnection, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
    """Run one statement on the aiosqlite connection under ``conn`` (in its transaction),
    in one trip to the driver's thread; its rows, if any."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    try:
        return list(await driver.execute_fetchall(sql, parameters))
    except sqlite3.Error as exc:
        # As SQLAlchemy raises it, so callers see one kind of database error.
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc


class _SqliteRows:
    """An INSERT compiled for SQLite once, sent with as many rows per statement as fit."""

    def __init__(self, statement: Any, columns: Sequence[str]) -> None:
        sql = str(statement.compile(dialect=sqlite.dialect(), column_keys=list(columns)))
        group = "(" + ", ".join(["?"] * len(columns)) + ")"
        head, found, tail = sql.partition(f" VALUES {group}")
        if not found:
            raise AssertionError(f"unexpected INSERT form: {sql}")
        self._head, self._group, self._tail = f"{head} VALUES ", group, tail
        self._per_statement = _SQLITE_MAX_PARAMETERS // len(columns)
        self._full = self._sql(self._per_statement)

    def _sql(self, rows: int) -> str:
        return self._head + ", ".join([self._group] * rows) + self._tail

    async def execute(self, conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
        step = self._per_statement
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            sql = self._full if len(chunk) == step else self._sql(len(chunk))
            await _sqlite_run(conn, sql, [value for row in chunk for value in row])


_SQLITE_INSERT_METRICS = _SqliteRows(
    metrics.insert(), ("id", "name", "value", "target", "tags", "ts", "received_at")
)
_SQLITE_UPSERT_LATEST = _SqliteRows(
    _latest_upsert(sqlite.insert), ("target", "name", "value", "ts")
)


async def _sqlite_insert_samples(
    conn: AsyncConnection, *, samples: Sequence[Sample], now: datetime
) -> list[int]:
    # A write transaction holds SQLite's only write lock (BEGIN IMMEDIATE), so nobody else
    # can take ids before the insert: number the rows here. Were that ever untrue, the insert
    # would fail on the primary key, never store a sample under another's id.
    ((last,),) = await _sqlite_run(conn, "SELECT max(id) FROM metrics")
    first = int(last or 0) + 1
    dialect = conn.dialect
    tags = _bind_converter(metrics.c.tags, dialect)
    ts = _memoized(_bind_converter(metrics.c.ts, dialect))
    received_at = _bind_converter(metrics.c.received_at, dialect)(now)
    rows = [
        (first + i, s.name, s.value, s.target, tags(s.tags), ts(s.ts), received_at)
        for i, s in enumerate(samples)
    ]
    await _SQLITE_INSERT_METRICS.execute(conn, rows)
    return list(range(first, first + len(rows)))


async def _sqlite_latest_values(
    conn: AsyncConnection, wanted: list[str], values: dict[str, dict[str, tuple[float, datetime]]]
) -> None:
    # Thousands of rows per batch, with a few distinct timestamps: convert each once.
    ts = _memoized(_result_converter(metric_latest.c.ts, conn.dialect))
    step = _SQLITE_MAX_PARAMETERS
    for start in range(0, len(wanted), step):
        chunk = wanted[start : start + step]
        sql = (
            "SELECT target, name, value, ts FROM metric_latest WHERE target IN "
            f"({', '.join(['?'] * len(chunk))})"
        )
        for target, name, value, stamp in await _sqlite_run(conn, sql, chunk):
            values[target][name] = (value, ts(stamp))


def _bind_converter(column: Any, dialect: Dialect) -> Callable[[Any], Any]:
    """What the column's type does to a value it sends to ``dialect``'s driver."""
    process = column.type._cached_bind_processor(dialect)
    return process if process is not None else _same


def _result_converter(column: Any, dialect: Dialect) -> Callable[[Any], Any]:
    """What the column's type does to a value ``dialect``'s driver returns."""
    process = column.type._cached_result_processor(dialect, None)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value


def _memoized(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``convert``, remembering its answers (a batch's samples share a few timestamps)."""
    seen: dict[Any, Any] = {}

    def lookup(value: Any) -> Any:
        try:
            return seen[value]
        except KeyError:
            converted = seen[value] = convert(value)
            return converted

    return lookup
