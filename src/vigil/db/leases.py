"""Named leadership leases in the database: at most one holder at a time, across processes.

A holder renews its lease well within ``ttl``; when it dies, the lease expires and the next
process to ask takes it over. One upsert decides, so two processes cannot both win.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import case, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.tables import leases
from vigil.db.upsert import insert_into


async def acquire(
    conn: AsyncConnection, *, name: str, holder: str, now: datetime, ttl: float
) -> bool:
    """Take or renew lease ``name`` for ``holder``; whether ``holder`` holds it afterwards."""
    statement = insert_into(conn, leases).values(
        name=name, holder=holder, expires_at=now + timedelta(seconds=ttl), acquired_at=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=[leases.c.name],
        set_={
            "holder": statement.excluded.holder,
            "expires_at": statement.excluded.expires_at,
            # A renewal keeps when the holder took it; a takeover starts afresh.
            "acquired_at": case(
                (leases.c.holder == statement.excluded.holder, leases.c.acquired_at),
                else_=statement.excluded.acquired_at,
            ),
        },
        where=(leases.c.holder == statement.excluded.holder) | (leases.c.expires_at < now),
    )
    await conn.execute(statement)
    current = (
        await conn.execute(select(leases.c.holder).where(leases.c.name == name))
    ).scalar_one_or_none()
    return current == holder


async def release(conn: AsyncConnection, *, name: str, holder: str) -> None:
    """Give lease ``name`` up (if ``holder`` has it), so another process need not wait."""
    await conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))


async def holder_of(conn: AsyncConnection, *, name: str, now: datetime) -> str | None:
    """Who holds lease ``name`` now, if anyone."""
    row = (
        await conn.execute(
            select(leases.c.holder, leases.c.expires_at).where(leases.c.name == name)
        )
    ).one_or_none()
    if row is None or row.expires_at < now:
        return None
    return str(row.holder)
