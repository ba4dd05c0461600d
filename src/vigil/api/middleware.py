"""The API's own ASGI middleware: the cross-site and host checks, access control, and its
security headers (the request id middleware both apps share is :mod:`vigil.http.request_id`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from vigil.access.keys import Caller, KeyGuard
from vigil.access.roles import OPEN, OPEN_PATHS, READ, Role, permission_of
from vigil.db.engine import is_unavailable
from vigil.errors import Unavailable
from vigil.http.errors import unavailable_response
from vigil.strict import REQUEST_HEADER

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CUSTOM_HEADERS = frozenset({b"x-vigil-request", b"authorization", b"x-api-key"})
"""Answered whatever the ``Host``: probes call them by address, and they reveal nothing."""

MACHINE_BODIES: Mapping[str, frozenset[bytes]] = {
    "/api/v1/write": frozenset({b"application/x-protobuf"}),  # Prometheus remote write
    "/v1/metrics": frozenset({b"application/x-protobuf"}),  # OTLP/HTTP
    # Slack's button clicks: a form, as Slack sends it.
    "/api/v1/integrations/slack/interactions": frozenset({b"application/x-www-form-urlencoded"}),
}
"""The paths machine protocols post to, each with the media types it takes besides JSON.

Safe to let through: a web page can make a browser send a cross-site request without a
CORS preflight only with a "simple" ``Content-Type`` (``text/plain``, a form's
``application/x-www-form-urlencoded`` or ``multipart/form-data``) and no custom header. A
page's ``fetch`` with ``application/x-protobuf`` (like one with ``application/json``, which
every path takes) needs the preflight, which only ``CORS_ORIGINS`` pass; a form cannot
choose that type, and ``navigator.sendBeacon`` refuses it. So these types only ever come
from clients outside a browser (an OpenTelemetry exporter, Prometheus), or from the origins
the operator allowed.

Slack's interactivity requests are a form, which any web page can make a browser send: that
path acts only on a request signed with a slack channel's signing secret
(:data:`~vigil.access.roles.SIGNED_PATHS`), which no web page has."""


class CrossSite:
    """Refuse what a web page the operator visits could make the browser send, which matters
    most while no API key is needed (``VIGIL_AUTH=off``, or ``auto`` before the first key):

    - a ``Host`` Vigil does not serve (``hosts``; ``*`` allows any): 400. A page whose name
      resolves to Vigil's address (DNS rebinding) carries its own name;
    - a state-changing request (POST, PUT, PATCH, DELETE) whose body is not JSON (nor, on
      a path of :data:`MACHINE_BODIES`, of a type that path takes): 415;
    - a state-changing request with neither a JSON ``Content-Type`` nor a custom header
      (:data:`REQUEST_HEADER`, ``Authorization``, ``X-API-Key``): 403.

    What is left needs a CORS preflight, which the browser only passes for the origins in
    ``CORS_ORIGINS``: no "simple request" (``text/plain``, a form, or no body and no custom
    header) reaches a route that changes anything.
    """

    def __init__(self, app: ASGIApp, *, hosts: Sequence[str], routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        self.any_host = "*" in hosts
        self.hosts = frozenset(h for h in hosts if not h.startswith("*"))
        self.domains = tuple(h[1:] for h in hosts if h.startswith("*."))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host, content_type, has_body, custom = _looked_at(scope["headers"])
        refusal = self._host_refusal(host, scope["path"])
        if refusal is None and scope["method"] in STATE_CHANGING:
            accepted = MACHINE_BODIES.get(scope["path"], frozenset())
            refusal = _body_refusal(content_type, has_body, custom, accepted)
            # Routes are matched only for a request about to be refused (a JSON one, the
            # usual case, never pays for it): one no route answers gets its 404 or 405.
            if refusal is not None and not self._routed(scope):
                refusal = None
        if refusal is not None:
            status, detail = refusal
            await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _routed(self, scope: Scope) -> bool:
        """Whether a route answers this method on this path (else a 404 or 405 follows).
        The route goes into the scope, so a refusal is counted under its template."""
        for route in self.routes:
            if route.matches(scope)[0] is Match.FULL:
                scope["route"] = route
                return True
        return False

    def _host_refusal(self, host: bytes, path: str) -> tuple[int, str] | None:
        if self.any_host or path in OPEN_PATHS:
            return None
        name = _host_name(host.decode("latin-1"))
        if name in self.hosts or (name and name.endswith(self.domains)):
            return None
        shown = name[:100] if name else "(none)"
        return 400, (
            f"host {shown!r} is not one this Vigil serves; add it to VIGIL_ALLOWED_HOSTS "
            "(a name that resolves to Vigil is not enough: it could be a DNS rebinding page's)"
        )


def _looked_at(headers: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, bytes, bool, bool]:
    """What the cross-site checks read of a request's headers: its ``Host``, its
    ``Content-Type``, whether it has a body, and whether it carries a custom header."""
    host = content_type = b""
    has_body = custom = False
    for name, value in headers:
        if name == b"host":
            host = value
        elif name == b"content-type":
            content_type = value
        elif name == b"content-length":
            has_body = has_body or value.strip() not in (b"", b"0")
        elif name == b"transfer-encoding":
            has_body = True
        elif name in _CUSTOM_HEADERS:
            custom = True
    return host, content_type, has_body, custom


def _host_name(host: str) -> str:
    """The name in a ``Host`` header: lower case, without the port."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        end = host.find("]")
        return host[: end + 1] if end > 0 else ""
    return host.partition(":")[0]


