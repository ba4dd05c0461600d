"""Queue routes: shared statistics, the dead letter and its redrive."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from vigil.api.deps import ActorDep, ContainerDep, VigilRoute
from vigil.api.routes.actions import ActionOut, action_out
from vigil.http.errors import error_responses
from vigil.strict import StrictModel

router = APIRouter(tags=["queue"], route_class=VigilRoute)


class LastProcessedOut(BaseModel):
    task_id: str
    action_id: int
    target: str
    timestamp: datetime


class QueueStatsOut(BaseModel):
    queue_length: int
    tasks_enqueued: int
    tasks_dequeued: int
    tasks_failed: int
    tasks_completed: int
    tasks_retried: int
    dead_letter_length: int
    delayed_length: int = Field(description="Retries waiting for their time (not yet queued)")
    last_processed_task: LastProcessedOut | None
    backend: str = Field(description="`redis` or `memory`")


class DeadTaskOut(BaseModel):
    task_id: str
    action_id: int
    attempts: int
    target: str
    error: str
    dead_at: datetime


class DeadLetterOut(BaseModel):
    count: int
    tasks: list[DeadTaskOut]


TaskId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class RedriveIn(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"task_ids": ["task_0123abcd"]}, {"all": True}]},
    )

    task_ids: list[TaskId] | None = Field(default=None, min_length=1, max_length=1000)
    action_ids: list[Annotated[int, Field(ge=1, le=2**63 - 1, strict=True)]] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Failed actions to re-drive by id, whether or not the dead letter still "
        "holds their task (the in-process dead letter is lost at a restart)",
    )
    all: bool = Field(default=False, strict=True)

    @model_validator(mode="after")
    def _one_of(self) -> RedriveIn:
        given = [self.task_ids is not None, self.action_ids is not None, self.all]
        if sum(given) != 1:
            raise ValueError(
                'give exactly one of "task_ids" (a non-empty list), "action_ids" (a non-empty '
                'list) or "all": true'
            )
        return self


class SkippedOut(BaseModel):
    task_id: str | None
    action_id: int | None
    reason: str


class RedriveOut(BaseModel):
    ok: bool
    redriven: int
    actions: list[ActionOut]
    skipped: list[SkippedOut]


async def _stats(container: ContainerDep) -> dict[str, Any]:
    stats = (await container.queue.stats()).to_json()
    stats["backend"] = "redis" if container.redis is not None else "memory"
    return stats


@router.get("/api/v1/queue/stats", response_model=QueueStatsOut, responses=error_responses(503))
async def queue_stats(container: ContainerDep) -> dict[str, Any]:
    """Queue counters, shared by every process (kept in Redis when Redis is configured)."""
    return await _stats(container)


@router.get("/api/v1/ui/queue/stats", response_model=QueueStatsOut, responses=error_responses(503))
async def ui_queue_stats(container: ContainerDep) -> dict[str, Any]:
    """The same as ``/api/v1/queue/stats``."""
    return await _stats(container)


@router.get(
    "/api/v1/queue/dead-letter",
    response_model=DeadLetterOut,
    responses=error_responses(422, 503),
)
async def dead_letter(
    container: ContainerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    """Tasks whose action failed for good (or that could not be delivered), oldest first."""
    tasks = await container.queue.dead_letters(limit=limit)
    return {"count": len(tasks), "tasks": [t.to_json() for t in tasks]}


@router.post(
    "/api/v1/queue/dead-letter/redrive",
    response_model=RedriveOut,
    responses=error_responses(413, 422, 503),
)
async def redrive(body: RedriveIn, container: ContainerDep, actor: ActorDep) -> dict[str, Any]:
    """Put failed actions back to ``pending`` with a fresh attempt budget, by dead-letter
    task, by action id (even when the dead letter lost their task) or all of them.

    Attempt numbers carry on from the last one. Tasks that are not in the dead letter, or
    whose action cannot be re-driven, are listed in ``skipped`` with the reason.
    """
    redriven, skipped = await container.actions.redrive(
        body.task_ids, action_ids=body.action_ids, actor=actor
    )
    return {
        "ok": True,
        "redriven": len(redriven),
        "actions": [action_out(r) for r in redriven],
        "skipped": [
            {"task_id": s.task_id, "action_id": s.action_id, "reason": s.reason} for s in skipped
        ],
    }
