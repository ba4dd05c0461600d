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
- A request that may have reached the remediator but got no answer (read timeout,
  connection dropped -- the remediator may have died while running it): the same key is
  asked again, which is safe. From then on *every* failure to reach the remediator
  (connection refused while it restarts, say) keeps this attempt and asks again, until the
  deadline of the last request that may have reached it: until then the change may still
  be running on the host, and the next attempt must not start beside it. Then ``failed``,
  retryable, reason ``no_answer``.
- The first request of the call never reached the remediator (connection refused, DNS,
  connect timeout) and nothing was sent before: ``failed``, retryable, reason
  ``unreachable`` (:data:`~vigil.remediation.service.UNREACHABLE`). A 5xx that lasts:
  ``failed``, retryable, reason ``server_error``. No request is sent after the first
  deadline; when the call then waits out a later one, it reports what the remediator
  answered last (``server_error``, ``in_progress``), or ``no_answer`` if it did not.
- 401: ``failed``, *not* retryable, reason ``unauthorized``: the signature was refused (the
  secrets differ, or the clocks are more than five minutes apart); retrying cannot help
  until someone fixes the configuration. Any other 4xx (an invalid request, a key reused
  for another action): ``failed``, not retryable, reason ``rejected``.

Results made here (not by the remediator) carry ``details.reason`` and, for HTTP errors,
``details.http_status``. Whether an earlier call for the same key (a worker that died) may
have reached the remediator is the worker's to know: see :mod:`vigil.worker.worker`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr, ValidationError

from vigil.clock import Clock, SystemClock
from vigil.observability.logging import get_logger, request_id_header
from vigil.remediation.service import (
    EXPIRY_GRACE_SECONDS,
    UNREACHABLE,
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


@dataclass(slots=True)
class _Call:
    """What one ``execute`` call knows: whether a request of it may have reached the
    remediator (from then on the attempt is never given up as "not sent" before the
    deadline), and the deadline -- ``lifetime`` (the timeout, the remediator's expiry grace
    and a margin) after the last request that may have claimed the key there."""

    lifetime: float
    started: float
    deadline: float = field(init=False)
    sending_ends: float = field(init=False)
    """No request is sent after the first deadline: a remediator that never answers (or a
    proxy that drops every request) ends the call within two lifetimes, not never."""
    reached: bool = False
    last_answer: httpx.Response | None = None
    """The remediator's answer to the last request, when it answered (a 5xx or a 409)."""
    warned: bool = False  # about keeping the attempt while the remediator is unreachable

    def __post_init__(self) -> None:
        self.deadline = self.sending_ends = self.started + self.lifetime

    def may_have_reached(self, sent_at: float) -> None:
        self.reached = True
        self.deadline = max(self.deadline, sent_at + self.lifetime)


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
        call = _Call(lifetime=timeout + self._grace + self._margin, started=time.monotonic())
        # The remediator answers when the plugin is done, within its timeout.
        http_timeout = httpx.Timeout(timeout + self._margin, connect=CONNECT_TIMEOUT_SECONDS)
        while True:
            if time.monotonic() >= call.sending_ends:
                return await self._wait_out(request, call)
            headers = {
                "content-type": "application/json",
                **signed_headers(self._secret, body, self._clock.now().timestamp()),
                **request_id_header(),
            }
            sent_at = time.monotonic()
            outcome: RemediateResult | float
            try:
                response = await self._client.post(
                    PATH, content=body, headers=headers, timeout=http_timeout
                )
            except _NEVER_SENT as exc:
                call.last_answer = None
                outcome = self._refused(request, call, exc)
            except httpx.TransportError as exc:
                call.last_answer = None
                outcome = self._unanswered(request, call, exc, sent_at)
            else:
                call.last_answer = response
                outcome = self._answered(request, call, response)
            if isinstance(outcome, RemediateResult):
                return outcome
            await asyncio.sleep(outcome)

    async def _wait_out(self, request: RemediateRequest, call: _Call) -> RemediateResult:
        """Past the first deadline nothing more is sent: wait until the last request that
        may have reached the remediator is past its own, then give the attempt up -- with
        what the remediator last answered, when it answered the last request."""
        await asyncio.sleep(max(0.0, call.deadline - time.monotonic()))
        last = call.last_answer
        if last is not None and last.status_code == 409:
            return still_running(request, time.monotonic() - call.started)
        if last is not None:
            return self._answer(request, last)
        return self._failed(
            request,
            "no answer from the remediator before the attempt's deadline; a request may have "
            "reached it, and its deadline has passed",
            "no_answer",
        )

    def _refused(
        self, request: RemediateRequest, call: _Call, exc: httpx.HTTPError
    ) -> RemediateResult | float:
        """This request never reached the remediator: the result, or how long to wait
        before asking again."""
        if not call.reached:
            return self._failed(request, f"remediator unreachable: {_describe(exc)}", UNREACHABLE)
        # An earlier request may be running there: not a moment before its deadline may
        # the next attempt start.
        remaining = call.deadline - time.monotonic()
        if remaining <= 0:
            return self._failed(
                request,
                f"no answer from the remediator: {_describe(exc)}; an earlier request may "
                "have reached it, and its deadline has passed",
                "no_answer",
            )
        if not call.warned:
            call.warned = True
            log.warning(
                "remediator.unreachable_keeping_attempt",
                action_id=request.action_id,
                attempt=request.attempt,
                error=_describe(exc),
                deadline_in=round(remaining, 1),
            )
        return min(self._poll, remaining)

    def _unanswered(
        self, request: RemediateRequest, call: _Call, exc: httpx.HTTPError, sent_at: float
    ) -> RemediateResult | float:
        """This request may have reached the remediator, which may have died running it:
        asking again with the same key is safe, and its deadline counts from this request,
        which may be the one that claimed the key."""
        call.may_have_reached(sent_at)
        if time.monotonic() + self._poll >= call.deadline:
            return self._failed(
                request, f"no answer from the remediator: {_describe(exc)}", "no_answer"
            )
        log.info(
            "remediator.no_answer_retrying",
            action_id=request.action_id,
            attempt=request.attempt,
            error=_describe(exc),
        )
        return self._poll

    def _answered(
        self, request: RemediateRequest, call: _Call, response: httpx.Response
    ) -> RemediateResult | float:
        """The remediator answered: the result, or how long to wait before asking again."""
        call.reached = True
        status = response.status_code
        time_left = time.monotonic() + self._poll < call.deadline
        if status >= 500 and time_left:
            # The remediator (or its database) failed, perhaps after the change was made:
            # only the same key can learn that, so ask again with it.
            log.info(
                "remediator.error_retrying",
                status=status,
                action_id=request.action_id,
                attempt=request.attempt,
            )
            return self._poll
        if status != 409:
            return self._answer(request, response)
        if not time_left:
            log.warning(
                "remediator.still_running", action_id=request.action_id, attempt=request.attempt
            )
            return still_running(request, time.monotonic() - call.started)
        return self._poll

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
