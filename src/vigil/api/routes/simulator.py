"""The simulated fleet: read it, scale a service, restart one (API.md "Simulator")."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vigil.api.deps import ActorDep, ContainerDep, VigilRoute
from vigil.api.errors import error_responses
from vigil.container import Container
from vigil.errors import Forbidden, NotFound
from vigil.observability.audit import append_audit
from vigil.simulator.fleet import MAX_REPLICAS

router = APIRouter(prefix="/api/v1/simulator", tags=["simulator"], route_class=VigilRoute)

ServiceParam = Annotated[str, Path(max_length=64, description="The service's name")]


class ServiceOut(BaseModel):
    replicas: int
    cpu_usage: float
    latency_p99_ms: float
    hosts: list[str]
    memory_percent: dict[str, float]
    heartbeats: bool
    restarts: int


class FleetOut(BaseModel):
    services: dict[str, ServiceOut]


class ScaleIn(BaseModel):
    model_config = ConfigDict(
        extra="ignore", json_schema_extra={"examples": [{"delta": 2}, {"replicas": 4}]}
    )

    delta: Annotated[int, Field(strict=True, ge=-MAX_REPLICAS, le=MAX_REPLICAS)] | None = None
    replicas: Annotated[int, Field(strict=True, ge=1, le=MAX_REPLICAS)] | None = None

    @model_validator(mode="after")
    def _one(self) -> ScaleIn:
        if (self.delta is None) == (self.replicas is None):
            raise ValueError("give exactly one of 'delta' and 'replicas'")
        return self


class ScaledOut(BaseModel):
    ok: bool
    service: str
    replicas: int


class RestartedOut(BaseModel):
    ok: bool
    service: str
    restarts: int


def _enabled(container: Container) -> None:
    s = container.settings
    allowed = s.simulator_enabled if s.simulator_enabled is not None else s.env != "production"
    if not allowed:
        raise Forbidden(
            "the simulator is off in production (VIGIL_ENV=production); set "
            "VIGIL_SIMULATOR_ENABLED=true to allow it"
        )


def _known(container: Container, service: str) -> None:
    if service not in container.fleet.services:
        raise NotFound(f"no service {service!r} in the simulated fleet")


@router.get("/fleet", response_model=FleetOut, responses=error_responses(403))
async def fleet(container: ContainerDep) -> dict[str, Any]:
    """Each simulated service: replicas, current CPU and latency, hosts, memory, heartbeats."""
    _enabled(container)
    return container.fleet.snapshot()


@router.post(
    "/fleet/{service}/scale",
    response_model=ScaledOut,
    responses=error_responses(403, 404, 413, 422, 503),
)
async def scale(
    service: ServiceParam, body: ScaleIn, container: ContainerDep, actor: ActorDep
) -> dict[str, Any]:
    """Change a service's replicas by `delta` or to `replicas` (kept within 1 and 100)."""
    _enabled(container)
    _known(container, service)
    before = container.fleet.services[service].replicas
    replicas = container.fleet.scale(service, delta=body.delta, replicas=body.replicas)
    async with container.database.write() as conn:
        await append_audit(
            conn,
            at=container.clock.now(),
            actor=actor,
            kind="simulator.scaled",
            subject=f"service:{service}",
            before={"replicas": before},
            after={"replicas": replicas},
        )
    return {"ok": True, "service": service, "replicas": replicas}


@router.post(
    "/fleet/{service}/restart",
    response_model=RestartedOut,
    responses=error_responses(403, 404, 503),
)
async def restart(
    service: ServiceParam, container: ContainerDep, actor: ActorDep
) -> dict[str, Any]:
    """Restart a service: its memory back to normal, its heartbeats flowing again."""
    _enabled(container)
    _known(container, service)
    container.fleet.restart(service)
    async with container.database.write() as conn:
        await append_audit(
            conn,
            at=container.clock.now(),
            actor=actor,
            kind="simulator.restarted",
            subject=f"service:{service}",
        )
    restarts = container.fleet.services[service].restarts
    return {"ok": True, "service": service, "restarts": restarts}
