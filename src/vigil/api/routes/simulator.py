"""The simulator (docs/api.md "Simulator"): start, stop and watch a run, and the simulated fleet
it drives (read it, scale a service, restart one). Start, stop and status answer under
``/api/v1/simulator/`` and, for dashboards that use the ``ui/`` paths, ``/api/v1/ui/simulator/``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vigil.api.deps import ActorDep, ContainerDep, VigilRoute
from vigil.container import Container
from vigil.errors import Forbidden, NotFound
from vigil.http.errors import error_responses
from vigil.observability.audit import Actor, append_audit
from vigil.simulator.fleet import DEFAULT_FLEET, MAX_REPLICAS, Mode
from vigil.simulator.sender import RunConfig
from vigil.strict import StrictModel


async def require_simulator(container: ContainerDep) -> None:
    """403 on every simulator route unless the simulator is on (Settings.simulator_on)."""
    if not container.settings.simulator_on:
        raise Forbidden(
            "the simulator is off in production (VIGIL_ENV=production); set "
            "VIGIL_SIMULATOR_ENABLED=true to allow it"
        )


router = APIRouter(
    prefix="/api/v1/simulator",
    tags=["simulator"],
    route_class=VigilRoute,
    dependencies=[Depends(require_simulator)],
)
ui_router = APIRouter(
    prefix="/api/v1/ui/simulator",
    tags=["simulator"],
    route_class=VigilRoute,
    dependencies=[Depends(require_simulator)],
)

ServiceParam = Annotated[
    str, Path(max_length=64, description="A service (`web`), or one of its hosts (`web-01`)")
]


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


class ScaleIn(StrictModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"delta": 2}, {"replicas": 4}]})

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
    replicas_before: int
    replicas: int


class RestartedOut(BaseModel):
    ok: bool
    service: str
    restarts: int


def _service(container: Container, name: str) -> str:
    """The service ``name`` is, or whose host it is; 404 when the fleet has neither."""
    service = container.fleet.service_of(name)
    if service is None:
        raise NotFound(f"no service or host {name!r} in the simulated fleet")
    return service


async def _audit(
    container: Container, actor: Actor, kind: str, subject: str, **change: Any
) -> None:
    async with container.database.write() as conn:
        await append_audit(
            conn, at=container.clock.now(), actor=actor, kind=kind, subject=subject, **change
        )


@router.get("/fleet", response_model=FleetOut, responses=error_responses(403))
async def fleet(container: ContainerDep) -> dict[str, Any]:
    """Each simulated service: replicas, current CPU and latency, hosts, memory, heartbeats."""
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
    service = _service(container, service)
    before = container.fleet.services[service].replicas
    replicas = container.fleet.scale(service, delta=body.delta, replicas=body.replicas)
    await _audit(
        container,
        actor,
        "simulator.scaled",
        f"service:{service}",
        before={"replicas": before},
        after={"replicas": replicas},
    )
    return {"ok": True, "service": service, "replicas_before": before, "replicas": replicas}


@router.post(
    "/fleet/{service}/restart",
    response_model=RestartedOut,
    responses=error_responses(403, 404, 503),
)
async def restart(
    service: ServiceParam, container: ContainerDep, actor: ActorDep
) -> dict[str, Any]:
    """Restart a service: its memory back to normal, its heartbeats flowing again."""
    service = _service(container, service)
    container.fleet.restart(service)
    await _audit(container, actor, "simulator.restarted", f"service:{service}")
    restarts = container.fleet.services[service].restarts
    return {"ok": True, "service": service, "restarts": restarts}


SERVICES = tuple(s.name for s in DEFAULT_FLEET)
Seconds = Annotated[float, Field(gt=0, le=7 * 86400)]
Share = Annotated[float, Field(ge=0, le=1)]


class StartIn(StrictModel):
    """A run; every field is optional. Strict types: ``"rate": true`` or ``"batch": "yes"``
    is a mistake to report, not to coerce."""

    model_config = ConfigDict(
        strict=True,
        json_schema_extra={
            "examples": [{"mode": "burst", "rate": 50, "targets": ["web"], "duration_seconds": 120}]
        },
    )

    scenario: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")] = "default"
    """A label for the run, shown in its status."""
    rate: Annotated[float, Field(ge=0.1, le=10_000)] = 20.0
    """Samples per second."""
    mode: Mode = "steady"
    targets: Annotated[list[Literal["web", "api", "db"]], Field(max_length=len(SERVICES))] = Field(
        default_factory=list
    )
    """The services to simulate (default: the whole fleet)."""
    duration_seconds: Seconds | None = None
    failure_rate: Share | None = None
    malformed_rate: Share | None = None
    batch: bool = True
    seed: Annotated[int, Field(ge=0, le=2**31)] = 0
    burst_at_seconds: Annotated[float, Field(ge=0, le=7 * 86400)] | None = None
    burst_seconds: Seconds | None = None

    def config(self) -> RunConfig:
        fields = self.model_dump(exclude={"targets"})
        return RunConfig(**fields, targets=tuple(dict.fromkeys(self.targets)))


class RunOut(BaseModel):
    scenario: str
    mode: str
    rate: float
    targets: list[str]
    duration_seconds: float | None
    failure_rate: float
    malformed_rate: float
    batch: bool
    seed: int
    burst_at_seconds: float | None
    burst_seconds: float | None


class StatusOut(BaseModel):
    running: bool
    scenario: str | None
    mode: str | None
    rate: float | None
    config: RunOut | None
    events_generated: int
    events_succeeded: int
    events_failed: int
    events_rejected: int
    requests: int
    malformed: int
    abandoned: int
    server_errors: int
    last_error: str | None
    started_at: datetime | None
    stopped_at: datetime | None
    stop_reason: str | None
    fleet: FleetOut


async def start(
    container: ContainerDep,
    actor: ActorDep,
    body: Annotated[StartIn | None, Body()] = None,
) -> dict[str, Any]:
    """Start a run on a fresh fleet (409 while one runs). Samples go to this server's own
    ingest API over HTTP, so they take the path any agent's do."""
    config = (body or StartIn()).config()
    status = await container.simulator.start(config)
    try:
        await _audit(container, actor, "simulator.started", "simulator", after=config.as_dict())
    except BaseException:
        await container.simulator.stop("not audited")  # no unrecorded run
        raise
    return status


async def stop(container: ContainerDep, actor: ActorDep) -> dict[str, Any]:
    """Stop the run (nothing to stop is not an error: the status says so)."""
    stopped, status = await container.simulator.stop()
    if stopped:
        counts = {k: status[k] for k in ("events_generated", "events_succeeded")}
        await _audit(container, actor, "simulator.stopped", "simulator", after=counts)
    return status


async def status(container: ContainerDep) -> dict[str, Any]:
    """The current (or last) run, its counts, and the fleet's replicas and CPU."""
    return container.simulator.status()


for _router in (router, ui_router):
    _router.add_api_route(
        "/start",
        start,
        methods=["POST"],
        response_model=StatusOut,
        responses=error_responses(403, 409, 413, 422, 503),
        summary="Start a simulator run",
    )
    _router.add_api_route(
        "/stop",
        stop,
        methods=["POST"],
        response_model=StatusOut,
        responses=error_responses(403, 503),
        summary="Stop the simulator",
    )
    _router.add_api_route(
        "/status",
        status,
        methods=["GET"],
        response_model=StatusOut,
        responses=error_responses(403),
        summary="The simulator's status",
    )
