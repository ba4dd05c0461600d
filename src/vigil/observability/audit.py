"""The audit trail: one append-only row per mutation, written in the mutation's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.tables import audit

SYSTEM = "system"
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked for a change, and under which request id."""

    name: str = SYSTEM
    request_id: str | None = None


async def append_audit(
    conn: AsyncConnection,
    *,
    at: datetime,
    actor: Actor,
    kind: str,
    subject: str,
    before: Any = None,
    after: Any = None,
) -> None:
    """Append one audit row inside the caller's transaction."""
    await conn.execute(
        audit.insert().values(
            at=at,
            actor=actor.name,
            kind=kind,
            subject=subject,
            before=before,
            after=after,
            request_id=actor.request_id,
        )
    )


async def list_audit(
    conn: AsyncConnection, *, limit: int = 100, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """Audit rows, newest first, and the total count."""
    total = (await conn.execute(select(func.count()).select_from(audit))).scalar_one()
    rows = await conn.execute(select(audit).order_by(audit.c.id.desc()).limit(limit).offset(offset))
    return [dict(row._mapping) for row in rows], int(total)
