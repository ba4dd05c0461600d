"""Engine and transactions: one code path for SQLite (aiosqlite) and PostgreSQL (asyncpg).

SQLite runs in WAL mode with a busy timeout, and every read-then-write transaction starts
with ``BEGIN IMMEDIATE`` so two processes cannot both read and then overwrite each other
(WAL plus busy_timeout alone lose updates there). Read-only transactions start deferred.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from vigil.errors import Unavailable
from vigil.settings import Settings

_WRITE = "vigil_write"
_LAST = "vigil_last"


@dataclass
class LastWork:
    """What a :meth:`Database.write` transaction does last, just before it commits: the
    audit trail appends its rows there, so the chain's lock is always the last lock a
    transaction takes and is held only for that moment (no lock-order cycle with row locks
    taken after an append)."""

    hooks: list[Callable[[AsyncConnection], Awaitable[None]]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    """Each hook's own state, by a name of its choosing."""


def last_work(conn: AsyncConnection) -> LastWork | None:
    """The work ``conn``'s write transaction does before it commits (None: ``conn`` is not
    in a :meth:`Database.write`, so there is no such moment to wait for)."""
    sync = conn.sync_connection
    found: LastWork | None = None if sync is None else sync.get_execution_options().get(_LAST)
    return found


def _json_dumps(value: Any) -> str:
    # orjson writes datetimes as RFC 3339 and refuses NaN, which PostgreSQL's JSONB refuses too.
    return orjson.dumps(value).decode()


def create_engine(settings: Settings, *, pooled: bool = True) -> AsyncEngine:
    """The async engine for ``settings.database_url``; ``pooled=False`` for one-shot commands
    (migrations, the CLI), which open a connection and close it again."""
    url = make_url(settings.database_url)
    pool: dict[str, Any] = (
        {"pool_size": settings.db_pool_size, "max_overflow": settings.db_pool_size}
        if pooled
        else {"poolclass": NullPool}
    )
    sqlite = url.get_backend_name() == "sqlite"
    engine = create_async_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        connect_args={"timeout": settings.db_busy_timeout_seconds} if sqlite else {},
        pool_pre_ping=not sqlite,
        **pool,
    )
    if sqlite:
        _configure_sqlite(engine, settings)
    return engine


def _configure_sqlite(engine: AsyncEngine, settings: Settings) -> None:
    busy_ms = int(settings.db_busy_timeout_seconds * 1000)
    cache_kib = settings.sqlite_cache_mib * 1024

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the driver so BEGIN can be IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # A page cache large enough for an ingest group's index pages (SQLite's default is
        # 2 MiB); allocated as used, per connection.
        cursor.execute(f"PRAGMA cache_size=-{cache_kib}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock, serialization failure


def is_transient(exc: BaseException) -> bool:
    """Whether a database error only means "try the transaction again" (PostgreSQL)."""
    if not isinstance(exc, DBAPIError):
        return False
    for error in (exc.orig, getattr(exc.orig, "__cause__", None)):
        if getattr(error, "sqlstate", None) in _TRANSIENT_SQLSTATES:
            return True
    return False


def is_unavailable(exc: BaseException) -> bool:
    """Whether a database error means the database cannot be reached or is too busy to
    answer now (not a bad statement): the client gets 503 and may retry."""
    if is_transient(exc):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, InterfaceError | OSError | ConnectionError):
        return True
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower() if exc.orig is not None else ""
        return any(
            word in text
            for word in ("connect", "locked", "busy", "closed", "unable to open", "terminat")
        )
    return False


# --- SQLite hot paths --------------------------------------------------------------------
# Statements run many times a second (ingest, the policy revision check) go straight to the
# aiosqlite connection under a SQLAlchemy connection, inside its transaction: one trip to
# the driver's thread instead of SQLAlchemy's four (cursor, execute, fetch, close), each
# of which waits for the busy event loop. Errors are raised as SQLAlchemy's.


async def sqlite_fetch(
    conn: AsyncConnection, sql: str, parameters: Sequence[Any] = ()
) -> list[Any]:
    """Run one statement on the aiosqlite connection under ``conn`` (in its transaction),
    in one trip to the driver's thread; its rows, if any."""
    return await sqlite_send(await sqlite_driver(conn), sql, parameters)


async def sqlite_driver(conn: AsyncConnection) -> Any:
    """The aiosqlite connection under ``conn``."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    return driver


async def sqlite_send(driver: Any, sql: str, parameters: Sequence[Any]) -> list[Any]:
    """Run one statement on an aiosqlite connection; its rows, if any."""
    try:
        return list(await driver.execute_fetchall(sql, parameters))
    except sqlite3.Error as exc:
        # As SQLAlchemy raises it, so callers see one kind of database error.
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc


class Database:
    """Owns the engine and hands out transactions."""

    def __init__(self, engine: AsyncEngine, *, write_wait: float = 30.0) -> None:
        self.engine = engine
        self._write_wait = write_wait
        # SQLite has one writer at a time. Writers of this process queue here, in order, and
        # take the file's lock one after another; without it each would take its own
        # connection and wait in SQLite's busy handler, which polls by sleeping (1 to 100 ms)
        # instead of waking when the lock is free. Other processes still meet the busy
        # handler (and its timeout), as before.
        self._write_turn = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A read-then-write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on exit
        after its :class:`LastWork`.

        Not to be nested: on SQLite a write inside another write of the same task would
        wait for itself."""
        async with self._turn(), self._connect() as conn:
            # Kept in this connection object's execution options, which end with it: nothing
            # to clean up afterwards. (The pooled connection's ``info`` would need cleaning,
            # and touching it after the connection was lost -- a COMMIT that got no answer --
            # makes SQLAlchemy reconnect synchronously, which fails with MissingGreenlet in
            # place of the error that says the database is unavailable.)
            later = LastWork()
            await conn.execution_options(**{_WRITE: True, _LAST: later})
            async with conn.begin():
                yield conn
                for hook in later.hooks:
                    await hook(conn)

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        if self._write_turn is None:
            yield
            return
        try:
            async with asyncio.timeout(self._write_wait):
                await self._write_turn.acquire()
        except TimeoutError:
            raise Unavailable("database busy: no turn to write within the timeout") from None
        try:
            yield
        finally:
            self._write_turn.release()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction."""
        async with self._connect() as conn, conn.begin():
            yield conn

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        # Failing to get a connection at all means the database is unavailable; failing
        # later is that only when the driver says the connection was lost.
        try:
            conn = await self.engine.connect()
        except (DBAPIError, OSError, ConnectionError, PoolTimeout) as exc:
            # PoolTimeout: every pooled connection is busy (or waiting for a database that
            # is away) for longer than the pool waits.
            raise Unavailable("database unavailable") from exc
        try:
            yield conn
        except (DBAPIError, OSError, ConnectionError) as exc:
            if is_unavailable(exc):
                raise Unavailable("database unavailable") from exc
            raise
        finally:
            await conn.close()

    async def ping(self) -> None:
        """Raise :class:`Unavailable` unless the database answers."""
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
