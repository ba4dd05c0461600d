"""The remediator's records of the attempts it ran: docs/design.md invariant 3's deduplication.

One row per idempotency key (action_id, attempt). A request first *claims* its key by
inserting a ``running`` row; the primary key lets exactly one of any number of concurrent
claims (on any process, on SQLite or PostgreSQL) succeed. The claimant runs the change and
*finishes* the row with its result. Everyone else reads the row: ``running`` means "ask
again later", anything else is the recorded result, returned as it was recorded.

A row still ``running`` after its ``expires_at`` was left by a remediator that died (or
lost its database) mid-run. It is finished as an interrupted, retryable failure the first
time anyone looks at it, so a repeat of that key gets that failure and the worker's next
attempt (a new key) runs normally. Nobody can know whether the change happened.

Data-access functions are keyword-only with the connection first and run inside the
caller's (write) transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.tables import remediation_runs
from vigil.remediation.wire import RemediateRequest, RemediateResult

RUNNING: Final = "running"
"""Claimed; its owner is running the change."""
SUCCESS: Final = "success"
FAILED: Final = "failed"

INTERRUPTED_MESSAGE: Final = (
    "interrupted: the remediator stopped while running this attempt; "
    "the change may or may not have happened"
)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One row of ``remediation_runs``; ``result`` is ``None`` while ``running``."""

    action_id: int
    attempt: int
    action: str
    target: str
    status: str
    result: RemediateResult | None
    owner: str
    started_at: datetime
    finished_at: datetime | None
    expires_at: datetime

    @property
    def running(self) -> bool:
        return self.status == RUNNING


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of :func:`claim_run`: ``claimed`` means the caller must run and finish it;
    otherwise ``record`` is somebody else's (running, or finished with its result)."""

    claimed: bool
    record: RunRecord


async def claim_run(
    conn: AsyncConnection,
    *,
    request: RemediateRequest,
    owner: str,
    now: datetime,
    expires_at: datetime,
) -> Claim:
    """Claim ``request``'s key for ``owner``, or return the record already holding it.

    A record found ``running`` past its ``expires_at`` is finished as interrupted first
    (see :func:`interrupt_if_expired`). The caller's transaction stays usable either way.
    """
    values = {
        "action_id": request.action_id,
        "attempt": request.attempt,
        "action": request.action,
        "target": request.target,
        "status": RUNNING,
        "result": None,
        "owner": owner,
        "started_at": now,
        "finished_at": None,
        "expires_at": expires_at,
    }
    try:
        async with conn.begin_nested():
            row = (
                await conn.execute(
                    remediation_runs.insert().values(**values).returning(remediation_runs)
                )
            ).one()
    except IntegrityError:
        existing = await get_run(conn, action_id=request.action_id, attempt=request.attempt)
        if existing is None:  # pragma: no cover - a conflict on a row nobody deletes
            raise
        return Claim(
            claimed=False, record=await interrupt_if_expired(conn, record=existing, now=now)
        )
    return Claim(claimed=True, record=_record(row._mapping))


async def get_run(conn: AsyncConnection, *, action_id: int, attempt: int) -> RunRecord | None:
    """The record of one key, or ``None`` if it was never claimed."""
    query = select(remediation_runs).where(
        remediation_runs.c.action_id == action_id, remediation_runs.c.attempt == attempt
    )
    row = (await conn.execute(query)).one_or_none()
    return None if row is None else _record(row._mapping)


async def finish_run(
    conn: AsyncConnection,
    *,
    action_id: int,
    attempt: int,
    owner: str,
    result: RemediateResult,
    now: datetime,
) -> tuple[bool, RunRecord]:
    """Record ``result`` for a run ``owner`` claimed; ``(True, record)`` if it was recorded.

    A compare-and-set on (``running``, ``owner``): if the run was meanwhile finished as
    interrupted (it outlived its ``expires_at``), the late result is not recorded and
    ``(False, record)`` returns what was, so every answer for one key stays the same.
    """
    updated = (
        await conn.execute(
            remediation_runs.update()
            .where(
                remediation_runs.c.action_id == action_id,
                remediation_runs.c.attempt == attempt,
                remediation_runs.c.status == RUNNING,
                remediation_runs.c.owner == owner,
            )
            .values(status=result.status, result=_stored(result), finished_at=now)
            .returning(remediation_runs)
        )
    ).one_or_none()
    if updated is not None:
        return True, _record(updated._mapping)
    current = await get_run(conn, action_id=action_id, attempt=attempt)
    if current is None:
        raise LookupError(f"remediation run ({action_id}, {attempt}) was never claimed")
    return False, current


def interrupted_result() -> RemediateResult:
    """The result recorded for a run whose remediator stopped while running it."""
    return RemediateResult(
        status="failed",
        message=INTERRUPTED_MESSAGE,
        details={"interrupted": True},
        duration_ms=0.0,
        retryable=True,
    )


async def interrupt_if_expired(
    conn: AsyncConnection, *, record: RunRecord, now: datetime
) -> RunRecord:
    """``record`` as it stands once the expiry rule is applied: a ``running`` record whose
    ``expires_at`` has passed is finished as an interrupted, retryable failure."""
    if not record.running or record.expires_at > now:
        return record
    await conn.execute(
        remediation_runs.update()
        .where(
            remediation_runs.c.action_id == record.action_id,
            remediation_runs.c.attempt == record.attempt,
            remediation_runs.c.status == RUNNING,
            remediation_runs.c.expires_at <= now,
        )
        .values(status=FAILED, result=_stored(interrupted_result()), finished_at=now)
    )
    # Whoever won (this update, a concurrent one, or the owner finishing just in time).
    current = await get_run(conn, action_id=record.action_id, attempt=record.attempt)
    assert current is not None
    return current


def _stored(result: RemediateResult) -> dict[str, Any]:
    return result.model_dump(mode="json")


def _record(row: Any) -> RunRecord:
    result = row["result"]
    return RunRecord(
        action_id=row["action_id"],
        attempt=row["attempt"],
        action=row["action"],
        target=row["target"],
        status=row["status"],
        result=None if result is None else RemediateResult.model_validate(result),
        owner=row["owner"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        expires_at=row["expires_at"],
    )
