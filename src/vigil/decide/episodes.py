"""The state of each (policy, target) and the decisions made about it, in the database.

Data-access functions run inside the caller's transaction, keyword-only, connection first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.paging import newest_first
from vigil.db.records import record_of
from vigil.db.tables import decisions, policy_guards, policy_revision, policy_states
from vigil.db.upsert import insert_into
from vigil.decide.core import PairState
from vigil.decide.reasons import Suppressed
from vigil.decide.state import PairPhase, Phase

Pair = tuple[str, str]
"""(policy name, target)."""


@dataclass(slots=True)
class Episode:
    """One (policy, target)'s stored state: its phase and what its episode has done."""

    policy_name: str
    target: str
    phase: PairPhase = field(default_factory=PairPhase)
    tags: dict[str, str] | None = None
    action_id: int | None = None
    """The episode's latest action (its own, or an escalation)."""
    acted: bool = False
    """Whether the episode's own action was created."""
    decision_id: int | None = None
    reason: str | None = None
    """The reason of the episode's last suppression (None once it acted)."""
    escalated_at: datetime | None = None

    @property
    def pair(self) -> Pair:
        return (self.policy_name, self.target)

    @property
    def state(self) -> PairState:
        """What the decision core knows of the pair."""
        reason = None if self.reason is None else Suppressed(self.reason)
        return PairState(phase=self.phase, acted=self.acted, reason=reason)

    def take(self, state: PairState) -> None:
        """Adopt the decision core's next state; a new episode forgets the last one's."""
        if state.phase.episode != self.phase.episode:
            self.action_id = self.decision_id = self.escalated_at = None
        self.phase = state.phase
        self.acted = state.acted
        self.reason = None if state.reason is None else state.reason.value


def _episode(row: Any) -> Episode:
    return Episode(
        policy_name=row.policy_name,
        target=row.target,
        phase=PairPhase(
            phase=Phase(row.phase),
            episode=row.episode,
            since=row.since,
            pending_since=row.pending_since,
            fired_at=row.fired_at,
            resolved_at=row.resolved_at,
        ),
        tags=row.tags,
        action_id=row.action_id,
        acted=bool(row.acted),
        decision_id=row.decision_id,
        reason=row.reason,
        escalated_at=row.escalated_at,
    )


async def load(conn: AsyncConnection, *, pairs: Iterable[Pair]) -> dict[Pair, Episode]:
    """The stored state of each pair that has one."""
    wanted = list(dict.fromkeys(pairs))
    if not wanted:
        return {}
    found: dict[Pair, Episode] = {}
    # In chunks: a group of ingest requests can name thousands of pairs.
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = await conn.execute(
            select(policy_states).where(
                tuple_(policy_states.c.policy_name, policy_states.c.target).in_(chunk)
            )
        )
        for row in rows:
            episode = _episode(row)
            found[episode.pair] = episode
    return found


async def unsettled(conn: AsyncConnection) -> list[Episode]:
    """Every pair that is pending or firing."""
    rows = await conn.execute(
        select(policy_states).where(
            policy_states.c.phase.in_((Phase.PENDING.value, Phase.FIRING.value))
        )
    )
    return [_episode(row) for row in rows]


async def of_policy(conn: AsyncConnection, *, policy_name: str) -> list[Episode]:
    """Every pair of one policy, by target."""
    rows = await conn.execute(
        select(policy_states)
        .where(policy_states.c.policy_name == policy_name)
        .order_by(policy_states.c.target)
    )
    return [_episode(row) for row in rows]


async def save(conn: AsyncConnection, *, episodes: Sequence[Episode], now: datetime) -> None:
    """Store these pairs' states (insert or replace)."""
    if episodes:
        statement = insert_into(conn, policy_states)
        columns = [c.name for c in policy_states.c if c.name not in ("policy_name", "target")]
        statement = statement.on_conflict_do_update(
            index_elements=[policy_states.c.policy_name, policy_states.c.target],
            set_={name: statement.excluded[name] for name in columns},
        )
        await conn.execute(statement, [_row(e, now) for e in episodes])


async def bump_firing(conn: AsyncConnection) -> None:
    """Some pair started or stopped firing: every process's ingest re-reads the firing
    pairs. Call it last in the transaction (it locks the one revision row)."""
    await conn.execute(
        policy_revision.update()
        .where(policy_revision.c.id == 1)
        .values(firing_revision=policy_revision.c.firing_revision + 1)
    )


