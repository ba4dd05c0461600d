"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

import vigil
from vigil.api.deps import ContainerDep
from vigil.errors import Unavailable
from vigil.http.errors import retry_headers

router = APIRouter(tags=["health"])


class HealthOut(BaseModel):
    status: str
    service: str
    version: str


class ReadyOut(BaseModel):
    status: str
    checks: dict[str, str]


@router.get("/health", response_model=HealthOut)
async def health() -> HealthOut:
    """Liveness only: the process answers."""
    return HealthOut(status="healthy", service="vigil", version=vigil.__version__)


@router.get(
    "/ready",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "A dependency does not answer"}},
)
async def ready(container: ContainerDep) -> Response:
    """200 when the database (and Redis, if configured) answer; else 503 naming which failed."""
    checks: dict[str, str] = {}
    try:
        await container.database.ping()
        checks["database"] = "ok"
    except Unavailable:
        checks["database"] = "unavailable"
    if container.redis is not None:
        try:
            await container.redis.ping()
            checks["redis"] = "ok"
        except Unavailable:
            checks["redis"] = "unavailable"
    ok = all(v == "ok" for v in checks.values())
    body = ReadyOut(status="ready" if ok else "unavailable", checks=checks)
    status = 200 if ok else 503
    return JSONResponse(body.model_dump(), status_code=status, headers=retry_headers(status))


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(container: ContainerDep) -> Response:
    """Prometheus text exposition of this process's metrics."""
    await container.refresh_queue_gauges()
    return Response(generate_latest(container.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class ServiceHealthOut(BaseModel):
    status: str
    service: str


@router.get("/api/v1/ingest/health", response_model=ServiceHealthOut)
async def ingest_health() -> ServiceHealthOut:
    return ServiceHealthOut(status="healthy", service="ingest")


@router.get("/api/v1/actions/health", response_model=ServiceHealthOut)
async def actions_health() -> ServiceHealthOut:
    return ServiceHealthOut(status="healthy", service="actions")
