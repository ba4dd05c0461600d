"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

import vigil
from vigil.api.errors import install_error_handlers
from vigil.api.routes import actions, health, ingest, policies
from vigil.container import Container, build_container
from vigil.ingest.schemas import BatchIn, MetricIn
from vigil.settings import Settings


def create_app(
    settings: Settings, container: Container | None = None, *, run_runner: bool = True
) -> FastAPI:
    """A Vigil API app. Its components start with the app's lifespan and stop with it."""
    components = container or build_container(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await components.start(run_runner=run_runner)
        try:
            yield
        finally:
            await components.stop()

    app = FastAPI(
        title="Vigil",
        version=vigil.__version__,
        summary="A self-healing control plane",
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )
    app.state.container = components
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.include_router(health.router)
    app.include_router(ingest.router)
    app.include_router(policies.router)
    app.include_router(actions.router)
    _document_raw_bodies(app)
    return app


def _document_raw_bodies(app: FastAPI) -> None:
    """Ingest routes parse their own bodies; put their schemas into the OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (MetricIn, BatchIn):
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(definition.pop("$defs", {}))
                schemas[model.__name__] = definition
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
