"""Schema migrations (Alembic), and the start-up lock that keeps replicas from racing."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from vigil.db.engine import Database

_MIGRATIONS = Path(__file__).parent / "migrations"
_ADVISORY_LOCK_KEY = 0x56494749  # "VIGI"


def alembic_config() -> Config:
    """An Alembic configuration pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest migration shipped with this version of Vigil."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(database: Database) -> None:
    """Bring the schema to the newest revision (a no-op when it is already there)."""
    async with database.engine.connect() as conn:
        await conn.execution_options(vigil_write=True)
        await conn.run_sync(_upgrade)
        await conn.commit()


async def current_revision(database: Database) -> str | None:
    """The revision the database is at, or None when it has no Vigil schema."""
    async with database.engine.connect() as conn:
        return await conn.run_sync(_current)


@contextlib.asynccontextmanager
async def startup_lock(database: Database) -> AsyncIterator[None]:
    """Hold a cross-process lock: a PostgreSQL advisory lock, or a file lock beside SQLite."""
    if database.dialect == "postgresql":
        async with database.engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _ADVISORY_LOCK_KEY})
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _ADVISORY_LOCK_KEY})
                await conn.commit()
        return
    path = make_url(str(database.engine.url)).database
    if not path or path == ":memory:":
        yield
        return
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
