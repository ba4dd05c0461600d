"""Idempotency keys of ingest requests in the database: claimed, answered, pruned.

A request sent with an ``Idempotency-Key`` claims its key in the transaction that stores
its samples, and the answer it gets is written there too; a retry of that request (on any
replica) finds the key and is answered from it, storing nothing. On PostgreSQL a second
request claiming a key another transaction holds waits for that transaction to end (the
key's primary key), then finds it answered -- or free again, if that one rolled back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.tables import ingest_keys
from vigil.db.upsert import insert_into
from vigil.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Answered:
    """A key stored by an earlier request: what that request was, and the answer it got."""

    fingerprint: str
    status_code: int
    body: bytes


async def claim_keys(
    conn: AsyncConnection,
    *,
    keys: Mapping[str, str],
    now: datetime,
    forget_before: datetime,
) -> dict[str, Answered]:
    """Claim each key of ``keys`` (key → fingerprint of its request) for this transaction;
    the keys an earlier request holds, with its answer (those are not claimed).

    Keys stored before ``forget_before`` are forgotten first, so a key expired but not yet
    pruned is claimed afresh.
    """
    wanted = sorted(keys)  # one order for every transaction: two cannot wait on each other
    await conn.execute(
        delete(ingest_keys).where(
            ingest_keys.c.key.in_(wanted), ingest_keys.c.created_at < forget_before
        )
    )
    await conn.execute(
        insert_into(conn, ingest_keys).on_conflict_do_nothing(index_elements=[ingest_keys.c.key]),
        [{"key": k, "fingerprint": keys[k], "created_at": now} for k in wanted],
    )
    rows = await conn.execute(
        select(
            ingest_keys.c.key,
            ingest_keys.c.fingerprint,
            ingest_keys.c.status_code,
            ingest_keys.c.response,
        ).where(ingest_keys.c.key.in_(wanted))
    )
    # An answered row was committed by another transaction; an unanswered one is this
    # transaction's own claim (another's uncommitted claim is never seen).
    return {
        key: Answered(fingerprint, status_code, response.encode())
        for key, fingerprint, status_code, response in rows
        if status_code is not None
    }


@dataclass(frozen=True, slots=True)
class SameAs:
    """A request whose key an earlier request of its group (at ``index``) claims: it gets
    that request's answer."""

    index: int


async def settle_keys(
    conn: AsyncConnection,
    *,
    keys: Sequence[tuple[str, str] | None],
    now: datetime,
    forget_before: datetime,
) -> list[Answered | SameAs | InvalidInput | None]:
    """Claim the keys of a group of requests, each given as (key, fingerprint) or ``None``
    (no key); for each request, in order: ``None`` to store it (its key, if any, is now
    claimed), the :class:`Answered` earlier request with its key, :class:`SameAs` the
    request of the group that claims its key, or :class:`InvalidInput` for a key used with
    another request (another fingerprint)."""
    out: list[Answered | SameAs | InvalidInput | None] = [None] * len(keys)
    firsts: dict[str, int] = {}
    for i, pair in enumerate(keys):
        if pair is not None:
            first = firsts.setdefault(pair[0], i)
            if first != i:
                out[i] = SameAs(first) if keys[first] == pair else _reused(pair[0])
    answered = await claim_keys(
        conn,
        keys={key: pair[1] for key, i in firsts.items() if (pair := keys[i]) is not None},
        now=now,
        forget_before=forget_before,
    )
    for i, pair in enumerate(keys):
        earlier = answered.get(pair[0]) if pair is not None else None
        if pair is not None and earlier is not None:
            out[i] = earlier if earlier.fingerprint == pair[1] else _reused(pair[0])
    return out


def _reused(key: str) -> InvalidInput:
    return InvalidInput(
        f"Idempotency-Key {key!r} was already used for another request (another body or "
        "route); a new request needs a new key"
    )


async def answer_keys(conn: AsyncConnection, *, answers: Mapping[str, tuple[int, bytes]]) -> None:
    """Write the answer (status code, JSON body) of each key this transaction claimed."""
    for key, (status_code, body) in answers.items():
        await conn.execute(
            update(ingest_keys)
            .where(ingest_keys.c.key == key)
            .values(status_code=status_code, response=body.decode())
        )


async def prune_keys_before(conn: AsyncConnection, *, cutoff: datetime, limit: int) -> int:
    """Forget up to ``limit`` keys stored before ``cutoff``; how many were forgotten."""
    oldest = (
        select(ingest_keys.c.key)
        .where(ingest_keys.c.created_at < cutoff)
        .order_by(ingest_keys.c.created_at)
        .limit(limit)
    )
    result = await conn.execute(
        delete(ingest_keys).where(ingest_keys.c.key.in_(oldest.scalar_subquery()))
    )
    return int(result.rowcount or 0)
