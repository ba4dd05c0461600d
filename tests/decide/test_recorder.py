"""Recording violations: guards decided in order, actions created together, on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vigil.actions.store import PairActions, policy_key
from vigil.db.engine import Database, create_engine
from vigil.decide import episodes, recorder, silences
from vigil.decide.observations import Observation, Settled
from vigil.observability.audit import Actor
from vigil.policy.evaluator import Violation
from vigil.policy.models import PolicySpec
from vigil.settings import Settings

NOW = datetime(2026, 1, 19, 12, 0, tzinfo=UTC)
POLICY = PolicySpec.model_validate(
    {
        "name": "cpu-hot",
        "condition": {"type": "metric_exceeds", "metric": "cpu", "threshold": 90},
        "action": "scale-up",
        "auto_remediate": True,
    }
)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(create_engine(Settings(database_url=database_url, db_pool_size=4)))
    yield db
    await db.dispose()


async def record(database: Database, targets: list[str]) -> list[recorder.Decision]:
    async with database.write() as conn:
        recorded = await recorder.record_observations(
            conn,
            observations=[Violation(POLICY, t, 95.0) for t in targets],
            now=NOW,
            actor=Actor(),
        )
        return recorded.decisions


async def test_one_action_per_pair_in_order(database: Database) -> None:
    decisions = await record(database, ["web-01", "web-02", "web-01", "web-03"])
    assert [d.suppressed for d in decisions] == [None, None, "action already open", None]
    assert [d.action.target if d.action else None for d in decisions] == [
        "web-01",
        "web-02",
        None,
        "web-03",
    ]


async def test_a_pair_opened_by_another_process_meanwhile_is_suppressed_alone(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await record(database, ["web-02"])  # "another process" opened web-02

    async def stale(conn: Any, *, pairs: Any) -> dict[tuple[str, str], PairActions]:
        return {}  # as read before that process committed

    async def no_state(conn: Any, *, pairs: Any) -> dict[Any, Any]:
        return {}

    monkeypatch.setattr(recorder, "pair_states", stale)
    monkeypatch.setattr(episodes, "load", no_state)  # the recorder's episodes module
    decisions = await record(database, ["web-01", "web-02", "web-03"])
    assert [d.suppressed for d in decisions] == [None, "action already open", None]
    assert [d.action is not None for d in decisions] == [True, False, True]
    assert decisions[0].action is not None
    assert decisions[0].action.dedup_key == policy_key("cpu-hot")


async def test_a_later_sample_of_the_same_request_tries_again_when_a_silence_held_it_back(
    database: Database,
) -> None:
    # The silence covers the pair's production samples only: the first violation is held
    # back, and the next one (another sample of the same request) acts, as it would have
    # in a request of its own.
    async with database.write() as conn:
        await silences.create_silence(
            conn,
            matchers={"tags": {"env": "prod"}},
            starts_at=NOW - timedelta(minutes=1),
            ends_at=NOW + timedelta(hours=1),
            comment="maintenance",
            actor=Actor(),
            now=NOW,
        )
    async with database.write() as conn:
        recorded = await recorder.record_observations(
            conn,
            observations=[
                Violation(POLICY, "web-01", 95.0, {"env": "prod"}),
                Violation(POLICY, "web-01", 96.0, {"env": "dev"}),
                Violation(POLICY, "web-01", 97.0, {"env": "dev"}),
            ],
            now=NOW,
            actor=Actor(),
        )
    decisions = recorded.decisions
    assert [d.suppressed for d in decisions] == ["silenced", None, "action already open"]
    assert decisions[1].action is not None


async def test_a_lost_race_repeats_the_episodes_last_reason_on_its_row(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def observe(observation: Observation) -> list[recorder.Decision]:
        async with database.write() as conn:
            done = await recorder.record_observations(
                conn, observations=[observation], now=NOW, actor=Actor()
            )
            return done.decisions

    [acted] = await observe(Violation(POLICY, "web-02", 95.0))
    assert acted.action is not None  # episode 1's action, still open
    await observe(Settled(POLICY, "web-02"))
    [held] = await observe(Violation(POLICY, "web-02", 95.0))  # episode 2
    assert held.suppressed == "action already open"

    async def stale(conn: Any, *, pairs: Any) -> dict[tuple[str, str], PairActions]:
        return {}  # as if read before the action was created: the insert then fails

    monkeypatch.setattr(recorder, "pair_states", stale)
    [lost] = await observe(Violation(POLICY, "web-02", 96.0))
    assert lost.suppressed == "action already open"
    assert lost.action is None
    async with database.read() as conn:
        rows, total = await episodes.list_decisions(conn, page=1, limit=10, target="web-02")
    assert [(r.episode, r.outcome, r.count) for r in rows] == [
        (2, "suppressed", 2),
        (1, "acted", 1),
    ]
    assert total == 2
