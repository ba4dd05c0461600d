"""The remediator service (docs/api.md "Remediator service"): its own small FastAPI app.

``POST /v1/remediate`` checks, in this order, that the body is within
:data:`MAX_BODY_BYTES` (413), that it is signed with the shared secret within the time
window (401, before anything in it is parsed), and that it is a valid request (422); then
the :class:`~vigil.remediation.service.Remediator` answers it: 200 with the result (the
recorded one for a repeated key) or 409 ``{"status": "in_progress"}``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Info, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse, Response

import vigil
from vigil.clock import Clock, SystemClock
from vigil.db.engine import Database, create_engine
from vigil.db.migrate import startup_lock, upgrade
from vigil.errors import PayloadTooLarge, VigilError
from vigil.http.errors import clean_errors, error_responses, install_error_handlers
from vigil.http.request_id import RequestId
from vigil.observability.logging import get_logger
from vigil.remediation.metrics import UNKNOWN_ACTION, RemediatorMetrics
from vigil.remediation.service import InProgress, Remediator, Run
from vigil.remediation.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureInvalid,
    verify,
)
from vigil.remediation.wire import RemediateRequest, RemediateResult
from vigil.settings import Settings

log = get_logger(__name__)

SERVICE = "vigil-remediator"
MAX_BODY_BYTES = 1024 * 1024


class RemediatorNotConfigured(VigilError):
    """The remediator cannot start with these settings (the message names the setting)."""


class HealthOut(BaseModel):
    status: str
    service: str
    version: str


class InProgressOut(BaseModel):
    status: str = "in_progress"


def create_remediator_app(
    settings: Settings,
    *,
    run: Run | None = None,
    database: Database | None = None,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """A remediator app. Its lifespan migrates the database (if ``settings.auto_migrate``)
    and, unless ``run`` is given, loads the remediations file and the plugins.

    Raises :class:`RemediatorNotConfigured` when ``VIGIL_REMEDIATOR_SECRET`` is not set.
    """
    if settings.remediator_secret is None:
        raise RemediatorNotConfigured(
            "VIGIL_REMEDIATOR_SECRET is not set: the remediator only accepts requests signed "
            "with the secret it shares with the workers"
        )
    secret = settings.remediator_secret.get_secret_value().encode()
    clock = clock or SystemClock()
    metrics = RemediatorMetrics(registry)
    Info("vigil_build", "Vigil build information.", registry=metrics.registry).info(
        {"version": vigil.__version__}
    )
    owns_database = database is None
    db = database or Database(create_engine(settings), write_wait=settings.db_busy_timeout_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            if settings.auto_migrate:
                async with startup_lock(db):
                    await upgrade(db)
            runner, timeout_for = (
                _real_runner(settings, clock) if run is None else (run, _default_timeout(settings))
            )
            app.state.remediator = Remediator(
                database=db, clock=clock, run=runner, timeout_for=timeout_for, metrics=metrics
            )
            log.info("remediator.ready", owner=app.state.remediator.owner)
            yield
        finally:
            if owns_database:
                await db.dispose()

    app = FastAPI(
        title="Vigil remediator",
        version=vigil.__version__,
        summary="Runs remediations for Vigil's workers, each attempt at most once",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(RequestId)

    @app.get("/health", response_model=HealthOut, tags=["health"])
    async def health() -> HealthOut:
        """Liveness only: the process answers."""
        return HealthOut(status="healthy", service=SERVICE, version=vigil.__version__)

    @app.get(
        "/metrics",
        response_class=Response,
        tags=["health"],
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    )
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition of this remediator's metrics."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/remediate",
        response_model=RemediateResult,
        tags=["remediation"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": RemediateRequest.model_json_schema()}},
            },
            "parameters": [
                {"name": TIMESTAMP_HEADER, "in": "header", "required": True},
                {"name": SIGNATURE_HEADER, "in": "header", "required": True},
            ],
        },
        responses={
            401: {"description": "Unsigned, badly signed or stale request"},
            409: {"model": InProgressOut, "description": "This key is still running"},
            **error_responses(413, 422, 503),
        },
    )
    async def remediate(request: Request) -> Response:
        """Run one attempt of a remediation, or answer from the record of an earlier one."""
        checked = await _checked_request(request, secret=secret, clock=clock, metrics=metrics)
        if isinstance(checked, Response):
            return checked
        remediator: Remediator = request.app.state.remediator
        return _answer(checked, await remediator.remediate(checked))

    return app


async def _checked_request(
    request: Request, *, secret: bytes, clock: Clock, metrics: RemediatorMetrics
) -> RemediateRequest | Response:
    """The request a body asks for, or the answer refusing it: 413 (raised), 401 or 422."""
    try:
        body = await _read_body(request, MAX_BODY_BYTES)
    except PayloadTooLarge:
        metrics.count(UNKNOWN_ACTION, "rejected")
        raise
    try:
        verify(
            secret,
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            body,
            now=clock.now().timestamp(),
        )
    except SignatureInvalid as exc:
        metrics.count(UNKNOWN_ACTION, "rejected")
        client = request.client.host if request.client else None
        log.warning("remediation.refused", reason=exc.reason, client=client)
        return JSONResponse({"detail": exc.message}, status_code=401)
    try:
        return RemediateRequest.model_validate_json(body)
    except ValidationError as exc:
        metrics.count(UNKNOWN_ACTION, "rejected")
        return JSONResponse(
            {"detail": clean_errors(exc.errors(include_input=False))}, status_code=422
        )


def _answer(request: RemediateRequest, outcome: RemediateResult | InProgress) -> Response:
    """200 with the result, or 409 while the same key is still running."""
    if isinstance(outcome, InProgress):
        log.info("remediation.in_progress", action_id=request.action_id, attempt=request.attempt)
        return JSONResponse(InProgressOut().model_dump(), status_code=409)
    log.info(
        "remediation.answered",
        action_id=request.action_id,
        attempt=request.attempt,
        action=request.action,
        target=request.target,
        status=outcome.status,
    )
    return JSONResponse(outcome.model_dump(mode="json"))


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(_too_large(int(declared), limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(_too_large(size, limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> str:
    return f"request body of {size} bytes is above the limit of {limit} bytes"


def _default_timeout(settings: Settings) -> Callable[[RemediateRequest], float]:
    return lambda _request: settings.remediator_timeout_seconds


def _real_runner(
    settings: Settings, clock: Clock
) -> tuple[Run, Callable[[RemediateRequest], float]]:
    """The plugins behind the remediations file, and each request's timeout from it."""
    # Imported here so an app given its own ``run`` (tests) does not load plugins.
    from vigil.remediation.config import load_remediations
    from vigil.remediation.execute import runner_for
    from vigil.remediation.registry import load_plugins

    plugins = load_plugins()
    remediations = load_remediations(settings.remediations_file, plugins=plugins)
    log.info(
        "remediations.loaded", source=str(remediations.source), entries=len(remediations.entries)
    )
    return runner_for(
        remediations, plugins, clock, default_timeout=settings.remediator_timeout_seconds
    )
