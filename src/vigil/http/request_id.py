"""The request id middleware, shared by the API and the remediator service."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
