"""The engine's transactions: SQLite writers of one process take turns; a lost connection
is the database being unavailable, whenever it is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.engine import Database, create_engine
from vigil.db.migrate import upgrade
from vigil.errors import Unavailable
from vigil.settings import Settings


async def test_a_sqlite_writer_that_gets_no_turn_in_time_is_unavailable(tmp_path: Path) -> None:
    """This process's SQLite writers take turns; one that waits too long gets Unavailable
    (a 503), not an endless wait."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'turns.db'}")
    database = Database(create_engine(settings), write_wait=0.2)
    try:
        await upgrade(database)
        holding = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with database.write():
                holding.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await holding.wait()
        with pytest.raises(Unavailable, match="no turn to write"):
            async with database.write():
                pass
        release.set()
        await holder
        async with database.write():  # the turn is free again
            pass
    finally:
        await database.dispose()


async def _lose_connection(database: Database, conn: AsyncConnection) -> None:
    """Make the server end ``conn``'s session, as a database crash would."""
    pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    async with database.engine.connect() as other:
        await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await other.commit()


# A server connection to lose is PostgreSQL's alone (SQLite is a file in this process).
_POSTGRES_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@_POSTGRES_ONLY
async def test_a_connection_lost_at_commit_is_unavailable(database_url: str) -> None:
    """A write whose connection is lost by the time it commits raises Unavailable (a 503,
    a transient failure for the worker), and the next write gets a working connection."""
    database = Database(create_engine(Settings(database_url=database_url, db_pool_size=2)))
    try:

        async def lose_before_commit() -> None:
            async with database.write() as conn:
                await conn.execute(text("SELECT 1"))
                await _lose_connection(database, conn)

        with pytest.raises(Unavailable):
            await lose_before_commit()
        async with database.write() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await database.dispose()


@_POSTGRES_ONLY
async def test_a_connection_lost_inside_a_write_is_unavailable(database_url: str) -> None:
    """A statement whose connection is gone raises Unavailable, not the rollback's error."""
    database = Database(create_engine(Settings(database_url=database_url, db_pool_size=2)))
    try:

        async def lose_before_a_statement() -> None:
            async with database.write() as conn:
                await _lose_connection(database, conn)
                await conn.execute(text("SELECT 1"))

        with pytest.raises(Unavailable):
            await lose_before_a_statement()
        async with database.read() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await database.dispose()


async def test_a_pool_with_every_connection_busy_is_unavailable(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite opens a connection for each use: there is no pool to exhaust")
    database = Database(create_engine(Settings(database_url=database_url, db_pool_size=1)))
    database.engine.pool._timeout = 0.2  # type: ignore[attr-defined]  # not 30 s in a test
    try:
        async with database.read(), database.read():  # the pool's one and its overflow
            with pytest.raises(Unavailable):
                async with database.read():
                    pass
    finally:
        await database.dispose()
