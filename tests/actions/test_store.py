"""The action store's status transitions (docs/design.md invariant 5), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from tests.helpers import wait_for_async
from vigil.actions.status import OPEN, Status
from vigil.actions.store import (
    Action,
    HistoryRow,
    create_action,
    create_actions,
    get_action,
    history,
    manual_key,
    transition,
)
from vigil.db.engine import Database, create_engine
from vigil.db.tables import OPEN_STATUSES, action_history, actions, audit
from vigil.errors import ActionAlreadyOpen, IllegalTransition, NotFound
from vigil.observability.audit import Actor, verify_chain
from vigil.settings import Settings

NOW = datetime(2026, 1, 19, 12, 0, tzinfo=UTC)

# The allowed graph as documented: open statuses move on, terminal ones never do -- except
# that a failed action can be re-driven from the dead letter.
ALLOWED = {
    Status.PENDING: {Status.RUNNING, Status.CANCELLED, Status.FAILED},
    Status.RUNNING: {Status.COMPLETED, Status.FAILED, Status.PENDING, Status.CANCELLED},
    Status.COMPLETED: set(),
    Status.FAILED: {Status.PENDING},
    Status.CANCELLED: set(),
    Status.AWAITING_APPROVAL: {Status.PENDING, Status.CANCELLED},
}
# How to reach each status from a new (pending) action (an action awaiting approval is
# created so).
ROUTE = {
    Status.PENDING: [],
    Status.RUNNING: [Status.RUNNING],
    Status.COMPLETED: [Status.RUNNING, Status.COMPLETED],
    Status.FAILED: [Status.RUNNING, Status.FAILED],
    Status.CANCELLED: [Status.CANCELLED],
    Status.AWAITING_APPROVAL: [],
}


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(create_engine(Settings(database_url=database_url, db_pool_size=4)))
    yield db
    await db.dispose()


async def new_action(
    database: Database, target: str = "web-01", status: Status = Status.PENDING
) -> int:
    async with database.write() as conn:
        record = await create_action(
            conn,
            now=NOW,
            actor=Actor("tester"),
            dedup_key=manual_key("restart"),
            policy_name=None,
            target=target,
            action="restart",
            params={},
            reason="test",
            status=status,
        )
    return record.id


async def move(
    database: Database,
    action_id: int,
    to: Status,
    *,
    actor: str = "worker-1",
    at: datetime = NOW,
    **fields: Any,
) -> Action:
    async with database.write() as conn:
        return await transition(
            conn,
            action_id=action_id,
            to=to,
            now=at,
            actor=Actor(actor),
            reason=f"to {to.value}",
            **fields,
        )


async def counts(database: Database, action_id: int) -> tuple[int, int]:
    """(history rows, audit rows) of an action."""
    async with database.read() as conn:
        rows = await conn.execute(
            select(action_history.c.id).where(action_history.c.action_id == action_id)
        )
        audits = await conn.execute(
            select(audit.c.id).where(audit.c.subject == f"action:{action_id}")
        )
        return len(rows.all()), len(audits.all())


async def status_of(database: Database, action_id: int) -> str:
    async with database.read() as conn:
        return str((await get_action(conn, action_id=action_id)).status)


async def test_transitions_follow_the_graph(database: Database, subtests: pytest.Subtests) -> None:
    for current in Status:
        for to in Status:
            with subtests.test(f"{current.value} -> {to.value}"):
                start = Status.AWAITING_APPROVAL if current is Status.AWAITING_APPROVAL else None
                action_id = await new_action(
                    database, target=f"{current.value}-{to.value}", status=start or Status.PENDING
                )
                for step in ROUTE[current]:
                    await move(database, action_id, step)
                assert await status_of(database, action_id) == current.value
                before = await counts(database, action_id)
                if to in ALLOWED[current]:
                    after = await move(database, action_id, to)
                    assert after.status == to.value
                    assert await status_of(database, action_id) == to.value
                    assert await counts(database, action_id) == (before[0] + 1, before[1] + 1)
                else:
                    with pytest.raises(IllegalTransition, match=f"is {current.value}"):
                        await move(database, action_id, to)
                    assert await status_of(database, action_id) == current.value
                    assert await counts(database, action_id) == before


async def test_terminal_actions_stay_terminal(database: Database) -> None:
    completed = await new_action(database, "a")
    await move(database, completed, Status.RUNNING)
    await move(database, completed, Status.COMPLETED)
    with pytest.raises(IllegalTransition):
        await move(database, completed, Status.RUNNING)
    cancelled = await new_action(database, "b")
    await move(database, cancelled, Status.CANCELLED)
    with pytest.raises(IllegalTransition):
        await move(database, cancelled, Status.PENDING)
    assert await status_of(database, completed) == "completed"
    assert await status_of(database, cancelled) == "cancelled"


async def test_a_transition_appends_one_history_row_and_one_audit_row(database: Database) -> None:
    action_id = await new_action(database)
    later = NOW + timedelta(seconds=7)
    after = await move(
        database,
        action_id,
        Status.RUNNING,
        actor="worker-3",
        at=later,
        attempts=1,
        started_at=later,
    )
    assert after.attempts == 1
    assert after.started_at == later
    assert after.updated_at == later
    assert after.completed_at is None
    async with database.read() as conn:
        rows = await history(conn, action_id=action_id)
        audits = (
            await conn.execute(
                select(audit).where(audit.c.subject == f"action:{action_id}").order_by(audit.c.id)
            )
        ).all()
    assert rows == [
        HistoryRow(
            from_status=None,
            to_status="pending",
            at=NOW,
            reason="test",
            attempt=0,
            actor="tester",
        ),
        HistoryRow(
            from_status="pending",
            to_status="running",
            at=later,
            reason="to running",
            attempt=1,
            actor="worker-3",
        ),
    ]
    assert [(a.kind, a.actor) for a in audits] == [
        ("action.created", "tester"),
        ("action.running", "worker-3"),
    ]
    assert audits[1].before == {"status": "pending"}
    assert audits[1].after == {"status": "running", "reason": "to running"}


async def test_ending_an_action_sets_completed_at(database: Database) -> None:
    action_id = await new_action(database)
    await move(database, action_id, Status.RUNNING)
    end = NOW + timedelta(minutes=1)
    after = await move(database, action_id, Status.COMPLETED, at=end, result={"ok": True})
    assert after.completed_at == end
    assert after.result == {"ok": True}


async def test_a_retry_goes_back_to_pending_without_ending(database: Database) -> None:
    action_id = await new_action(database)
    await move(database, action_id, Status.RUNNING, attempts=1)
    retry_at = NOW + timedelta(seconds=30)
    after = await move(
        database, action_id, Status.PENDING, error_message="boom", next_attempt_at=retry_at
    )
    assert after.status == "pending"
    assert after.completed_at is None
    assert after.next_attempt_at == retry_at
    assert after.attempts == 1


async def test_transition_of_an_unknown_action(database: Database) -> None:
    with pytest.raises(NotFound):
        await move(database, 999_999, Status.RUNNING)


async def test_concurrent_transitions_exactly_one_wins(database: Database) -> None:
    action_id = await new_action(database)
    go = asyncio.Event()

    async def attempt(worker: int) -> Action:
        await go.wait()
        return await move(database, action_id, Status.RUNNING, actor=f"worker-{worker}", attempts=1)

    tasks = [asyncio.create_task(attempt(n)) for n in range(4)]
    go.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    winners = [r for r in results if isinstance(r, Action)]
    losers = [r for r in results if isinstance(r, IllegalTransition)]
    assert len(winners) == 1, results
    assert len(losers) == 3, results
    async with database.read() as conn:
        rows = await history(conn, action_id=action_id)
    assert [(r.from_status, r.to_status) for r in rows] == [
        (None, "pending"),
        ("pending", "running"),
    ]
    assert rows[1].actor == f"worker-{results.index(winners[0])}"


async def _wait_for_a_lock_waiter(database: Database) -> None:
    """Wait (at most ten seconds) until a PostgreSQL session waits on a lock."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )

    async def waiters() -> int:
        async with database.read() as conn:
            count: int = (await conn.execute(query)).scalar_one()
            return count

    await wait_for_async(waiters, what="a session waiting for the lock", interval=0.01)


