"""One HTTP POST to a channel's far side, as the ``webhook``, ``pagerduty`` and ``teams``
channels make it: bounded in time, the answer read only as far as an error needs, and every
failure a :class:`~vigil.notify.channels.base.DeliveryFailed` that never shows the URL's path
(it often is the token)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from vigil.notify.channels.base import Channel, DeliveryFailed, answer_text, http_failure
from vigil.notify.config import PagerDutySpec, TeamsSpec, WebhookSpec

ANSWER_BYTES = 4096
"""How much of an answer is read: enough for an error's text or a small JSON reply."""


NOT_HTTP_HEADER = "a request header is not valid HTTP (a line break or control character)"
"""The error of a request the HTTP library refused to send: its own text would quote the
header's value, which may be a credential."""
NOT_ASCII_HEADER = "a request header is not valid HTTP (a character that is not ASCII)"


def shown(url: str) -> str:
    """A URL as logs and the API show it: scheme and host only (user info, path and query
    may all carry credentials)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


def any_2xx(status: int) -> bool:
    return 200 <= status < 300


class Poster:
    """An HTTP client for one channel, every request within ``timeout`` seconds."""

    def __init__(self, *, timeout: float, transport: httpx.AsyncBaseTransport | None) -> None:
        self.timeout = timeout
        self._client = httpx.AsyncClient(transport=transport, timeout=timeout)

    async def post(
        self,
        url: str,
        content: bytes,
        headers: dict[str, str],
        *,
        taken: Callable[[int], bool] = any_2xx,
    ) -> str:
        """POST ``content`` once; what the far side answered (``answered 202: <the start of
        its body>``) when its status is ``taken``, else raise :class:`DeliveryFailed` with
        the status and the answer."""
        try:
            async with (
                asyncio.timeout(self.timeout),
                self._client.stream("POST", url, content=content, headers=headers) as response,
            ):
                answer = b""
                async for chunk in response.aiter_bytes():
                    answer += chunk
                    if len(answer) >= ANSWER_BYTES:
                        break
                if taken(response.status_code):
                    return answer_text(response.status_code, answer)
                raise http_failure(response.status_code, answer)
        except (TimeoutError, httpx.TimeoutException):
            raise DeliveryFailed(f"timed out after {self.timeout:g}s") from None
        except httpx.LocalProtocolError:
            # Its text quotes the offending header, value and all: that value may be a secret.
            raise DeliveryFailed(NOT_HTTP_HEADER) from None
        except UnicodeEncodeError:
            raise DeliveryFailed(NOT_ASCII_HEADER) from None
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            reason = str(exc).replace(url, shown(url)) or type(exc).__name__
            raise DeliveryFailed(f"{type(exc).__name__}: {reason}") from None

    async def aclose(self) -> None:
        await self._client.aclose()


class PostingChannel(Channel):
    """A channel that POSTs to one URL of its spec (``webhook``, ``teams``, ``pagerduty``)."""

    def __init__(
        self,
        spec: WebhookSpec | TeamsSpec | PagerDutySpec,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(spec.name)
        self._poster = Poster(timeout=timeout, transport=transport)
        self._url = spec.url

    @property
    def shown(self) -> str:
        return shown(self._url)

    async def aclose(self) -> None:
        await self._poster.aclose()
