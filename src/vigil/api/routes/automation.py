"""The global automation switch: pause and resume every new action."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from vigil.api.deps import ActorDep, ContainerDep, VigilRoute
from vigil.http.errors import error_responses
from vigil.strict import StrictModel
from vigil.text import no_nul

router = APIRouter(prefix="/api/v1/automation", tags=["safety"], route_class=VigilRoute)

Reason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=4096),
    AfterValidator(no_nul),
]


class AutomationOut(BaseModel):
    paused: bool
    reason: str | None
    since: datetime | None
    by: str | None


class PauseIn(StrictModel):
    model_config = ConfigDict(
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"reason": "database migration"}]},
    )

    reason: Reason


class ResumeIn(StrictModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    reason: Reason | None = None


@router.get("", response_model=AutomationOut, responses=error_responses(503))
async def automation_state(container: ContainerDep) -> dict[str, Any]:
    """Whether automation is paused, since when, by whom and why."""
    return (await container.actions.automation_state()).to_json()


@router.post("/pause", response_model=AutomationOut, responses=error_responses(413, 422, 503))
async def pause(body: PauseIn, container: ContainerDep, actor: ActorDep) -> dict[str, Any]:
    """Stop creating actions: every violation that would act is suppressed as ``paused``,
    and manual actions are refused (409), until resumed. Open actions run on."""
    state = await container.actions.set_paused(True, reason=body.reason, actor=actor)
    return state.to_json()


@router.post("/resume", response_model=AutomationOut, responses=error_responses(413, 422, 503))
async def resume(
    container: ContainerDep,
    actor: ActorDep,
    body: Annotated[ResumeIn | None, Body()] = None,
) -> dict[str, Any]:
    """Create actions again: the next violation that would act does."""
    state = await container.actions.set_paused(
        False, reason=body.reason if body else None, actor=actor
    )
    return state.to_json()
