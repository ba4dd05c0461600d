"""The small HTTP app of ``vigil worker``: liveness and Prometheus metrics for the worker.

The worker (and the reconciler) start and stop with this app's lifespan, so uvicorn's
handling of SIGTERM drains the worker gracefully before the process exits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

import vigil
from vigil.container import Container


def create_worker_app(container: Container) -> FastAPI:
    """An app whose lifespan runs ``container``'s worker and reconciler (no API routes)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await container.start(run_runner=False, run_worker=True, run_ingest=False)
        try:
            yield
        finally:
            await container.stop()

    app = FastAPI(
        title="Vigil worker", version=vigil.__version__, lifespan=lifespan, openapi_url=None
    )
    app.state.container = container

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        """Liveness, with what the worker is doing."""
        worker = container.worker
        return {
            "status": "healthy",
            "service": "vigil-worker",
            "version": vigil.__version__,
            "worker": worker.name if worker else None,
            "active_tasks": worker.active if worker else 0,
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        await container.refresh_queue_gauges()
        return Response(generate_latest(container.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
