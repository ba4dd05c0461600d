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

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from itertools import chain
from typing import Any

from sqlalchemy import Text, bindparam, delete, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.engine import sqlite_driver, sqlite_fetch, sqlite_send
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


async def store_samples(
    conn: AsyncConnection, *, samples: Sequence[Sample], now: datetime
) -> Awaitable[list[int]]:
    """:func:`insert_samples` then :func:`upsert_latest`; awaiting the answer gives the ids.

    On SQLite the statements are handed to the driver's thread before this returns, and run
    there while the caller goes on (the writer evaluates the samples meanwhile): the caller
    must await the answer before anything else uses ``conn``. Elsewhere everything is done
    when this returns.
    """
    if conn.dialect.name == "sqlite":
        return await _sqlite_store_samples(conn, samples=samples, now=now)
    ids = await insert_samples(conn, samples=samples, now=now)
    await upsert_latest(conn, samples=samples)
    return _ready(ids)


async def _ready(ids: list[int]) -> list[int]:
    return ids


def _newest(samples: Iterable[Sample]) -> dict[tuple[str, str], Sample]:
    """Each (target, metric)'s newest sample (the last of equals)."""
    newest: dict[tuple[str, str], Sample] = {}
    for s in samples:
        target = s.target
        if target is None:
            continue
        key = (target, s.name)
        seen = newest.get(key)
        if seen is None or s.ts >= seen.ts:
            newest[key] = s
    return newest


async def upsert_latest(conn: AsyncConnection, *, samples: Iterable[Sample]) -> None:
    """Keep each (target, metric)'s newest value; older samples never overwrite newer ones."""
    newest = _newest(samples)
    if not newest:
        return
    if conn.dialect.name == "sqlite":
        await _SQLITE_UPSERT_LATEST.execute(conn, _sqlite_latest_rows(conn.dialect, newest))
        return
    await conn.execute(
        _latest_upsert(postgresql.insert),
        # In key order, so concurrent upserts lock rows in one order and cannot deadlock.
        [
            {"target": t, "name": n, "value": s.value, "ts": s.ts}
            for (t, n), s in sorted(newest.items(), key=_key)
        ],
    )


def _key(item: tuple[tuple[str, str], Sample]) -> tuple[str, str]:
    return item[0]


_TARGET_LOCKS = 0x5649  # the first key of the two-key advisory locks, one per target
_LOCK_TARGETS = text(
    "SELECT count(pg_advisory_xact_lock(:space, h)) FROM "
    "(SELECT DISTINCT hashtext(t) AS h FROM unnest(:targets) AS t ORDER BY h) AS s"
).bindparams(bindparam("targets", type_=ARRAY(Text)))


