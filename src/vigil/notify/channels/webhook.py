"""The ``webhook`` channel: POSTs each notification as Vigil's own JSON to a URL.

The body is :func:`payload` (one notification) or ``{"group": ..., "notifications": [...]}``
(a route's group). Only the URL's scheme and host are ever logged or stored: its path or
query is often its token.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

import vigil
from vigil.notify.channels.base import Channel, DeliveryFailed, Message, http_failure
from vigil.notify.config import WebhookSpec
from vigil.notify.store import Notification


def shown(url: str) -> str:
    """A URL as logs and the API show it: scheme and host only (user info, path and query
    may all carry credentials)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


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


class WebhookChannel(Channel):
    type = "webhook"

    def __init__(
        self,
        spec: WebhookSpec,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self._timeout = timeout
        self._client = httpx.AsyncClient(transport=transport, timeout=timeout)

    @property
    def shown(self) -> str:
        return shown(self.spec.url)

    async def send(self, message: Message) -> dict[int, dict[str, Any]]:
        content = orjson.dumps(body(message), option=orjson.OPT_UTC_Z)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"vigil/{vigil.__version__}",
            "X-Vigil-Event": message.notifications[0].event,
            **self.spec.headers,
        }
        await self.post(content, headers)
        return {}

    async def post(self, content: bytes, headers: dict[str, str]) -> None:
        """POST once; raises :class:`DeliveryFailed` unless the answer is a 2xx."""
        url = self.spec.url
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._client.stream("POST", url, content=content, headers=headers) as response,
            ):
                if 200 <= response.status_code < 300:
                    return
                answer = b""
                async for chunk in response.aiter_bytes():
                    answer += chunk
                    if len(answer) >= 4096:
                        break
                raise http_failure(response.status_code, answer)
        except (TimeoutError, httpx.TimeoutException):
            raise DeliveryFailed(f"timed out after {self._timeout:g}s") from None
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            reason = str(exc).replace(url, self.shown) or type(exc).__name__
            raise DeliveryFailed(f"{type(exc).__name__}: {reason}") from None

    async def aclose(self) -> None:
        await self._client.aclose()
