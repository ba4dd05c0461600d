"""The audit trail: one append-only row per mutation, written in the mutation's transaction.

Rows are hash-chained: each stores the hash of the row before it (the first, that of a
fixed genesis) and its own hash over its content and that link, so altering, removing or
reordering any row breaks the chain (:func:`verify_chain` finds where). Appends take the
chain's tail row under a lock, so two transactions cannot both extend the same tail and
fork the chain; in a :meth:`~vigil.db.engine.Database.write` they do it last, just before
the commit, so that lock never waits on (or holds up) any other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.engine import last_work
from vigil.db.paging import newest_first
from vigil.db.tables import audit, audit_chain
from vigil.observability.chain import GENESIS, row_hash

SYSTEM = "system"
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked for a change, and under which request id."""

    name: str = SYSTEM
    request_id: str | None = None


async def _tail(conn: AsyncConnection) -> str:
    """The hash at the end of the chain, locked until the transaction ends (on SQLite the
    write transaction already excludes every other writer)."""
    query = select(audit_chain.c.last_hash).where(audit_chain.c.id == 1)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return str((await conn.execute(query)).scalar_one())  # seeded by migration 0007


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
    await append_audits(conn, at=at, actor=actor, entries=[(kind, subject, before, after)])


async def append_audits(
    conn: AsyncConnection,
    *,
    at: datetime,
    actor: Actor,
    entries: list[tuple[str, str, Any, Any]],
) -> None:
    """Append several audit rows, ``(kind, subject, before, after)`` each, to the caller's
    transaction. In a :meth:`~vigil.db.engine.Database.write` they are chained and written
    just before it commits (see :class:`~vigil.db.engine.LastWork`); elsewhere at once."""
    if not entries:
        return
    rows = [
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
    ]
    later = last_work(conn)
    if later is None:
        await _chain(conn, rows)
        return
    queued: list[dict[str, Any]] | None = later.data.get(_QUEUED)
    if queued is None:
        queued = later.data[_QUEUED] = []
        later.hooks.append(lambda c: _chain(c, queued))
    queued.extend(rows)


_QUEUED = "audit"


async def _chain(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Link ``rows`` to the end of the chain and insert them (the chain's tail is locked
    from here to the commit)."""
    prev = await _tail(conn)
    for row in rows:
        digest = row_hash(prev, **row)
        row["prev_hash"], row["hash"] = prev, digest
        prev = digest
    await conn.execute(audit.insert(), rows)
    await conn.execute(audit_chain.update().where(audit_chain.c.id == 1).values(last_hash=prev))


@dataclass(frozen=True, slots=True)
class Break:
    """Where the chain is broken, and how."""

    id: int | None
    """The first row that does not check out (None: the end of the chain is missing)."""
    reason: str


async def _rows(conn: AsyncConnection, chunk: int = 1000) -> AsyncIterator[Any]:
    last = 0
    while True:
        rows = (
            await conn.execute(
                select(audit).where(audit.c.id > last).order_by(audit.c.id).limit(chunk)
            )
        ).all()
        for row in rows:
            yield row
        if len(rows) < chunk:
            return
        last = rows[-1].id


async def verify_chain(conn: AsyncConnection) -> tuple[int, Break | None]:
    """Walk the chain in order: how many rows checked out, and the first break, if any."""
    prev = GENESIS
    checked = 0
    async for row in _rows(conn):
        if row.prev_hash != prev:
            return checked, Break(
                row.id,
                "its link does not match the row before it: a row was removed or reordered"
                if row.prev_hash is not None
                else "it has no link",
            )
        expected = row_hash(
            prev,
            at=row.at,
            actor=row.actor,
            kind=row.kind,
            subject=row.subject,
            before=row.before,
            after=row.after,
            request_id=row.request_id,
        )
        if row.hash != expected:
            return checked, Break(row.id, "its content does not match its hash: it was altered")
        prev = expected
        checked += 1
    tail = (
        await conn.execute(select(audit_chain.c.last_hash).where(audit_chain.c.id == 1))
    ).scalar_one_or_none()
    if tail is not None and tail != prev:
        return checked, Break(None, "the chain ends early: its last rows were removed")
    return checked, None


def entry_out(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at,
        "actor": row.actor,
        "kind": row.kind,
        "subject": row.subject,
        "before": row.before,
        "after": row.after,
        "request_id": row.request_id,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


async def list_entries(
    conn: AsyncConnection,
    *,
    page: int,
    limit: int,
    actor: str | None = None,
    kind: str | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """A page of audit rows, newest first, and how many match in all."""
    conditions = []
    if actor is not None:
        conditions.append(audit.c.actor == actor)
    if kind is not None:
        conditions.append(audit.c.kind == kind)
    if start_time is not None:
        conditions.append(audit.c.at >= start_time)
    if end_time is not None:
        conditions.append(audit.c.at <= end_time)
    rows, total = await newest_first(conn, audit, conditions=conditions, page=page, limit=limit)
    return [entry_out(r) for r in rows], total
