"""The remediator's run records (docs/design.md invariant 3), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from vigil.db.engine import Database, create_engine
from vigil.remediation.runs import (
    FAILED,
    INTERRUPTED_MESSAGE,
    RUNNING,
    SUCCESS,
    Claim,
    RunRecord,
    claim_run,
    finish_run,
    get_run,
)
from vigil.remediation.wire import RemediateRequest, RemediateResult
from vigil.settings import Settings

NOW = datetime(2026, 1, 19, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=60)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(create_engine(Settings(database_url=database_url, db_pool_size=4)))
    yield db
    await db.dispose()


def request(action_id: int = 7, attempt: int = 1) -> RemediateRequest:
    return RemediateRequest(
        action_id=action_id, attempt=attempt, action="restart", target="web-01", params={}
    )


RESULT = RemediateResult(
    status="success",
    message="restarted web-01",
    details={"exit_code": 0, "stdout": "ok\n", "nested": {"ratio": 0.1 + 0.2, "list": [1, "x"]}},
    duration_ms=12.345678901,
    retryable=True,
)


async def claim(
    database: Database,
    req: RemediateRequest,
    *,
    owner: str = "a",
    now: datetime = NOW,
    expires_at: datetime = LATER,
) -> Claim:
    async with database.write() as conn:
        return await claim_run(conn, request=req, owner=owner, now=now, expires_at=expires_at)


async def finish(
    database: Database,
    req: RemediateRequest,
    *,
    owner: str = "a",
    result: RemediateResult = RESULT,
    now: datetime = NOW,
) -> tuple[bool, RunRecord]:
    async with database.write() as conn:
        return await finish_run(
            conn,
            action_id=req.action_id,
            attempt=req.attempt,
            owner=owner,
            result=result,
            now=now,
        )


async def test_first_claim_wins_and_records_running(database: Database) -> None:
    first = await claim(database, request())
    assert first.claimed
    assert first.record.status == RUNNING
    assert first.record.result is None
    assert first.record.owner == "a"
    assert first.record.started_at == NOW
    assert first.record.expires_at == LATER

    second = await claim(database, request(), owner="b")
    assert not second.claimed
    assert second.record == first.record


async def test_keys_are_action_and_attempt(database: Database) -> None:
    assert (await claim(database, request(7, 1))).claimed
    assert (await claim(database, request(7, 2))).claimed
    assert (await claim(database, request(8, 1))).claimed
    assert not (await claim(database, request(7, 1))).claimed


async def test_finish_records_the_result_exactly(database: Database) -> None:
    await claim(database, request())
    recorded, record = await finish(database, request(), now=NOW + timedelta(seconds=1))
    assert recorded
    async with database.read() as conn:
        stored = await get_run(conn, action_id=7, attempt=1)
    assert stored == record
    assert stored is not None
    assert stored.status == SUCCESS
    assert stored.finished_at == NOW + timedelta(seconds=1)
    assert stored.result == RESULT
    assert stored.result is not None

    again = await claim(database, request(), owner="b", now=NOW + timedelta(seconds=2))
    assert not again.claimed
    assert again.record == stored
    # What the first caller got (read back from the row) is what every repeat gets, to the
    # byte (PostgreSQL's JSONB may order the keys of details its own way).
    assert again.record.result is not None
    assert again.record.result.model_dump_json() == stored.result.model_dump_json()


async def test_finish_needs_the_owner_and_a_running_record(database: Database) -> None:
    await claim(database, request())
    recorded, record = await finish(database, request(), owner="intruder")
    assert not recorded
    assert record.status == RUNNING
    assert (await finish(database, request()))[0]
    failed = RESULT.model_copy(update={"status": "failed"})
    recorded, record = await finish(database, request(), result=failed)
    assert not recorded
    assert record.result == RESULT


async def test_finish_of_an_unclaimed_key_is_a_bug(database: Database) -> None:
    with pytest.raises(LookupError):
        await finish(database, request())


async def test_a_running_record_past_expiry_becomes_an_interrupted_failure(
    database: Database,
) -> None:
    await claim(database, request(), owner="dead", expires_at=LATER)

    # Before expiry (and at the same instant as the first claim) it is still running.
    before = await claim(database, request(), owner="b", now=LATER - timedelta(seconds=1))
    assert not before.claimed
    assert before.record.status == RUNNING

    after = await claim(database, request(), owner="b", now=LATER)
    assert not after.claimed
    assert after.record.status == FAILED
    assert after.record.finished_at == LATER
    result = after.record.result
    assert result is not None
    assert result.status == "failed"
    assert result.retryable
    assert result.message == INTERRUPTED_MESSAGE

    # The recorded failure is what every later look returns; the dead owner's late result
    # is not recorded over it.
    recorded, record = await finish(database, request(), owner="dead", now=LATER)
    assert not recorded
    assert record == after.record
    assert (await claim(database, request(), now=LATER + timedelta(hours=1))).record == record

    # The worker's next attempt is a new key and runs normally.
    assert (await claim(database, request(attempt=2), owner="b", now=LATER)).claimed


@pytest.mark.parametrize("contenders", [8])
async def test_concurrent_claims_let_exactly_one_through(
    database: Database, contenders: int
) -> None:
    claims = await asyncio.gather(
        *(claim(database, request(), owner=f"w{i}") for i in range(contenders))
    )
    winners = [c for c in claims if c.claimed]
    assert len(winners) == 1
    owner = winners[0].record.owner
    assert all(c.record.owner == owner for c in claims)


async def test_concurrent_expiry_checks_agree(database: Database) -> None:
    await claim(database, request(), owner="dead", expires_at=NOW)
    claims = await asyncio.gather(
        *(claim(database, request(), owner=f"w{i}", now=LATER) for i in range(6))
    )
    assert not any(c.claimed for c in claims)
    first = claims[0].record
    assert first.status == FAILED
    assert all(c.record == first for c in claims)
