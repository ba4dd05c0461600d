"""Recording violations: guards decided in order, actions created together, on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from vigil.actions.store import PairActions, policy_key
from vigil.db.engine import Database, create_engine
from vigil.decide import episodes, recorder
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
