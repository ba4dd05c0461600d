"""ASGI middleware shared by Vigil's HTTP apps (the API and the remediator)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vigil.access.keys import KeyGuard
from vigil.access.roles import OPEN, READ, Role, permission_of
from vigil.api.errors import unavailable_response
from vigil.db.engine import is_unavailable
from vigil.errors import Unavailable
from vigil.observability.logging import bound, get_logger
from vigil.observability.metrics import VigilMetrics

log = get_logger(__name__)

CLIENT_CLOSED = 499
"""The status counted for a request whose client disconnected before it could be answered."""

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
"""A request id a client may choose: short, and safe to write in a log line."""


class RequestId:
    """Give every request an id -- the client's ``X-Request-ID`` when it is a safe one, else
    a fresh one -- echo it in the response's ``X-Request-ID``, keep it in
    ``request.state.request_id`` and add it to every log line written while answering.

    One layer for everything done around each request (each layer costs every request,
    ingest's included): it also adds ``headers`` to every response, and with ``metrics``
    counts and times the request by method, route template (never the raw path, which
    would carry ids; ``unmatched`` when no route matched) and status.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
        metrics: VigilMetrics | None = None,
    ) -> None:
        self.app = app
        self.headers = list(headers)
        self.metrics = metrics
        # Label lookups cost more than the count itself: each series' child is kept.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        added = [(b"x-request-id", request_id.encode()), *self.headers]
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        try:
            with bound(request_id=request_id):
                await self.app(scope, receive, send_with_headers)
        except ClientDisconnect:
            # The client went away before its body arrived (it gave up): there is no one to
            # answer and nothing went wrong here. Counted as 499 ("client closed request",
            # as nginx says), never as a 5xx or an error line that would page someone.
            status = CLIENT_CLOSED
            log.info("http.client_disconnected", method=scope["method"], path=scope["path"])
        finally:
            if self.metrics is not None:
                self._count(scope, status, time.perf_counter() - started)

    def _count(self, scope: Scope, status: int, seconds: float) -> None:
        assert self.metrics is not None
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        key = (method, template, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.http_requests_total.labels(
                method=method, route=template, status=str(status)
            )
        counter.inc()
        timer = self._timers.get(key[:2])
        if timer is None:
            timer = self._timers[key[:2]] = self.metrics.http_request_duration_seconds.labels(
                method=method, route=template
            )
        timer.observe(seconds)


SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
"""Headers that keep browsers from sniffing, framing or caching API answers."""


class Auth:
    """API keys: a route that needs a role answers 401 without a valid key (``Authorization:
    Bearer <key>`` or ``X-API-Key: <key>``) and 403 with a key of a role it does not allow.
    The caller's key name becomes the actor of what the request changes."""

    def __init__(
        self, app: ASGIApp, *, guard: KeyGuard, routes: Sequence[BaseRoute], metrics_auth: bool
    ) -> None:
        self.app = app
        self.guard = guard
        self.routes = routes
        self.metrics_auth = metrics_auth

    def _permission(self, scope: Scope) -> frozenset[Role] | None:
        """The roles the request's route allows (None: no route matches the path). The
        matched route goes into the scope, so a refusal is counted under its template."""
        partial: BaseRoute | None = None
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                return permission_of(
                    scope["method"], getattr(route, "path", ""), metrics_auth=self.metrics_auth
                )
            if match is Match.PARTIAL and partial is None:
                partial = route
        if partial is not None:  # the path exists, not for this method: a 405 follows
            return READ
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.guard.mode == "off":
            await self.app(scope, receive, send)
            return
        # Whether keys are needed at all first (remembered, so usually no database read):
        # while none is, no route needs matching. When the database cannot say, an open
        # route (/health, /ready) still answers and any other gets 503.
        try:
            needed: bool | None = await self.guard.required()
        except Exception as exc:
            if not (isinstance(exc, Unavailable) or is_unavailable(exc)):
                raise
            needed = None
        if needed is False:
            await self.app(scope, receive, send)
            return
        allowed = self._permission(scope)
        if allowed is None or allowed is OPEN:
            await self.app(scope, receive, send)
            return
        key = _key_of(Headers(scope=scope))
        try:
            caller = await self.guard.caller(key) if needed and key else None
        except Exception as exc:
            if not (isinstance(exc, Unavailable) or is_unavailable(exc)):
                raise
            needed = None
        if needed is None:
            await unavailable_response()(scope, receive, send)
            return
        if not key:
            await _refuse(
                scope,
                receive,
                send,
                401,
                "an API key is needed: send it as 'Authorization: Bearer <key>' or"
                " 'X-API-Key: <key>'",
            )
            return
        if caller is None:
            await _refuse(scope, receive, send, 401, "the API key is not valid (or revoked)")
            return
        if caller.role not in allowed:
            needs = " or ".join(sorted(r.value for r in allowed))
            await _refuse(
                scope,
                receive,
                send,
                403,
                f"key {caller.name!r} has role {caller.role.value}; this needs {needs}",
            )
            return
        scope.setdefault("state", {})["actor"] = caller.name
        await self.app(scope, receive, send)


def _key_of(headers: Headers) -> str:
    """The API key a request carries (``X-API-Key``, or ``Authorization: Bearer``)."""
    key = headers.get("x-api-key", "")
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if not key and scheme.lower() == "bearer":
        key = credentials.strip()
    return key


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(
        scope, receive, send
    )
