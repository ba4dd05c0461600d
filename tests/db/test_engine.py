"""The engine's transactions: SQLite writers of one process take turns."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

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
