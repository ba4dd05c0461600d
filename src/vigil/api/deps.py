"""Dependencies, declared once as ``Annotated`` aliases and used as parameter types."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import orjson
from fastapi import Depends, Query, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from vigil.container import Container
from vigil.observability.audit import ANONYMOUS, Actor

# Dependencies are ``async def`` although they never await: FastAPI runs a plain ``def``
# dependency in a worker thread, a thread hop per dependency per request (~25% of the
# single-metric ingest time in bench/ingest.py).


# The ingest routes call ``container_of`` and ``actor_of`` directly instead: resolving
# dependencies is ~15% of a single-metric ingest request's CPU.


def container_of(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def actor_of(request: Request) -> Actor:
    """Who is asking (the API key's name, ``anonymous`` while none is needed) and the
    request id the RequestId middleware gave the request."""
    name = getattr(request.state, "actor", None) or ANONYMOUS
    return Actor(name, request.state.request_id)


async def get_container(request: Request) -> Container:
    return container_of(request)


async def get_actor(request: Request) -> Actor:
    return actor_of(request)


ContainerDep = Annotated[Container, Depends(get_container)]
ActorDep = Annotated[Actor, Depends(get_actor)]


class _StrictJsonRequest(Request):
    """Parses JSON bodies with orjson, which refuses NaN and Infinity (not JSON)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class VigilRoute(APIRoute):
    """Routes whose JSON bodies are parsed strictly."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict_handler


def json_response(payload: Any, status_code: int = 200) -> Response:
    """A JSON response serialised with orjson (datetimes as RFC 3339)."""
    return Response(orjson.dumps(payload), status_code=status_code, media_type="application/json")


Page = Annotated[int, Query(ge=1, le=1_000_000)]
"""The page a list route returns (from 1)."""
Limit = Annotated[int, Query(ge=1, le=500)]
"""How many items a page of a list route holds."""


def page_out(
    key: str, items: Sequence[Any], *, total: int, page: int, limit: int
) -> dict[str, Any]:
    """A list route's answer: ``{"count", "total", "page", "page_size", key: items}``."""
    return {"count": len(items), "total": total, "page": page, "page_size": limit, key: items}
