"""ASGI middleware shared by Vigil's HTTP apps (the API and the remediator)."""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vigil.observability.logging import bound

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
"""A request id a client may choose: short, and safe to write in a log line."""


class RequestId:
    """Give every request an id -- the client's ``X-Request-ID`` when it is a safe one, else
    a fresh one -- echo it in the response's ``X-Request-ID``, keep it in
    ``request.state.request_id`` and add it to every log line written while answering."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        with bound(request_id=request_id):
            await self.app(scope, receive, send_with_id)
