"""Dependencies, declared once as ``Annotated`` aliases and used as parameter types."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.routing import APIRoute
from pydantic import AfterValidator
from starlette.responses import Response

from vigil.container import Container
from vigil.observability.audit import ANONYMOUS, Actor

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def get_actor(request: Request) -> Actor:
    """Who is asking (``anonymous`` until access control exists) and the request id."""
    given = request.headers.get("x-request-id", "")
    request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    return Actor(ANONYMOUS, request_id)


ContainerDep = Annotated[Container, Depends(get_container)]
ActorDep = Annotated[Actor, Depends(get_actor)]


def _as_utc(value: datetime) -> datetime:
    """A timestamp in UTC (naive ones are taken to be UTC); a 422 if it has no UTC form."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+05:00 is before year 1 in UTC
        raise ValueError("timestamp is out of range once converted to UTC") from exc


UtcTimestamp = Annotated[datetime, AfterValidator(_as_utc)]
"""A timestamp parameter, converted to UTC (so the database never sees an unusable one)."""


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
