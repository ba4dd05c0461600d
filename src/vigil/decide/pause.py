"""The global automation switch: while paused, no new action is created (docs/design.md safety)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.tables import automation
from vigil.observability.audit import Actor, append_audit

_ROW = 1


@dataclass(frozen=True, slots=True)
class AutomationState:
    """Whether automation is paused, since when, by whom and why."""

    paused: bool = False
    reason: str | None = None
    since: datetime | None = None
    by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"paused": self.paused, "reason": self.reason, "since": self.since, "by": self.by}


async def get_state(conn: AsyncConnection) -> AutomationState:
    """The switch as stored (not paused when it was never touched)."""
    row = (await conn.execute(select(automation).where(automation.c.id == _ROW))).one_or_none()
    if row is None:
        return AutomationState()
    return AutomationState(paused=row.paused, reason=row.reason, since=row.since, by=row.by)


async def set_paused(
    conn: AsyncConnection, *, paused: bool, reason: str | None, actor: Actor, now: datetime
) -> AutomationState:
    """Pause or resume automation, with an audit row. Pausing twice keeps the first
    ``since`` (the pause goes on) but records the new reason."""
    before = await get_state(conn)
    since = (before.since if before.paused else now) if paused else now
    state = AutomationState(paused=paused, reason=reason, since=since, by=actor.name)
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    values = {"id": _ROW, "paused": paused, "reason": reason, "since": since, "by": actor.name}
    statement = insert(automation).values(**values)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[automation.c.id],
            set_={k: v for k, v in values.items() if k != "id"},
        )
    )
    await append_audit(
        conn,
        at=now,
        actor=actor,
        kind="automation.paused" if paused else "automation.resumed",
        subject="automation",
        before=before.to_json(),
        after=state.to_json(),
    )
    return state
