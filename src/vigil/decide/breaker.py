"""Each policy's circuit breaker and blast radius in the database: the guard row (locked
while counting, so two processes cannot both take the last slot), the counts the decision
core judges, the breaker's reset, and the ``breaker_opened`` notification.

Data-access functions run inside the caller's transaction, keyword-only, connection first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.actions.status import OPEN
from vigil.actions.store import policy_key
from vigil.db.tables import actions, policy_guards
from vigil.db.upsert import insert_into
from vigil.decide.core import HOUR, Limits
from vigil.notify.events import NotificationEvent
from vigil.notify.store import record_notification
from vigil.policy.models import PolicySpec


@dataclass(frozen=True, slots=True)
class Guard:
    """A policy's guard row."""

    policy_name: str
    reset_at: datetime | None
    opened_at: datetime | None


def is_limited(policy: PolicySpec) -> bool:
    return policy.max_actions_per_hour is not None or policy.max_concurrent_targets is not None


async def lock_guards(conn: AsyncConnection, *, names: Sequence[str]) -> dict[str, Guard]:
    """Each policy's guard row, created if missing and locked until the transaction ends
    (on SQLite the write transaction already excludes every other writer). Locked in name
    order, so two transactions cannot wait on each other here."""
    names = sorted(set(names))
    await conn.execute(
        insert_into(conn, policy_guards).on_conflict_do_nothing(
            index_elements=[policy_guards.c.policy_name]
        ),
        [{"policy_name": name} for name in names],
    )
    query = (
        select(policy_guards)
        .where(policy_guards.c.policy_name.in_(names))
        .order_by(policy_guards.c.policy_name)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    rows = await conn.execute(query)
    return {r.policy_name: Guard(r.policy_name, r.reset_at, r.opened_at) for r in rows}


async def locked_limits(
    conn: AsyncConnection, *, policies: Sequence[PolicySpec], now: datetime
) -> dict[str, tuple[Guard, Limits]]:
    """For each limited policy: its guard row, locked, and the counts its limits judge."""
    limited = {p.name: p for p in policies if is_limited(p)}
    if not limited:
        return {}
    guards = await lock_guards(conn, names=list(limited))
    found: dict[str, tuple[Guard, Limits]] = {}
    for name, policy in sorted(limited.items()):
        guard = guards[name]
        found[name] = (guard, await _limits(conn, policy=policy, now=now, reset_at=guard.reset_at))
    return found


async def _limits(
    conn: AsyncConnection, *, policy: PolicySpec, now: datetime, reset_at: datetime | None
) -> Limits:
    return Limits(
        max_actions_per_hour=policy.max_actions_per_hour,
        actions_last_hour=await actions_in_hour(
            conn, policy_name=policy.name, now=now, reset_at=reset_at
        ),
        max_concurrent_targets=policy.max_concurrent_targets,
        open_targets=await open_target_count(conn, policy_name=policy.name),
    )


async def actions_in_hour(
    conn: AsyncConnection, *, policy_name: str, now: datetime, reset_at: datetime | None
) -> int:
    """Actions the policy created in the last hour (since its breaker's reset, if later)."""
    since = now - HOUR
    if reset_at is not None and reset_at > since:
        since = reset_at
    return int(
        (
            await conn.execute(
                select(func.count())
                .select_from(actions)
                .where(actions.c.policy_name == policy_name, actions.c.created_at > since)
            )
        ).scalar_one()
    )


async def open_target_count(conn: AsyncConnection, *, policy_name: str) -> int:
    """How many targets have an open action of the policy."""
    return int(
        (
            await conn.execute(
                select(func.count(func.distinct(actions.c.target))).where(
                    actions.c.dedup_key == policy_key(policy_name),
                    actions.c.status.in_(tuple(s.value for s in OPEN)),
                )
            )
        ).scalar_one()
    )


async def breaker_opened(
    conn: AsyncConnection,
    *,
    guard: Guard,
    policy: PolicySpec,
    target: str,
    limits: Limits,
    now: datetime,
    tags: Mapping[str, str] | None = None,
    episode: int | None = None,
) -> Guard:
    """The breaker stopped an action: the first time in its hour, it opened -- record
    when, and a ``breaker_opened`` notification (about the target and episode whose action
    it stopped). The guard row as it is now."""
    if guard.opened_at is not None and guard.opened_at >= now - HOUR:
        return guard
    await conn.execute(
        policy_guards.update()
        .where(policy_guards.c.policy_name == policy.name)
        .values(opened_at=now)
    )
    recent = limits.actions_last_hour
    await record_notification(
        conn,
        now=now,
        event=NotificationEvent.BREAKER_OPENED,
        policy_name=policy.name,
        target=target,
        reason=f"policy {policy.name} created {recent} actions within the hour"
        f" (max_actions_per_hour {policy.max_actions_per_hour}); it acts again once they"
        f" age out, or after POST /api/v1/policies/{policy.name}/reset",
        details={"actions_last_hour": recent, "max_actions_per_hour": policy.max_actions_per_hour},
        severity=policy.severity,
        tags=None if tags is None else dict(tags),
        episode=episode,
    )
    return Guard(guard.policy_name, guard.reset_at, now)


async def breaker_state(
    conn: AsyncConnection, *, policy: PolicySpec, now: datetime
) -> dict[str, Any]:
    """The policy's circuit breaker: open while it has created ``max_actions_per_hour``
    actions within the hour (counted since its last reset)."""
    row = (
        await conn.execute(select(policy_guards).where(policy_guards.c.policy_name == policy.name))
    ).one_or_none()
    reset_at = row.reset_at if row is not None else None
    limits = await _limits(conn, policy=policy, now=now, reset_at=reset_at)
    limit = policy.max_actions_per_hour
    return {
        "open": limit is not None and limits.actions_last_hour >= limit,
        "actions_last_hour": limits.actions_last_hour,
        "max_actions_per_hour": limit,
        "opened_at": row.opened_at if row is not None else None,
        "reset_at": reset_at,
        "open_targets": limits.open_targets,
        "max_concurrent_targets": policy.max_concurrent_targets,
    }


async def reset_breaker(conn: AsyncConnection, *, policy_name: str, now: datetime) -> None:
    """Close the policy's breaker: only actions created after now count against it."""
    await lock_guards(conn, names=[policy_name])
    await conn.execute(
        policy_guards.update()
        .where(policy_guards.c.policy_name == policy_name)
        .values(reset_at=now, opened_at=None)
    )