def is_json(content_type: bytes) -> bool:
    """Whether a ``Content-Type`` is JSON (``application/json``, ``application/*+json``)."""
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


def _body_refusal(
    content_type: bytes, has_body: bool, custom: bool, accepted: frozenset[bytes]
) -> tuple[int, str] | None:
    if content_type and not is_json(content_type):
        media = content_type.partition(b";")[0].strip().lower()
        if media in accepted:
            return None
        shown = media.decode("latin-1")[:100]
        if accepted:
            wanted = ", ".join(["application/json", *sorted(m.decode() for m in accepted)])
            return 415, f"the body's Content-Type must be one of {wanted}, not {shown!r}"
        return 415, f"the body must be JSON (Content-Type: application/json), not {shown!r}"
    if content_type:
        return None
    if has_body:
        return 415, "the body must be JSON: send it with Content-Type: application/json"
    if custom:
        return None
    return 403, (
        f"a request that changes something needs a JSON body or the header "
        f"'{REQUEST_HEADER}: 1' (or an API key header), so that no other web page can send it"
    )


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
        needed = await self._needed()
        if needed is False:
            await self.app(scope, receive, send)
            return
        allowed = self._permission(scope)
        if allowed is None or allowed is OPEN:
            await self.app(scope, receive, send)
            return
        key = _key_of(Headers(scope=scope))
        caller = None
        if needed and key:
            try:
                caller = await self.guard.caller(key)
            except Exception as exc:
                _raise_unless_unavailable(exc)
                needed = None
        if needed is None:
            await unavailable_response()(scope, receive, send)
            return
        refusal = _refusal(key, caller, allowed)
        if refusal is not None:
            await _refuse(scope, receive, send, *refusal)
            return
        assert caller is not None
        scope.setdefault("state", {})["actor"] = caller.name
        await self.app(scope, receive, send)

    async def _needed(self) -> bool | None:
        """Whether API keys are needed; None when the database cannot say."""
        try:
            return await self.guard.required()
        except Exception as exc:
            _raise_unless_unavailable(exc)
            return None


def _raise_unless_unavailable(exc: Exception) -> None:
    if not (isinstance(exc, Unavailable) or is_unavailable(exc)):
        raise exc


def _refusal(key: str, caller: Caller | None, allowed: frozenset[Role]) -> tuple[int, str] | None:
    """Why a request with ``key`` (whose caller is ``caller``) may not use a route that
    ``allowed`` roles may, if it may not."""
    if not key:
        return (
            401,
            "an API key is needed: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
        )
    if caller is None:
        return 401, "the API key is not valid (or revoked)"
    if caller.role not in allowed:
        needs = " or ".join(sorted(r.value for r in allowed))
        return 403, f"key {caller.name!r} has role {caller.role.value}; this needs {needs}"
    return None


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
