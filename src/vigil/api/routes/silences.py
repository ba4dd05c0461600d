"""Silences: suppress matching violations for a while, with a comment saying why."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from vigil.api.deps import ActorDep, ContainerDep, VigilRoute
from vigil.decide import silences as store
from vigil.http.errors import error_responses
from vigil.strict import StrictModel
from vigil.text import Name, TagValue, UtcTimestamp, no_nul

router = APIRouter(prefix="/api/v1/silences", tags=["safety"], route_class=VigilRoute)

SilenceId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The silence's id")]
Glob = Name


class Matchers(StrictModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    policy: Glob | None = Field(default=None, description="Glob on the policy name")
    target: Glob | None = Field(default=None, description="Glob on the target")
    tags: dict[Name, TagValue] | None = Field(
        default=None, max_length=64, description="Tags the sample must carry, exactly"
    )

    @model_validator(mode="after")
    def _something(self) -> Matchers:
        if self.policy is None and self.target is None and not self.tags:
            raise ValueError(
                "give at least one matcher (policy, target or tags); to stop every action, "
                "pause automation instead"
            )
        return self


class SilenceIn(StrictModel):
    model_config = ConfigDict(
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {
                    "matchers": {"policy": "high-cpu-*", "target": "web-0[1-4]"},
                    "ends_at": "2026-01-19T14:00:00Z",
                    "comment": "load test on the web tier",
                }
            ]
        },
    )

    matchers: Matchers
    starts_at: UtcTimestamp | None = None
    ends_at: UtcTimestamp
    comment: Annotated[
        str, StringConstraints(min_length=1, max_length=4096), AfterValidator(no_nul)
    ]


class SilenceOut(BaseModel):
    id: int
    matchers: dict[str, Any]
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str
    active: bool


class SilenceList(BaseModel):
    silences: list[SilenceOut]


class DeletedOut(BaseModel):
    ok: bool


@router.post("", status_code=201, response_model=SilenceOut, responses=error_responses(413, 422))
async def create_silence(
    body: SilenceIn, container: ContainerDep, actor: ActorDep
) -> dict[str, Any]:
    """Suppress violations matching every given matcher from ``starts_at`` (default now) to
    ``ends_at``. Matched violations are suppressed as ``silenced``."""
    now = container.clock.now()
    record = await store.add_silence(
        container.database,
        matchers=body.matchers.model_dump(exclude_none=True),
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        comment=body.comment,
        actor=actor,
        now=now,
    )
    return store.silence_view(record, now)


@router.get("", response_model=SilenceList, responses=error_responses(422))
async def list_silences(
    container: ContainerDep,
    active: Annotated[bool | None, Query(description="Only those in force now (or not)")] = None,
) -> dict[str, Any]:
    """Silences, newest first."""
    now = container.clock.now()
    async with container.database.read() as conn:
        rows = await store.list_silences(conn, now=now, active=active)
    return {"silences": [store.silence_view(r, now) for r in rows]}


@router.delete("/{silence_id}", response_model=DeletedOut, responses=error_responses(404, 422))
async def expire_silence(
    silence_id: SilenceId, container: ContainerDep, actor: ActorDep
) -> dict[str, Any]:
    """End a silence now; the violations it held back act at their next evaluation."""
    async with container.database.write() as conn:
        await store.expire_silence(
            conn, silence_id=silence_id, actor=actor, now=container.clock.now()
        )
    return {"ok": True}
