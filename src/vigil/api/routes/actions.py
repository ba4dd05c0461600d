"""Action routes: list, detail, by status, history, cancel, manual actions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from vigil.actions import store
from vigil.actions.status import Status
from vigil.actions.store import ACTION_VIEW, Action, HistoryRow
from vigil.api.deps import ActorDep, ContainerDep, Limit, Page, VigilRoute, page_out
from vigil.db.records import fields_of
from vigil.http.errors import error_responses
from vigil.policy.models import ActionName
from vigil.strict import StrictModel
from vigil.text import JsonObject, Label, Name, SafeStr, TagValue, Text, UtcTimestamp

router = APIRouter(prefix="/api/v1/actions", tags=["actions"], route_class=VigilRoute)

ActionId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The action's id")]


class ActionOut(BaseModel):
    id: int
    policy_name: str | None
    target: str
    action: str
    params: dict[str, Any]
    status: str
    attempts: int
    severity: str | None
    details: str | None
    result: dict[str, Any] | None
    error_message: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    next_attempt_at: datetime | None
    verification: dict[str, Any] | None
    tags: dict[str, str] | None


def action_out(record: Action) -> dict[str, Any]:
    """An action as the API shows it."""
    return fields_of(record, ACTION_VIEW)


class ActionList(BaseModel):
    count: int
    total: int
    page: int
    page_size: int
    actions: list[ActionOut]


class HistoryEntry(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str | None = Field(alias="from", serialization_alias="from")
    to: str
    at: datetime
    reason: str | None
    attempt: int
    actor: str


def history_out(row: HistoryRow) -> dict[str, Any]:
    """One status transition as the API shows it."""
    return {
        "from": row.from_status,
        "to": row.to_status,
        "at": row.at,
        "reason": row.reason,
        "attempt": row.attempt,
        "actor": row.actor,
    }


class ManualActionIn(StrictModel):
    model_config = ConfigDict(
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {
                    "target": "web-01",
                    "action": "restart-service",
                    "params": {"graceful": True},
                    "tags": {"service": "nginx"},
                    "details": "restarting after a deploy",
                }
            ]
        },
    )

    target: Name
    action: ActionName
    params: JsonObject = Field(default_factory=dict)
    tags: dict[Label, TagValue] = Field(
        default_factory=dict,
        description="What the remediation's {tags.NAME} placeholders read",
    )
    details: Text | None = None


class ManualActionOut(BaseModel):
    ok: bool
    action_id: int
    message: str
    status: str
    action: ActionOut


class CancelIn(StrictModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    reason: Text | None = None


async def _page(
    container: ContainerDep,
    *,
    page: int,
    limit: int,
    **filters: Any,
) -> dict[str, Any]:
    async with container.database.read() as conn:
        rows, total = await store.list_actions(conn, page=page, limit=limit, **filters)
    items = [action_out(r) for r in rows]
    return page_out("actions", items, total=total, page=page, limit=limit)


@router.get("", response_model=ActionList, responses=error_responses(422, 503))
async def list_actions(
    container: ContainerDep,
    page: Page = 1,
    limit: Limit = 50,
    status: Status | None = None,
    target: Annotated[SafeStr | None, Query(max_length=255)] = None,
    policy: Annotated[SafeStr | None, Query(max_length=255)] = None,
    start_time: UtcTimestamp | None = None,
    end_time: UtcTimestamp | None = None,
) -> dict[str, Any]:
    """Actions, newest first, filtered and paginated."""
    return await _page(
        container,
        page=page,
        limit=limit,
        status=status.value if status else None,
        target=target,
        policy=policy,
        start_time=start_time,
        end_time=end_time,
    )


@router.post(
    "",
    status_code=201,
    response_model=ManualActionOut,
    responses=error_responses(409, 413, 422, 503),
)
async def create_manual_action(
    body: ManualActionIn, container: ContainerDep, actor: ActorDep
) -> dict[str, Any]:
    """A manual remediation. 409 while one for the same action and target is open."""
    record = await container.actions.create_manual(
        target=body.target,
        action=body.action,
        params=body.params,
        details=body.details,
        actor=actor,
        tags=body.tags,
    )
    return {
        "ok": True,
        "action_id": record.id,
        "message": f"Action {body.action} on {body.target} recorded",
        "status": record.status,
        "action": action_out(record),
    }


@router.get("/status/{status}", response_model=ActionList, responses=error_responses(422, 503))
async def actions_by_status(
    status: Status, container: ContainerDep, page: Page = 1, limit: Limit = 50
) -> dict[str, Any]:
    """Actions in one status, newest first."""
    return await _page(container, page=page, limit=limit, status=status.value)


@router.get("/{action_id}", response_model=ActionOut, responses=error_responses(404, 503))
async def get_action(action_id: ActionId, container: ContainerDep) -> dict[str, Any]:
    async with container.database.read() as conn:
        return action_out(await store.get_action(conn, action_id=action_id))


@router.get(
    "/{action_id}/history",
    response_model=list[HistoryEntry],
    responses=error_responses(404, 503),
)
async def action_history(action_id: ActionId, container: ContainerDep) -> list[dict[str, Any]]:
    """Every status transition, oldest first."""
    async with container.database.read() as conn:
        return [history_out(row) for row in await store.history(conn, action_id=action_id)]


@router.put(
    "/{action_id}/cancel",
    response_model=ActionOut,
    responses=error_responses(404, 409, 413, 422, 503),
)
async def cancel_action(
    action_id: ActionId,
    container: ContainerDep,
    actor: ActorDep,
    body: Annotated[CancelIn | None, Body()] = None,
) -> dict[str, Any]:
    """Cancel an open (pending or running) action; 409 if it has already ended."""
    record = await container.actions.cancel(
        action_id, reason=body.reason if body else None, actor=actor
    )
    return action_out(record)


class ApprovalIn(StrictModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    comment: Text | None = None


@router.post(
    "/{action_id}/approve",
    response_model=ActionOut,
    responses=error_responses(404, 409, 413, 422, 503),
)
async def approve_action(
    action_id: ActionId,
    container: ContainerDep,
    actor: ActorDep,
    body: Annotated[ApprovalIn | None, Body()] = None,
) -> dict[str, Any]:
    """Approve an action `awaiting_approval`: it becomes `pending` and runs. 409 otherwise."""
    record = await container.actions.approve(
        action_id, comment=body.comment if body else None, actor=actor
    )
    return action_out(record)


@router.post(
    "/{action_id}/reject",
    response_model=ActionOut,
    responses=error_responses(404, 409, 413, 422, 503),
)
async def reject_action(
    action_id: ActionId,
    container: ContainerDep,
    actor: ActorDep,
    body: Annotated[ApprovalIn | None, Body()] = None,
) -> dict[str, Any]:
    """Reject an action `awaiting_approval`: it is `cancelled`. 409 otherwise."""
    record = await container.actions.reject(
        action_id, comment=body.comment if body else None, actor=actor
    )
    return action_out(record)
