"""The global automation switch: while paused, no new action is created (docs/design.md safety)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.tables import automation
from vigil.db.upsert import insert_into
from vigil.notify.events import NotificationEvent
from vigil.notify.store import record_notification
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


async def _locked_state(conn: AsyncConnection) -> AutomationState:
    """The switch as stored, its row locked until the transaction ends (created first if it
    was never touched), so two requests to pause at once find one of them first."""
    await conn.execute(
        insert_into(conn, automation)
        .values(id=_ROW, paused=False, reason=None, since=None, by=None)
        .on_conflict_do_nothing(index_elements=[automation.c.id])
    )
    row = (
        await conn.execute(select(automation).where(automation.c.id == _ROW).with_for_update())
    ).one()
    return AutomationState(paused=row.paused, reason=row.reason, since=row.since, by=row.by)


async def set_paused(
    conn: AsyncConnection, *, paused: bool, reason: str | None, actor: Actor, now: datetime
) -> AutomationState:
    """Pause or resume automation, with an audit row and, when the switch really turns, an
    ``automation_paused`` / ``automation_resumed`` notification. Pausing twice keeps the
    first ``since`` (the pause goes on) but records the new reason."""
    before = await _locked_state(conn)
    since = (before.since if before.paused else now) if paused else now
    state = AutomationState(paused=paused, reason=reason, since=since, by=actor.name)
    values = {"id": _ROW, "paused": paused, "reason": reason, "since": since, "by": actor.name}
    statement = insert_into(conn, automation).values(**values)
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
    if before.paused != paused:
        await _notify(conn, state=state, now=now)
    return state


async def _notify(conn: AsyncConnection, *, state: AutomationState, now: datetime) -> None:
    """The notification of a switch that turned."""
    if state.paused:
        event, told = NotificationEvent.AUTOMATION_PAUSED, "paused"
    else:
        event, told = NotificationEvent.AUTOMATION_RESUMED, "resumed"
    why = f": {state.reason}" if state.reason else ""
    suffix = "; no new action is created until it is resumed" if state.paused else ""
    await record_notification(
        conn,
        now=now,
        event=event,
        reason=f"automation {told} by {state.by}{why}{suffix}",
        details={"reason": state.reason, "by": state.by},
    )
