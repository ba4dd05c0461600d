"""The audit trail: every mutation, who made it, before and after, hash-chained."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from vigil.api.deps import ContainerDep, Limit, Page, VigilRoute, page_out
from vigil.http.errors import error_responses
from vigil.observability.audit import list_entries
from vigil.text import SafeStr, UtcTimestamp

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], route_class=VigilRoute)


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    kind: str
    subject: str
    before: Any
    after: Any
    request_id: str | None
    prev_hash: str | None
    hash: str | None


class AuditList(BaseModel):
    count: int
    total: int
    page: int
    page_size: int
    entries: list[AuditEntry]


@router.get("", response_model=AuditList, responses=error_responses(422, 503))
async def list_audit(
    container: ContainerDep,
    page: Page = 1,
    limit: Limit = 50,
    actor: Annotated[SafeStr | None, Query(max_length=255)] = None,
    kind: Annotated[SafeStr | None, Query(max_length=64)] = None,
    start_time: UtcTimestamp | None = None,
    end_time: UtcTimestamp | None = None,
) -> dict[str, Any]:
    """Audit rows, newest first. Each carries `prev_hash` and `hash`: the chain that
    `vigil audit verify` checks."""
    async with container.database.read() as conn:
        rows, total = await list_entries(
            conn,
            page=page,
            limit=limit,
            actor=actor,
            kind=kind,
            start_time=start_time,
            end_time=end_time,
        )
    return page_out("entries", rows, total=total, page=page, limit=limit)
