"""The ``webhook`` channel: POSTs each message to a URL, as Vigil's own JSON or as the
channel's ``body_template`` renders it.

The default body is :func:`payload` (one notification) or ``{"group": ..., "notifications":
[...]}`` (a route's group). With ``body_template`` the body is that template rendered with the
event (:mod:`vigil.notify.templates`); header values are templates too. A template that fails
at send time (a missing key, a sandbox refusal) does not lose the event: the default body is
sent, with an ``X-Vigil-Template-Error`` header saying why, and a warning is logged; a header
that fails is sent as written. With ``secret`` each request is signed as the remediator's are
(:mod:`vigil.remediation.signing`): ``X-Vigil-Timestamp`` and ``X-Vigil-Signature:
sha256=<HMAC-SHA256 of "<timestamp>." + body>``.

Only the URL's scheme and host are ever logged or stored: its path or query is often its
token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

import vigil
from vigil.notify.channels.base import Message, title
from vigil.notify.channels.posting import PostingChannel, shown
from vigil.notify.config import WebhookSpec
from vigil.notify.store import Notification
from vigil.notify.templates import TemplateFailed, environment, render
from vigil.observability.logging import get_logger
from vigil.remediation.signing import signed_headers

__all__ = ["TEMPLATE_ERROR_HEADER", "WebhookChannel", "body", "context", "payload", "shown"]

TEMPLATE_ERROR_HEADER = "X-Vigil-Template-Error"
"""Set when the body template failed and the default body was sent instead: why it failed."""

log = get_logger(__name__)


def payload(record: Notification, links: Any) -> dict[str, Any]:
    """The JSON body of one notification."""
    return {
        "id": record.id,
        "event": record.event,
        "at": record.at,
        "policy": record.policy_name,
        "target": record.target,
        "action": record.action_id,
        "severity": record.severity,
        "episode": record.episode,
        "tags": record.tags or {},
        "reason": record.reason,
        "details": record.details,
        "links": links,
    }


def body(message: Message) -> dict[str, Any]:
    """The JSON body of a message: one notification's payload, or a group's."""
    items = [payload(r, message.links.get(r.id)) for r in message.notifications]
    if not message.grouped:
        return items[0]
    return {"group": {"count": len(items)}, "notifications": items}


def context(message: Message) -> dict[str, Any]:
    """What a template sees: the first event's fields (JSON values: ``at`` is ISO 8601
    text), ``notifications`` (each event's), ``count`` and ``test``."""
    items = [
        {**payload(r, message.links.get(r.id)), "title": title(r)} for r in message.notifications
    ]
    events: list[dict[str, Any]] = orjson.loads(orjson.dumps(items, option=orjson.OPT_UTC_Z))
    return {**events[0], "notifications": events, "count": len(events), "test": message.test}


class WebhookChannel(PostingChannel):
    type = "webhook"

    def __init__(
        self,
        spec: WebhookSpec,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(spec, timeout=timeout, transport=transport)
        self.spec = spec
        self._env = environment()
        self._clock = clock
        self._secret = None if spec.secret is None else spec.secret.encode()

    async def send(self, message: Message) -> dict[int, dict[str, Any]]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"vigil/{vigil.__version__}",
            "X-Vigil-Event": message.notifications[0].event,
        }
        if message.test:
            headers["X-Vigil-Test"] = "true"
        templated = self.spec.body_template is not None or any(
            "{" in v for v in self.spec.headers.values()
        )
        values = context(message) if templated else {}
        for key, text in self.spec.headers.items():
            headers[key] = self._header(key, text, values)
        content = None
        if self.spec.body_template is not None:
            try:
                content = render(self._env, self.spec.body_template, values).encode()
            except TemplateFailed as exc:
                log.warning(
                    "notify.template_failed",
                    channel=self.name,
                    part="body_template",
                    error=str(exc),
                    notifications=[r.id for r in message.notifications],
                )
                headers[TEMPLATE_ERROR_HEADER] = _header_text(str(exc))
        if content is None:
            content = orjson.dumps(body(message), option=orjson.OPT_UTC_Z)
        if self._secret is not None:
            headers.update(signed_headers(self._secret, content, self._clock()))
        answer = await self.post(content, headers)
        return {r.id: {"answer": answer} for r in message.notifications} if message.test else {}

    def _header(self, key: str, text: str, values: dict[str, Any]) -> str:
        if "{" not in text:
            return text
        try:
            return _header_text(render(self._env, text, values))
        except TemplateFailed as exc:
            log.warning("notify.template_failed", channel=self.name, part=key, error=str(exc))
            return text

    async def post(self, content: bytes, headers: dict[str, str]) -> str:
        """POST once; what the far side answered. Raises :class:`DeliveryFailed` unless it
        is a 2xx."""
        return await self._poster.post(self.spec.url, content, headers)


def _header_text(text: str) -> str:
    """``text`` fit for one header line: no line breaks or other control characters."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:1024]
