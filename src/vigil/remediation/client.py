"""The workers' side of the remediator service: signed requests to ``POST /v1/remediate``.

:class:`RemoteExecutor` is the :class:`~vigil.remediation.service.Executor` used when
``VIGIL_REMEDIATOR_URL`` is set. Its contract: ``execute`` always returns a
:class:`RemediateResult` and never raises (cancellation aside).

- The remediator's own answer (success, or a plugin's failure) is returned as it is.
- 409 ``in_progress``: the same key is asked again every ``poll_interval`` seconds, signed
  afresh each time, until the deadline (the request's timeout + the remediator's expiry
  grace + ``margin``, after which the remediator itself answers an orphaned run as
  interrupted). Still running then: ``failed``, retryable, ``details.reason`` =
  ``in_progress`` -- the same key may be asked again later.
- The request may have reached the remediator but no answer came back (read timeout,
  connection dropped): the same key is asked again, which is safe, until the deadline;
  then ``failed``, retryable, reason ``no_answer``.
- It never reached the remediator (connection refused, DNS, connect timeout): ``failed``,
  retryable, reason ``unreachable``. A 5xx: ``failed``, retryable, reason ``server_error``.
- 401: ``failed``, *not* retryable, reason ``unauthorized``: the signature was refused (the
  secrets differ, or the clocks are more than five minutes apart); retrying cannot help
  until someone fixes the configuration. Any other 4xx (an invalid request, a key reused
  for another action): ``failed``, not retryable, reason ``rejected``.

Results made here (not by the remediator) carry ``details.reason`` and, for HTTP errors,
``details.http_status``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr, ValidationError

from vigil.clock import Clock, SystemClock
from vigil.observability.logging import get_logger, request_id_header
from vigil.remediation.service import (
    EXPIRY_GRACE_SECONDS,
    Executor,
    failure,
    still_running,
)
from vigil.remediation.signing import signed_headers
from vigil.remediation.wire import RemediateRequest, RemediateResult
from vigil.settings import Settings

log = get_logger(__name__)

PATH = "/v1/remediate"
CONNECT_TIMEOUT_SECONDS = 5.0

# Errors after which the request cannot have reached the remediator.
_NEVER_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)


class RemoteExecutor(Executor):
    """Runs remediations at a remediator service; see the module docstring for the contract."""

    def __init__(
        self,
        *,
        url: str,
        secret: SecretStr | str,
        timeout_for: Callable[[RemediateRequest], float],
        clock: Clock | None = None,
        poll_interval: float = 0.25,
        margin: float = 5.0,
        grace: float = EXPIRY_GRACE_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        self._secret = raw.encode()
        self._timeout_for = timeout_for
        self._clock = clock or SystemClock()
        self._poll = poll_interval
        self._margin = margin
        self._grace = grace
        self._client = httpx.AsyncClient(base_url=url, transport=transport)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        timeout_for: Callable[[RemediateRequest], float] | None = None,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> RemoteExecutor:
        """The executor for ``VIGIL_REMEDIATOR_URL`` and ``VIGIL_REMEDIATOR_SECRET``;
        ``timeout_for`` defaults to ``VIGIL_REMEDIATOR_TIMEOUT_SECONDS`` for every request."""
        if settings.remediator_url is None or settings.remediator_secret is None:
            raise ValueError("VIGIL_REMEDIATOR_URL and VIGIL_REMEDIATOR_SECRET must both be set")
        default = settings.remediator_timeout_seconds
        return cls(
            url=settings.remediator_url,
            secret=settings.remediator_secret,
            timeout_for=timeout_for or (lambda _request: default),
            clock=clock,
            transport=transport,
        )

    async def execute(self, request: RemediateRequest) -> RemediateResult:
        """The attempt's result; never raises (see the module docstring)."""
        body = request.model_dump_json().encode()
        timeout = self._timeout_for(request)
        waited_from = time.monotonic()
        deadline = waited_from + timeout + self._grace + self._margin
        # The remediator answers when the plugin is done, within its timeout.
        http_timeout = httpx.Timeout(timeout + self._margin, connect=CONNECT_TIMEOUT_SECONDS)
        while True:
            headers = {
                "content-type": "application/json",
                **signed_headers(self._secret, body, self._clock.now().timestamp()),
                **request_id_header(),
            }
            try:
                response = await self._client.post(
                    PATH, content=body, headers=headers, timeout=http_timeout
                )
            except _NEVER_SENT as exc:
                return self._failed(
                    request, f"remediator unreachable: {_describe(exc)}", "unreachable"
                )
            except httpx.TransportError as exc:
                # It may be running there: asking again with the same key is safe.
                if time.monotonic() + self._poll >= deadline:
                    return self._failed(
                        request, f"no answer from the remediator: {_describe(exc)}", "no_answer"
                    )
                log.info(
                    "remediator.no_answer_retrying",
                    action_id=request.action_id,
                    attempt=request.attempt,
                    error=_describe(exc),
                )
            else:
                if response.status_code >= 500 and time.monotonic() + self._poll < deadline:
                    # The remediator (or its database) failed, perhaps after the change was
                    # made: only the same key can learn that, so ask again with it.
                    log.info(
                        "remediator.error_retrying",
                        status=response.status_code,
                        action_id=request.action_id,
                        attempt=request.attempt,
                    )
                    await asyncio.sleep(self._poll)
                    continue
                if response.status_code != 409:
                    return self._answer(request, response)
                if time.monotonic() + self._poll >= deadline:
                    result = still_running(request, time.monotonic() - waited_from)
                    log.warning(
                        "remediator.still_running",
                        action_id=request.action_id,
                        attempt=request.attempt,
                    )
                    return result
            await asyncio.sleep(self._poll)

    def _answer(self, request: RemediateRequest, response: httpx.Response) -> RemediateResult:
        status = response.status_code
        if status == 200:
            try:
                return RemediateResult.model_validate_json(response.content)
            except ValidationError:
                return self._failed(
                    request, "the remediator's answer is not a remediation result", "bad_response"
                )
        detail = _detail(response)
        if status == 401:
            return self._failed(
                request,
                f"the remediator refused the request signature ({detail}): check that "
                "VIGIL_REMEDIATOR_SECRET is the same for workers and the remediator and "
                "that their clocks agree",
                "unauthorized",
                status=status,
                retryable=False,
            )
        if status >= 500:
            return self._failed(
                request, f"remediator error {status}: {detail}", "server_error", status=status
            )
        return self._failed(
            request,
            f"the remediator refused the request ({status}): {detail}",
            "rejected",
            status=status,
            retryable=False,
        )

    def _failed(
        self,
        request: RemediateRequest,
        message: str,
        reason: str,
        *,
        status: int | None = None,
        retryable: bool = True,
    ) -> RemediateResult:
        log.warning(
            "remediation.not_run",
            action_id=request.action_id,
            attempt=request.attempt,
            reason=reason,
            error=message,
        )
        result = failure(message, reason=reason, retryable=retryable)
        if status is not None:
            result.details["http_status"] = status
        return result

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _detail(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return str(detail)[:500]


def _describe(exc: httpx.HTTPError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
