"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import vigil
from vigil.access.roles import OPEN, OPEN_PATHS, permission_of
from vigil.alerts.schemas import WebhookIn
from vigil.api.middleware import (
    MACHINE_BODIES,
    SECURITY_HEADERS,
    STATE_CHANGING,
    Auth,
    CrossSite,
)
from vigil.api.routes import (
    actions,
    alerts,
    audit,
    automation,
    decisions,
    health,
    ingest,
    keys,
    notifications,
    otlp,
    policies,
    queue,
    remote_write,
    silences,
    simulator,
    slack,
)
from vigil.container import Container, build_container
from vigil.http.errors import install_error_handlers
from vigil.http.request_id import RequestId
from vigil.ingest.schemas import BatchIn, Limits, MetricIn
from vigil.settings import Settings
from vigil.strict import REQUEST_HEADER


def create_app(
    settings: Settings,
    container: Container | None = None,
    *,
    run_runner: bool = True,
    run_worker: bool = False,
) -> FastAPI:
    """A Vigil API app. Its components (the background runner, and with ``run_worker`` an
    in-process worker and reconciler) start with the app's lifespan and stop with it."""
    components = container or build_container(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await components.start(run_runner=run_runner, run_worker=run_worker)
        try:
            yield
        finally:
            await components.stop()

    app = FastAPI(
        title="Vigil",
        version=vigil.__version__,
        summary="A self-healing control plane",
        lifespan=lifespan,
    )
    app.state.container = components
    install_error_handlers(app)
    # Not FastAPI's max_body_size: its 413 is plain text, and replaces any answer (even a
    # JSON one) to a request whose Content-Length is over the limit. Added before CORS so
    # that a 413 still carries the CORS headers a browser needs to read it.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Routes are matched in order: ingest, by far the most frequent request, goes first.
    routers = (
        ingest.router,
        otlp.router,
        alerts.router,
        remote_write.router,
        health.router,
        policies.router,
        actions.router,
        queue.router,
        automation.router,
        silences.router,
        decisions.router,
        notifications.router,
        audit.router,
        keys.router,
        slack.router,
        simulator.router,
        simulator.ui_router,
    )
    # Inside CORS, so that a browser's preflight (which carries no key) is answered. Auth
    # matches the routers' own routes (their paths carry the prefixes), in the same order,
    # after FastAPI's own (/openapi.json, /docs, /redoc: readers' too, like every GET).
    routes = [*app.router.routes, *(route for router in routers for route in router.routes)]
    app.add_middleware(
        Auth, guard=components.keys, routes=routes, metrics_auth=settings.metrics_auth
    )
    # Before Auth, so a cross-site request is refused without a key lookup; inside RequestId,
    # so the refusal has a request id and is counted.
    app.add_middleware(CrossSite, hosts=settings.served_hosts, routes=routes)
    app.add_middleware(RequestId, headers=SECURITY_HEADERS, metrics=components.metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    for router in routers:
        app.include_router(router)
    _document_raw_bodies(app, components.limits, settings.metrics_auth)
    return app


class BodySizeLimit:
    """Refuse request bodies above ``max_bytes`` with a JSON 413 (``{"detail": ...}``).

    A Content-Length above the limit is refused before any of the body is read. A body
    without one (chunked) is counted as it arrives and refused once it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = _content_length(headers)
        if declared is not None and declared > self.max_bytes:
            response = JSONResponse({"detail": self._detail(declared)}, status_code=413)
            await response(scope, receive, send)
            return
        if declared is not None and "transfer-encoding" not in headers:
            # The server reads exactly Content-Length bytes as this request's body.
            await self.app(scope, receive, send)
            return
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException, so FastAPI's own body parsing lets it through
                    # (it turns other errors into a 400) and its handler answers JSON.
                    raise HTTPException(413, detail=self._detail(received))
            return message

        await self.app(scope, receive_limited, send)

    def _detail(self, size: int) -> str:
        return f"request body of {size} bytes is above the limit of {self.max_bytes} bytes"


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _document_raw_bodies(app: FastAPI, limits: Limits, metrics_auth: bool) -> None:
    """Ingest routes parse their own bodies; put their schemas into the OpenAPI document,
    with the configured tag limits (checked by the routes, not by the model). Every route
    that needs a key says so: 401 without a valid one, 403 with a key of another role."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (MetricIn, BatchIn, WebhookIn):
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(definition.pop("$defs", {}))
                schemas[model.__name__] = definition
            schemas["MetricIn"]["properties"]["tags"].update(
                maxProperties=limits.max_tags,
                propertyNames={"minLength": 1, "maxLength": limits.max_tag_key_length},
                additionalProperties={"type": "string", "maxLength": limits.max_tag_value_length},
            )
            _document_access(schema, metrics_auth)
            _document_cross_site(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_cross_site(schema: dict[str, Any]) -> None:
    """The answers of :class:`~vigil.api.middleware.CrossSite`, on the operations it gives."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if path not in OPEN_PATHS:
                _add_answer(responses, "400", "A Host this Vigil does not serve", error)
            if method.upper() not in STATE_CHANGING:
                continue
            refused = f"neither a JSON body nor a custom header such as '{REQUEST_HEADER}: 1'"
            if path in MACHINE_BODIES:  # a machine protocol's body: the route documents it
                _add_answer(responses, "415", "A body in another media type", error)
                refused = f"neither a body nor a custom header such as '{REQUEST_HEADER}: 1'"
            else:
                responses["415"] = {"description": "A body that is not JSON", **error}
            _add_answer(responses, "403", refused.capitalize(), error)


def _add_answer(
    responses: dict[str, Any], status: str, description: str, error: dict[str, Any]
) -> None:
    """Document ``status`` with ``description``, after the route's own reason for it."""
    if status in responses:
        responses[status]["description"] += f"; or {description[0].lower()}{description[1:]}"
    else:
        responses[status] = {"description": description, **error}


def _document_access(schema: dict[str, Any], metrics_auth: bool) -> None:
    error = {"$ref": "#/components/schemas/ErrorOut"}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            allowed = permission_of(method.upper(), path, metrics_auth=metrics_auth)
            if allowed is OPEN:
                continue
            roles = ", ".join(sorted(role.value for role in allowed))
            responses = operation.setdefault("responses", {})
            responses["401"] = {
                "description": "No valid API key (when access control is on)",
                "content": {"application/json": {"schema": error}},
            }
            responses["403"] = {
                "description": f"The key's role may not do this (allowed: {roles})",
                "content": {"application/json": {"schema": error}},
            }
            operation.setdefault("security", [{"ApiKey": []}, {"Bearer": []}])
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["ApiKey"] = {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    schemes["Bearer"] = {"type": "http", "scheme": "bearer"}