async def test_a_writer_that_starts_while_another_holds_the_action_loses(
    database: Database,
) -> None:
    action_id = await new_action(database)
    async with database.write() as first:
        await transition(
            first,
            action_id=action_id,
            to=Status.RUNNING,
            now=NOW,
            actor=Actor("worker-1"),
            reason="first",
        )
        second = asyncio.create_task(move(database, action_id, Status.RUNNING, actor="worker-2"))
        if database.dialect == "postgresql":
            # The second has read the action and waits for the first's row lock.
            await _wait_for_a_lock_waiter(database)
            assert not second.done()
        # On SQLite the second waits in BEGIN IMMEDIATE for the first's write lock; either
        # way it can only see the action once the first has committed it as running.
    with pytest.raises(IllegalTransition):
        await second
    async with database.read() as conn:
        rows = await history(conn, action_id=action_id)
    assert [(r.to_status, r.actor) for r in rows] == [
        ("pending", "tester"),
        ("running", "worker-1"),
    ]


async def test_one_open_action_per_key_and_target_and_the_transaction_survives(
    database: Database,
) -> None:
    await new_action(database, "web-01")
    async with database.write() as conn:
        with pytest.raises(ActionAlreadyOpen):
            await create_action(
                conn,
                now=NOW,
                actor=Actor("tester"),
                dedup_key=manual_key("restart"),
                policy_name=None,
                target="web-01",
                action="restart",
                params={},
                reason="again",
            )
        # The refused insert leaves the transaction usable.
        other = await create_action(
            conn,
            now=NOW,
            actor=Actor("tester"),
            dedup_key=manual_key("restart"),
            policy_name=None,
            target="web-02",
            action="restart",
            params={},
            reason="other target",
        )
    async with database.read() as conn:
        targets = sorted(r.target for r in await conn.execute(select(actions.c.target)))
    assert targets == ["web-01", "web-02"]
    assert other.status == "pending"


