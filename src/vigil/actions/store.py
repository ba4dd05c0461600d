"""Actions in the database. Every status change goes through :func:`transition`.

Data-access functions are keyword-only with the connection first; they run inside the
caller's transaction so a decision, its action, the first history row and the audit row
commit together (docs/design.md invariants 1 and 5).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.actions.status import OPEN, TERMINAL, Status, can_transition
from vigil.db.paging import newest_first
from vigil.db.records import fields_of, record_of
from vigil.db.tables import action_history, actions
from vigil.errors import ActionAlreadyOpen, IllegalTransition, NotFound, StaleAttempt
from vigil.observability.audit import Actor, append_audit, append_audits

_OPEN_VALUES = tuple(s.value for s in OPEN)
_TERMINAL_VALUES = tuple(s.value for s in TERMINAL)


@dataclass(frozen=True, slots=True)
class Action:
    """A stored action: one row of ``actions`` (see :mod:`vigil.db.tables` for each column).

    ``status`` is kept as stored text (compare it with :class:`Status` members, which are
    strings), so a row written by a newer Vigil can still be read and listed.
    """

    id: int
    policy_name: str | None
    dedup_key: str
    target: str
    action: str
    params: dict[str, Any]
    severity: str | None
    status: str
    attempts: int
    details: str | None
    result: dict[str, Any] | None
    error_message: str | None
    trigger_value: float | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    next_attempt_at: datetime | None
    verification: dict[str, Any] | None
    next_attempt: int
    attempt_floor: int
    dispatched_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    episode: int | None
    escalation_step: int
    approval_expires_at: datetime | None
    request_id: str | None
    tags: dict[str, str] | None


def about(record: Action) -> dict[str, Any]:
    """What a notification about ``record`` says it is about: its policy, target, id,
    severity, tags and episode."""
    return {
        "policy_name": record.policy_name,
        "target": record.target,
        "action_id": record.id,
        "severity": record.severity,
        "tags": record.tags,
        "episode": record.episode,
    }


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One status transition of an action (``from_status`` is ``None`` for its creation)."""

    from_status: str | None
    to_status: str
    at: datetime
    reason: str | None
    attempt: int
    actor: str


def _action(row: Row[Any]) -> Action:
    """The :class:`Action` of an ``actions`` row."""
    return record_of(Action, row)


def _history_row(row: Row[Any]) -> HistoryRow:
    """The :class:`HistoryRow` of an ``action_history`` row."""
    return record_of(HistoryRow, row)


ACTION_VIEW = (
    "id",
    "policy_name",
    "target",
    "action",
    "params",
    "status",
    "attempts",
    "severity",
    "details",
    "result",
    "error_message",
    "created_at",
    "started_at",
    "completed_at",
    "updated_at",
    "next_attempt_at",
    "verification",
    "tags",
)
"""The fields of an action that the API shows and an ``action.created`` audit row keeps."""


def policy_key(policy_name: str) -> str:
    """The dedup key of actions created by a policy."""
    return f"policy:{policy_name}"


def manual_key(action: str) -> str:
    """The dedup key of manual actions (one open per action and target)."""
    return f"manual:{action}"


async def create_action(
    conn: AsyncConnection,
    *,
    now: datetime,
    actor: Actor,
    dedup_key: str,
    policy_name: str | None,
    target: str,
    action: str,
    params: dict[str, Any],
    severity: str | None = None,
    details: str | None = None,
    trigger_value: float | None = None,
    reason: str,
    status: Status = Status.PENDING,
    episode: int | None = None,
    approval_expires_at: datetime | None = None,
    escalation_step: int = 0,
    tags: Mapping[str, str] | None = None,
) -> Action:
    """Record a new action (``pending``, or ``awaiting_approval``) with its first history
    row and an audit row.

    Raises :class:`ActionAlreadyOpen` when the database already holds an open action with the
    same dedup key and target; the caller's transaction stays usable.
    """
    item = {
        "policy_name": policy_name,
        "dedup_key": dedup_key,
        "target": target,
        "action": action,
        "params": params,
        "severity": severity,
        "details": details,
        "trigger_value": trigger_value,
        "reason": reason,
        "status": status,
        "episode": episode,
        "approval_expires_at": approval_expires_at,
        "escalation_step": escalation_step,
        "tags": tags,
    }
    try:
        [record] = await create_actions(conn, now=now, actor=actor, items=[item])
    except ActionAlreadyOpen as exc:
        raise ActionAlreadyOpen(
            f"an action for {dedup_key.split(':', 1)[1]!r} on {target!r} is already open"
        ) from exc
    return record