def snapshot(e: Episode) -> dict[str, Any]:
    """What :func:`save` would store of the pair, but the time: equal snapshots need no
    write."""
    return _row(e, None)


def _row(e: Episode, now: datetime | None) -> dict[str, Any]:
    p = e.phase
    return {
        "policy_name": e.policy_name,
        "target": e.target,
        "phase": p.phase.value,
        "episode": p.episode,
        "since": p.since,
        "pending_since": p.pending_since,
        "fired_at": p.fired_at,
        "resolved_at": p.resolved_at,
        "tags": e.tags,
        "action_id": e.action_id,
        "acted": e.acted,
        "decision_id": e.decision_id,
        "reason": e.reason,
        "escalated_at": e.escalated_at,
        "updated_at": now,
    }


async def forget_policy(conn: AsyncConnection, *, policy_name: str) -> None:
    """Drop a deleted policy's states and guard row (its decisions stay, as history)."""
    await conn.execute(delete(policy_states).where(policy_states.c.policy_name == policy_name))
    await conn.execute(delete(policy_guards).where(policy_guards.c.policy_name == policy_name))


# Decisions ------------------------------------------------------------------------------


@dataclass(slots=True)
class NewDecision:
    policy_name: str
    target: str
    severity: str
    episode: int
    value: float | None
    outcome: str
    reason: str | None
    action_id: int | None
    count: int = 1


async def add_decisions(
    conn: AsyncConnection, *, items: Sequence[NewDecision], now: datetime
) -> list[int]:
    """Record new decision rows; their ids, in order."""
    if not items:
        return []
    rows = await conn.execute(
        decisions.insert().returning(decisions.c.id, sort_by_parameter_order=True),
        [
            {
                "at": now,
                "last_at": now,
                "policy_name": d.policy_name,
                "target": d.target,
                "severity": d.severity,
                "episode": d.episode,
                "value": d.value,
                "outcome": d.outcome,
                "reason": d.reason,
                "action_id": d.action_id,
                "count": d.count,
            }
            for d in items
        ],
    )
    return [int(row.id) for row in rows]


async def count_again(conn: AsyncConnection, *, ids: Sequence[int], now: datetime) -> None:
    """The same suppression happened again: one more on each of these rows."""
    if not ids:
        return
    await conn.execute(
        decisions.update()
        .where(decisions.c.id == bindparam("decision_id"))
        .values(count=decisions.c.count + 1, last_at=now),
        [{"decision_id": i} for i in ids],
    )


@dataclass(frozen=True, slots=True)
class StoredDecision:
    """A row of the decisions log: what became of a violation that started an episode or
    tried to act (``count`` times within its episode, the last at ``last_at``)."""

    id: int
    at: datetime
    last_at: datetime
    policy_name: str
    target: str
    severity: str
    episode: int
    value: float | None
    outcome: str
    reason: str | None
    action_id: int | None
    count: int


def _decision(row: Any) -> StoredDecision:
    """The :class:`StoredDecision` of a ``decisions`` row."""
    return record_of(StoredDecision, row)


async def list_decisions(
    conn: AsyncConnection,
    *,
    page: int,
    limit: int,
    policy: str | None = None,
    target: str | None = None,
    outcome: str | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
) -> tuple[list[StoredDecision], int]:
    """A page of decisions, newest first, and how many match in all. The time range
    selects decisions made (or repeated) within it."""
    conditions = []
    if policy is not None:
        conditions.append(decisions.c.policy_name == policy)
    if target is not None:
        conditions.append(decisions.c.target == target)
    if outcome is not None:
        conditions.append(decisions.c.outcome == outcome)
    if start_time is not None:
        conditions.append(decisions.c.last_at >= start_time)
    if end_time is not None:
        conditions.append(decisions.c.at <= end_time)
    rows, total = await newest_first(conn, decisions, conditions=conditions, page=page, limit=limit)
    return [_decision(r) for r in rows], total


async def prune_decisions(conn: AsyncConnection, *, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` decisions last seen before ``before``; how many went."""
    doomed = select(decisions.c.id).where(decisions.c.last_at < before).limit(limit)
    result = await conn.execute(delete(decisions).where(decisions.c.id.in_(doomed)))
    return int(result.rowcount or 0)
