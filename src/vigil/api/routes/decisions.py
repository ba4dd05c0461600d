"""Decisions: every violation that started an episode or tried to act, and what became of
it -- so an operator can answer "why did (or didn't) Vigil act at 03:12?"."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from vigil.api.deps import ContainerDep, Limit, Page, VigilRoute, page_out
from vigil.db.records import fields_of
from vigil.decide import episodes
from vigil.decide.episodes import StoredDecision
from vigil.http.errors import error_responses
from vigil.text import SafeStr, UtcTimestamp

router = APIRouter(prefix="/api/v1/decisions", tags=["safety"], route_class=VigilRoute)


class Outcome(StrEnum):
    ACTED = "acted"
    SUPPRESSED = "suppressed"
    SHADOW = "shadow"
    RECORDED = "recorded"


class DecisionOut(BaseModel):
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


def decision_out(d: StoredDecision) -> dict[str, Any]:
    """A decision as the API shows it: every field of the record."""
    return fields_of(d)


class DecisionList(BaseModel):
    count: int
    total: int
    page: int
    page_size: int
    decisions: list[DecisionOut]


@router.get("", response_model=DecisionList, responses=error_responses(422, 503))
async def list_decisions(
    container: ContainerDep,
    page: Page = 1,
    limit: Limit = 50,
    policy: Annotated[SafeStr | None, Query(max_length=255)] = None,
    target: Annotated[SafeStr | None, Query(max_length=255)] = None,
    outcome: Outcome | None = None,
    start_time: UtcTimestamp | None = None,
    end_time: UtcTimestamp | None = None,
) -> dict[str, Any]:
    """Decisions, newest first. `outcome`: `acted` (with the action), `suppressed` (with the
    reason), `shadow` (a shadow policy's would-be action) or `recorded` (a policy that does
    not remediate). A suppression repeated within its episode counts on its row (`count`,
    `last_at`); the time range selects decisions made or repeated within it."""
    async with container.database.read() as conn:
        rows, total = await episodes.list_decisions(
            conn,
            page=page,
            limit=limit,
            policy=policy,
            target=target,
            outcome=outcome.value if outcome else None,
            start_time=start_time,
            end_time=end_time,
        )
    items = [decision_out(d) for d in rows]
    return page_out("decisions", items, total=total, page=page, limit=limit)