async def create_actions(
    conn: AsyncConnection,
    *,
    now: datetime,
    actor: Actor,
    items: Sequence[Mapping[str, Any]],
) -> list[Action]:
    """Record several new actions at once (``pending``, or ``awaiting_approval``), each with
    its row, first history row and audit row, in a few statements instead of a few each.

    ``items`` hold :func:`create_action`'s keyword arguments but ``now`` and ``actor``. All or
    none: :class:`ActionAlreadyOpen` if any clashes with an open action (the caller's
    transaction stays usable, and may record them one by one to learn which).
    """
    if not items:
        return []
    values = [
        {
            "policy_name": item["policy_name"],
            "dedup_key": item["dedup_key"],
            "target": item["target"],
            "action": item["action"],
            "params": item["params"],
            "severity": item.get("severity"),
            "status": item.get("status", Status.PENDING).value,
            "attempts": 0,
            "details": item.get("details"),
            "trigger_value": item.get("trigger_value"),
            "created_at": now,
            "updated_at": now,
            "dispatched_at": now if item.get("status", Status.PENDING) is Status.PENDING else None,
            "next_attempt": 1,
            "episode": item.get("episode"),
            "approval_expires_at": item.get("approval_expires_at"),
            "escalation_step": item.get("escalation_step", 0),
            "request_id": actor.request_id,
            "tags": dict(item.get("tags") or {}),
        }
        for item in items
    ]
    try:
        async with conn.begin_nested():
            rows = (
                await conn.execute(
                    actions.insert().returning(actions, sort_by_parameter_order=True), values
                )
            ).all()
    except IntegrityError as exc:
        raise ActionAlreadyOpen("an action of the group is already open") from exc
    records = [_action(row) for row in rows]
    await conn.execute(
        action_history.insert(),
        [
            {
                "action_id": record.id,
                "from_status": None,
                "to_status": record.status,
                "at": now,
                "reason": item["reason"],
                "attempt": 0,
                "actor": actor.name,
            }
            for record, item in zip(records, items, strict=True)
        ],
    )
    await append_audits(
        conn,
        at=now,
        actor=actor,
        entries=[
            ("action.created", f"action:{record.id}", None, fields_of(record, ACTION_VIEW))
            for record in records
        ],
    )
    return records