def _item(target: str) -> dict[str, Any]:
    return {
        "dedup_key": manual_key("restart"),
        "policy_name": None,
        "target": target,
        "action": "restart",
        "params": {"n": 1},
        "reason": f"test {target}",
    }


async def test_actions_created_together_are_each_recorded_as_one_alone_would_be(
    database: Database,
) -> None:
    async with database.write() as conn:
        records = await create_actions(
            conn, now=NOW, actor=Actor("tester"), items=[_item("a"), _item("b"), _item("c")]
        )
    assert [r.target for r in records] == ["a", "b", "c"]
    assert all(r.status == "pending" and r.next_attempt == 1 for r in records)
    async with database.read() as conn:
        for record in records:
            (entry,) = await history(conn, action_id=record.id)
            assert (entry.to_status, entry.reason) == ("pending", f"test {record.target}")
        subjects = (await conn.execute(select(audit.c.subject))).scalars().all()
    assert sorted(subjects) == sorted(f"action:{r.id}" for r in records)


async def test_a_clash_creates_none_of_the_group_and_leaves_the_transaction_usable(
    database: Database,
) -> None:
    await new_action(database, target="b")
    async with database.write() as conn:
        with pytest.raises(ActionAlreadyOpen):
            await create_actions(
                conn, now=NOW, actor=Actor("tester"), items=[_item("a"), _item("b")]
            )
        (alone,) = await create_actions(conn, now=NOW, actor=Actor("tester"), items=[_item("a")])
    async with database.read() as conn:
        targets = (await conn.execute(select(actions.c.target))).scalars().all()
    assert sorted(targets) == ["a", "b"]
    assert alone.target == "a"


async def test_the_database_refuses_a_second_action_while_one_awaits_approval(
    database: Database,
) -> None:
    """Invariant 2 for the newest open status: the unique index itself (not a check in the
    recorder) refuses another action for the same key and target."""

    async def create(status: Status) -> Action:
        return await create_action(
            conn,
            now=NOW,
            actor=Actor("tester"),
            dedup_key="policy:cpu-hot",
            policy_name="cpu-hot",
            target="web-01",
            action="scale-up",
            params={},
            reason="violated",
            status=status,
            approval_expires_at=NOW + timedelta(hours=1),
        )

    async with database.write() as conn:
        await create(Status.AWAITING_APPROVAL)
        with pytest.raises(ActionAlreadyOpen):
            await create(Status.PENDING)
        with pytest.raises(ActionAlreadyOpen):
            await create(Status.AWAITING_APPROVAL)


def test_the_unique_index_covers_every_open_status() -> None:
    assert set(OPEN_STATUSES) == {s.value for s in OPEN}


async def test_audited_transactions_that_lock_rows_in_turn_do_not_deadlock(
    database: Database,
) -> None:
    """A locks action a, B locks action b and commits, then A moves b too. Both append to
    the audit trail; its chain lock is taken last, at commit, so A never holds it while it
    waits for b (which would deadlock with B waiting for the chain)."""
    if database.engine.dialect.name == "sqlite":
        pytest.skip("SQLite runs one write transaction at a time: the two cannot interleave")
    a, b = await new_action(database, "web-a"), await new_action(database, "web-b")
    a_moved, b_moved = asyncio.Event(), asyncio.Event()

    async def move(conn: Any, action_id: int, to: Status) -> None:
        await transition(conn, action_id=action_id, to=to, now=NOW, actor=Actor("t"), reason="")

    async def first() -> None:
        async with database.write() as conn:
            await move(conn, a, Status.RUNNING)
            a_moved.set()
            await b_moved.wait()
            await move(conn, b, Status.COMPLETED)  # waits for B's lock on b, then goes on

    async def second() -> None:
        await a_moved.wait()
        async with database.write() as conn:
            await move(conn, b, Status.RUNNING)
            b_moved.set()
            await _wait_for_a_lock_waiter(database)  # A waits for b: commit under it

    await asyncio.wait_for(asyncio.gather(first(), second()), timeout=20)
    async with database.read() as conn:
        assert (await get_action(conn, action_id=b)).status == "completed"
        assert (await verify_chain(conn))[1] is None
