"""The ``webhook`` plugin: one HTTP request to an operator-chosen URL.

Outcome by response: a success code (any 2xx unless ``success_codes`` says otherwise) is a
success; 408, 429 and 5xx, connection errors and timeouts are retryable failures; any other
code (most 4xx, an unfollowed 3xx) is a permanent failure, since repeating the same request
cannot help. Header values may hold tokens: they never appear in messages or details.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from vigil.remediation.plugins.base import (
    PluginCall,
    PluginConfigError,
    PluginFailed,
    PluginResult,
    refuse_unknown_options,
)

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
OPTIONS = frozenset({"url", "method", "headers", "body", "timeout", "success_codes"})
RETRYABLE_CODES = frozenset({408, 429})
# How much of a response body is kept in the details (and read from the wire at most).
BODY_LIMIT = 4096

_PLACEHOLDER = re.compile(r"\{[^{}]+\}")
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")


def _is_placeholder(value: object) -> bool:
    """Whether ``value`` is a string still holding a ``{...}`` placeholder."""
    return isinstance(value, str) and _PLACEHOLDER.search(value) is not None


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    """Validated options of one request.

    Before rendering, a field whose option is still a placeholder holds that raw string.
    """

    url: str
    method: str
    headers: dict[str, str]
    body: Any
    has_body: bool
    timeout: float | None
    success_codes: frozenset[int] | None


def parse_options(options: dict[str, Any], *, rendered: bool) -> WebhookSpec:
    """Validate ``options``; placeholders pass unless ``rendered`` (raises PluginConfigError)."""
    refuse_unknown_options("webhook", options, OPTIONS)

    def pending(value: object) -> bool:
        return not rendered and _is_placeholder(value)

    url = _url(options.get("url"), pending)
    method = _method(options.get("method", "POST"), pending)

    headers = options.get("headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in headers.items()
    ):
        # Name the offending header, never its value.
        raise PluginConfigError("webhook: `headers` must map header names to string values")

    timeout = options.get("timeout")
    if timeout is not None and not pending(timeout):
        timeout = _positive_number(timeout)

    codes = options.get("success_codes")
    success_codes: frozenset[int] | None = None
    if codes is not None and not pending(codes):
        if not isinstance(codes, list) or not codes:
            raise PluginConfigError("webhook: `success_codes` must be a non-empty list of codes")
        success_codes = frozenset(_status_code(code) for code in codes if not pending(code))

    body = options.get("body")
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PluginConfigError(f"webhook: `body` is not a JSON value ({exc})") from exc

    return WebhookSpec(
        url=url,
        method=method,
        headers=dict(headers),
        body=body,
        has_body="body" in options,
        timeout=timeout,
        success_codes=success_codes,
    )


def _url(url: object, pending: Callable[[object], bool]) -> str:
    if not isinstance(url, str) or not url:
        raise PluginConfigError("webhook: `url` is required (an http or https URL)")
    # A URL that is only partly a placeholder ("https://hooks/{target}") shows its scheme
    # and host already; one that starts with a placeholder is checked once rendered.
    if not (pending(url) and not _SCHEME.match(url)):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PluginConfigError("webhook: `url` must be an http or https URL")
    return url


def _method(method: object, pending: Callable[[object], bool]) -> str:
    if not isinstance(method, str):
        raise PluginConfigError("webhook: `method` must be a string")
    if pending(method):
        return method
    method = method.upper()
    if method not in METHODS:
        raise PluginConfigError(
            f"webhook: `method` must be one of {', '.join(sorted(METHODS))}, got {method!r}"
        )
    return method


def _positive_number(value: object) -> float:
    if isinstance(value, bool):
        raise PluginConfigError("webhook: `timeout` must be a number of seconds")
    try:
        number = float(value) if isinstance(value, int | float | str) else None
    except ValueError:
        number = None
    if number is None or not number > 0 or number == float("inf"):
        raise PluginConfigError(f"webhook: `timeout` must be a positive number, got {value!r}")
    return number


def _status_code(value: object) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise PluginConfigError(f"webhook: `success_codes` holds {value!r}, not an HTTP code")
    return value


class WebhookPlugin:
    """Sends one HTTP request and classifies the response."""

    name: ClassVar[str] = "webhook"

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        # ``transport`` lets an embedding test route requests; the default is the network.
        self._transport = transport

    def check(self, options: dict[str, Any]) -> None:
        """Raise PluginConfigError naming the first problem in ``options``."""
        parse_options(options, rendered=False)

    async def run(self, call: PluginCall) -> PluginResult:
        """Send the request; raise PluginFailed (retryable or not) unless it succeeded."""
        try:
            spec = parse_options(call.options, rendered=True)
        except PluginConfigError as exc:
            raise PluginFailed(str(exc), retryable=False) from exc
        timeout = min(spec.timeout, call.timeout) if spec.timeout else call.timeout
        where = f"{spec.method} {_redacted(spec.url)}"
        content, headers = None, httpx.Headers(spec.headers)
        if spec.has_body:
            content = json.dumps(spec.body, allow_nan=False).encode()
            if "content-type" not in headers:
                headers["Content-Type"] = "application/json"
        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=timeout) as client:
                request = client.build_request(
                    spec.method, spec.url, headers=headers, content=content
                )
                response = await client.send(request, stream=True)
                try:
                    raw = await _read_limited(response)
                finally:
                    await response.aclose()
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise PluginFailed(f"webhook {where}: {exc}", retryable=False) from exc
        except httpx.TimeoutException as exc:
            raise PluginFailed(f"webhook {where}: timed out after {timeout:g}s") from exc
        except httpx.HTTPError as exc:
            # Connection refused or reset, DNS, protocol errors: the endpoint may come back.
            reason = str(exc) or type(exc).__name__
            raise PluginFailed(f"webhook {where}: {reason}") from exc

        code = response.status_code
        details = {"status_code": code, "body": _decoded(raw, response)}
        succeeded = code in spec.success_codes if spec.success_codes else 200 <= code < 300
        if succeeded:
            return PluginResult(f"webhook {where} answered {code}", details)
        retryable = code in RETRYABLE_CODES or code >= 500
        raise PluginFailed(f"webhook {where} answered {code}", retryable=retryable, details=details)


async def _read_limited(response: httpx.Response) -> bytes:
    """At most BODY_LIMIT + 1 bytes of the body (the extra byte tells it was cut)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > BODY_LIMIT:
            break
    return b"".join(chunks)[: BODY_LIMIT + 1]


def _decoded(raw: bytes, response: httpx.Response) -> Any:
    """The body as JSON when it parses whole, else as (truncated) text."""
    if len(raw) <= BODY_LIMIT:
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            pass
    text = raw[:BODY_LIMIT].decode(response.encoding or "utf-8", errors="replace")
    return text + "…" if len(raw) > BODY_LIMIT else text


def _redacted(url: str) -> str:
    """``url`` as scheme and host only: user info, the query string and the path may all
    carry credentials (a Slack-style hook's token is its path)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}/…"