async def lock_targets(conn: AsyncConnection, *, targets: Iterable[str]) -> None:
    """Serialise ingest per target until the transaction ends (PostgreSQL).

    A policy reading several metrics of a target must see what other transactions wrote
    for that target, which READ COMMITTED does not promise for writes still in flight; so
    every ingest group first takes one transaction-scoped advisory lock per target, all in
    one order, so they cannot deadlock either. SQLite needs none: ``BEGIN IMMEDIATE``
    already serialises writers.
    """
    if conn.dialect.name != "postgresql":
        return
    wanted = sorted(set(targets))
    if wanted:
        await conn.execute(_LOCK_TARGETS, {"space": _TARGET_LOCKS, "targets": wanted})


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

    def statements(self, rows: Sequence[tuple[Any, ...]]) -> list[tuple[str, list[Any]]]:
        """The statements (SQL, parameters) inserting ``rows``."""
        step = self._per_statement
        out = []
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            sql = self._full if len(chunk) == step else self._sql(len(chunk))
            out.append((sql, list(chain.from_iterable(chunk))))
        return out

    async def execute(self, conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
        for sql, parameters in self.statements(rows):
            await sqlite_fetch(conn, sql, parameters)


_SQLITE_INSERT_METRICS = _SqliteRows(
    metrics.insert(), ("id", "name", "value", "target", "tags", "ts", "received_at")
)
_SQLITE_UPSERT_LATEST = _SqliteRows(
    _latest_upsert(sqlite.insert), ("target", "name", "value", "ts")
)


async def _sqlite_insert_samples(
    conn: AsyncConnection, *, samples: Sequence[Sample], now: datetime
) -> list[int]:
    first = await _sqlite_next_id(conn)
    rows = _sqlite_metric_rows(conn.dialect, samples, first, now)
    await _SQLITE_INSERT_METRICS.execute(conn, rows)
    return list(range(first, first + len(rows)))


async def _sqlite_store_samples(
    conn: AsyncConnection, *, samples: Sequence[Sample], now: datetime
) -> Awaitable[list[int]]:
    first = await _sqlite_next_id(conn)
    dialect = conn.dialect
    statements = _SQLITE_INSERT_METRICS.statements(
        _sqlite_metric_rows(dialect, samples, first, now)
    )
    newest = _newest(samples)
    if newest:
        statements += _SQLITE_UPSERT_LATEST.statements(_sqlite_latest_rows(dialect, newest))
    driver = await sqlite_driver(conn)
    # Each task hands its statement to the driver's queue at its first step; tasks take
    # their first step in the order they were made, so the statements run in this order.
    sent = [asyncio.ensure_future(sqlite_send(driver, sql, p)) for sql, p in statements]
    await asyncio.sleep(0)

    async def done() -> list[int]:
        outcomes = await asyncio.gather(*sent, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return list(range(first, first + len(samples)))

    return done()


async def _sqlite_next_id(conn: AsyncConnection) -> int:
    # A write transaction holds SQLite's only write lock (BEGIN IMMEDIATE), so nobody else
    # can take ids before the insert: number the rows here. Were that ever untrue, the insert
    # would fail on the primary key, never store a sample under another's id.
    ((last,),) = await sqlite_fetch(conn, "SELECT max(id) FROM metrics")
    return int(last or 0) + 1


def _sqlite_latest_rows(
    dialect: Dialect, newest: dict[tuple[str, str], Sample]
) -> list[tuple[Any, ...]]:
    ts = _memoized(_bind_converter(metric_latest.c.ts, dialect))
    return [(t, n, s.value, ts(s.ts)) for (t, n), s in newest.items()]


def _sqlite_metric_rows(
    dialect: Dialect, samples: Sequence[Sample], first: int, now: datetime
) -> list[tuple[Any, ...]]:
    tags = _json_converter(metrics.c.tags, dialect)
    ts = _memoized(_bind_converter(metrics.c.ts, dialect))
    received_at = _bind_converter(metrics.c.received_at, dialect)(now)
    return [
        (first + i, s.name, s.value, s.target, tags(s.tags), ts(s.ts), received_at)
        for i, s in enumerate(samples)
    ]


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
        for target, name, value, stamp in await sqlite_fetch(conn, sql, chunk):
            values[target][name] = (value, ts(stamp))


def _bind_converter(column: Any, dialect: Dialect) -> Callable[[Any], Any]:
    """What the column's type does to a value it sends to ``dialect``'s driver."""
    process = column.type._cached_bind_processor(dialect)
    return process if process is not None else _same


def _json_converter(column: Any, dialect: Dialect) -> Callable[[Any], Any]:
    """What a JSON column's type does to a dict it sends to ``dialect``'s driver.

    SQLAlchemy's JSON type hands a dict to the dialect's JSON serializer, and on SQLite
    does nothing more: call the serializer directly (a third of the cost per row).
    """
    serializer = getattr(dialect, "_json_serializer", None)
    if serializer is None or column.type._str_impl.bind_processor(dialect) is not None:
        return _bind_converter(column, dialect)
    return serializer  # type: ignore[no-any-return]


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