async def transition(
    conn: AsyncConnection,
    *,
    action_id: int,
    to: Status,
    now: datetime,
    actor: Actor,
    reason: str,
    expect: Mapping[str, Any] | None = None,
    **fields: Any,
) -> Action:
    """Move an action to ``to`` if the graph allows it, recording history and audit.

    The update is a compare-and-set on the status read (and on the ``expect`` column values,
    e.g. the worker's lease and attempt), so two writers cannot both move the same action out
    of the same state. Raises :class:`NotFound`, :class:`IllegalTransition` or, when
    ``expect`` does not hold, :class:`StaleAttempt`.
    """
    query = select(actions).where(actions.c.id == action_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).one_or_none()
    if row is None:
        raise NotFound(f"action {action_id} not found")
    before = dict(row._mapping)
    current = Status(before["status"])
    if not can_transition(current, to):
        raise IllegalTransition(
            f"action {action_id} is {current.value}; it cannot become {to.value}"
        )
    expect = expect or {}
    for column, value in expect.items():
        if before[column] != value:
            raise StaleAttempt(f"action {action_id} has {column}={before[column]!r}, not {value!r}")
    changes: dict[str, Any] = {"status": to.value, "updated_at": now, **fields}
    if to in TERMINAL and "completed_at" not in fields:
        changes["completed_at"] = now
    updated = (
        await conn.execute(
            actions.update()
            .where(
                actions.c.id == action_id,
                actions.c.status == current.value,
                *(
                    actions.c[column].is_(None) if value is None else actions.c[column] == value
                    for column, value in expect.items()
                ),
            )
            .values(**changes)
            .returning(actions)
        )
    ).one_or_none()
    if updated is None:
        raise IllegalTransition(f"action {action_id} changed status concurrently; try again")
    after = _action(updated)
    await conn.execute(
        action_history.insert().values(
            action_id=action_id,
            from_status=current.value,
            to_status=to.value,
            at=now,
            reason=reason,
            attempt=after.attempts,
            actor=actor.name,
        )
    )
    await append_audit(
        conn,
        at=now,
        actor=actor,
        kind=f"action.{to.value}",
        subject=f"action:{action_id}",
        before={"status": current.value},
        after={"status": to.value, "reason": reason},
    )
    return after


async def get_action(conn: AsyncConnection, *, action_id: int) -> Action:
    """One action; :class:`NotFound` if there is none with that id."""
    row = (await conn.execute(select(actions).where(actions.c.id == action_id))).one_or_none()
    if row is None:
        raise NotFound(f"action {action_id} not found")
    return _action(row)


async def list_actions(
    conn: AsyncConnection,
    *,
    page: int,
    limit: int,
    status: str | None = None,
    target: str | None = None,
    policy: str | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
) -> tuple[list[Action], int]:
    """A page of actions, newest first, and how many match in all."""
    conditions = []
    if status is not None:
        conditions.append(actions.c.status == status)
    if target is not None:
        conditions.append(actions.c.target == target)
    if policy is not None:
        conditions.append(actions.c.policy_name == policy)
    if start_time is not None:
        conditions.append(actions.c.created_at >= start_time)
    if end_time is not None:
        conditions.append(actions.c.created_at <= end_time)
    rows, total = await newest_first(conn, actions, conditions=conditions, page=page, limit=limit)
    return [_action(r) for r in rows], total


async def history(conn: AsyncConnection, *, action_id: int) -> list[HistoryRow]:
    """Every status transition of an action, oldest first."""
    await get_action(conn, action_id=action_id)
    rows = await conn.execute(
        select(action_history)
        .where(action_history.c.action_id == action_id)
        .order_by(action_history.c.id)
    )
    return [_history_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class PairActions:
    """The actions of one (dedup key, target) pair, as the guards see them."""

    open_action_id: int | None = None
    last_ended_at: datetime | None = None


async def pair_states(
    conn: AsyncConnection, *, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], PairActions]:
    """Open action and last end time for each (dedup key, target) pair."""
    wanted = list(dict.fromkeys(pairs))
    if not wanted:
        return {}
    key = tuple_(actions.c.dedup_key, actions.c.target)
    open_rows = await conn.execute(
        select(actions.c.dedup_key, actions.c.target, actions.c.id).where(
            key.in_(wanted), actions.c.status.in_(_OPEN_VALUES)
        )
    )
    opened = {(r.dedup_key, r.target): int(r.id) for r in open_rows}
    ended_rows = await conn.execute(
        select(actions.c.dedup_key, actions.c.target, func.max(actions.c.completed_at))
        .where(key.in_(wanted), actions.c.status.in_(_TERMINAL_VALUES))
        .group_by(actions.c.dedup_key, actions.c.target)
    )
    ended = {(dedup_key, target): last for dedup_key, target, last in ended_rows}
    return {
        pair: PairActions(open_action_id=opened.get(pair), last_ended_at=ended.get(pair))
        for pair in wanted
    }
