"""Error responses: every Vigil error and every validation error becomes a clear 4xx/503.

Every 503 and 429 answer carries ``Retry-After`` (:func:`error_response`): the client may
send the same request again after that many seconds.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.routing import compile_path

from vigil.db.engine import is_unavailable
from vigil.errors import VigilError
from vigil.observability.logging import get_logger

log = get_logger(__name__)


RETRY_AFTER_SECONDS = 2
"""The ``Retry-After`` of a 503 or 429: a database or Redis that went away usually answers
again within seconds, and clients retrying sooner would only add load."""

_RETRY_LATER = frozenset({429, 503})


def retry_headers(status_code: int) -> dict[str, str] | None:
    """The headers an answer with ``status_code`` carries to say when to retry: a 503 or
    429 has ``Retry-After``; others none."""
    return {"Retry-After": str(RETRY_AFTER_SECONDS)} if status_code in _RETRY_LATER else None


def error_response(detail: Any, status_code: int) -> JSONResponse:
    """The JSON answer ``{"detail": ...}`` for an error (``Retry-After`` on a 503 or 429)."""
    return JSONResponse(
        {"detail": detail}, status_code=status_code, headers=retry_headers(status_code)
    )


def unavailable_response(detail: str = "database unavailable") -> JSONResponse:
    """A 503 for a dependency that does not answer, with ``Retry-After``."""
    return error_response(detail, 503)


class ErrorOut(BaseModel):
    """The body of every error response."""

    detail: Any


_DESCRIPTIONS = {
    403: "Not allowed here (see the detail)",
    404: "No such resource",
    409: "Conflicts with the current state",
    413: "Body or batch above the configured limit",
    422: "Invalid request; `detail` names the field",
    429: "Too many requests; retry after `Retry-After` seconds",
    503: "The database (or Redis) is unavailable; retry after `Retry-After` seconds",
}

_RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before sending the request again",
        "schema": {"type": "integer"},
    }
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error codes a route can answer with."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"model": ErrorOut, "description": _DESCRIPTIONS[code]}
        if code in _RETRY_LATER:
            entry["headers"] = _RETRY_AFTER_HEADER
        out[code] = entry
    return out


def clean_errors(errors: Any) -> list[dict[str, Any]]:
    """Validation errors without the echoed input (which may hold NaN or secrets)."""
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
        for e in errors
    ]


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": clean_errors(exc.errors())}, status_code=422)


async def _vigil_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VigilError)
    return error_response(exc.detail, exc.status_code)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if is_unavailable(exc):
        return unavailable_response()
    log.error(
        "request.database_error", method=request.method, path=request.url.path, error=repr(exc)
    )
    return JSONResponse({"detail": "internal error"}, status_code=500)


async def _method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """A 405 whose ``Allow`` names every method the path has.

    Starlette answers with the methods of the first route whose path matched, so a path
    served by several routes (``GET`` and ``POST /api/v1/policies``) got ``Allow: GET``.
    """
    path = request.scope["path"]
    allowed: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        if route.path and route.methods and compile_path(route.path)[0].match(path):
            allowed.update(route.methods)
    detail = getattr(exc, "detail", None) or "Method Not Allowed"
    return JSONResponse(
        {"detail": detail}, status_code=405, headers={"Allow": ", ".join(sorted(allowed))}
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(405, _method_not_allowed)
    app.add_exception_handler(VigilError, _vigil_error)
    app.add_exception_handler(DBAPIError, _database_error)
