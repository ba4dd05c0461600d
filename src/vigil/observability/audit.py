"""The audit trail: one append-only row per mutation, written in the mutation's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

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


async def append_audits(
    conn: AsyncConnection,
    *,
    at: datetime,
    actor: Actor,
    entries: list[tuple[str, str, Any, Any]],
) -> None:
    """Append several audit rows, ``(kind, subject, before, after)`` each, in one statement."""
    if not entries:
        return
    await conn.execute(
        audit.insert(),
        [
            {
                "at": at,
                "actor": actor.name,
                "kind": kind,
                "subject": subject,
                "before": before,
                "after": after,
                "request_id": actor.request_id,
            }
            for kind, subject, before, after in entries
        ],
    )
