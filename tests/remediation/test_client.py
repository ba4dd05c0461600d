"""RemoteExecutor against the real remediator app, and its failure contract."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from tests.remediation.test_service import FakeRun
from vigil.clock import FakeClock
from vigil.local import free_port
from vigil.remediation.app import create_remediator_app
from vigil.remediation.client import RemoteExecutor
from vigil.remediation.service import never_sent
from vigil.remediation.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER
from vigil.remediation.wire import RemediateRequest
from vigil.settings import Settings

SECRET = "x" * 32
URL = "http://remediator.test"
REQUEST = RemediateRequest(action_id=42, attempt=1, action="restart", target="web-01")


class Spy(httpx.AsyncBaseTransport):
    """Passes requests to ``inner``, keeping what went by; ``on_response`` may act on each."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        on_response: Callable[[httpx.Response], None] | None = None,
    ) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []
        self.statuses: list[int] = []
        self.on_response = on_response
        self.saw_409 = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = await self.inner.handle_async_request(request)
        self.statuses.append(response.status_code)
        if response.status_code == 409:
            self.saw_409.set()
        if self.on_response is not None:
            self.on_response(response)
        return response


@pytest.fixture
def run() -> FakeRun:
    return FakeRun()


@pytest.fixture
async def app(database_url: str, run: FakeRun, clock: FakeClock) -> AsyncIterator[FastAPI]:
    settings = Settings(database_url=database_url, remediator_secret=SECRET, db_pool_size=4)
    application = create_remediator_app(
        settings, run=run, clock=clock, registry=CollectorRegistry()
    )
    async with LifespanManager(application):
        yield application


def executor(
    transport: httpx.AsyncBaseTransport,
    clock: FakeClock,
    *,
    secret: str = SECRET,
    timeout: float = 5.0,
    **options: Any,
) -> RemoteExecutor:
    values: dict[str, Any] = {"poll_interval": 0.01, "margin": 1.0, "grace": 0.0, **options}
    return RemoteExecutor(
        url=URL,
        secret=secret,
        timeout_for=lambda _request: timeout,
        clock=clock,
        transport=transport,
        **values,
    )


async def test_signed_request_runs_and_the_repeat_is_the_record(
    app: FastAPI, run: FakeRun, clock: FakeClock
) -> None:
    spy = Spy(httpx.ASGITransport(app=app))
    remote = executor(spy, clock)
    try:
        first = await remote.execute(REQUEST)
        again = await remote.execute(REQUEST)
    finally:
        await remote.close()
    assert first.status == "success"
    assert first.message == "restarted web-01"
    assert again == first
    assert run.calls == [REQUEST]
    sent = spy.requests[0]
    assert sent.url.path == "/v1/remediate"
    assert sent.headers[TIMESTAMP_HEADER] == str(int(clock.now().timestamp()))
    assert sent.headers[SIGNATURE_HEADER].startswith("sha256=")


async def test_in_progress_is_asked_again_freshly_signed_until_done(
    database_url: str, clock: FakeClock
) -> None:
    run = FakeRun(blocking=True)
    settings = Settings(database_url=database_url, remediator_secret=SECRET, db_pool_size=4)
    application = create_remediator_app(settings, run=run, clock=clock)
    # Each 409 moves the clock on, so each new ask must carry a new signature.
    spy = Spy(
        httpx.ASGITransport(app=application),
        on_response=lambda r: clock.advance(1) if r.status_code == 409 else None,
    )
    remote = executor(spy, clock)
    async with LifespanManager(application):
        try:
            first = asyncio.create_task(remote.execute(REQUEST))
            await run.started.wait()
            second = asyncio.create_task(remote.execute(REQUEST))
            await spy.saw_409.wait()
            assert not second.done()
            assert run.gate is not None
            run.gate.set()
            results = await asyncio.gather(first, second)
        finally:
            await remote.close()
    assert results[0] == results[1]
    assert results[0].status == "success"
    assert len(run.calls) == 1
    assert 409 in spy.statuses
    asks = spy.requests[1:]  # the second executor's
    timestamps = [int(r.headers[TIMESTAMP_HEADER]) for r in asks]
    assert len(asks) >= 2
    assert timestamps == sorted(set(timestamps))
    assert len({r.headers[SIGNATURE_HEADER] for r in asks}) == len(asks)


async def test_still_running_at_the_deadline_is_a_retryable_failure(
    database_url: str, clock: FakeClock
) -> None:
    run = FakeRun(blocking=True)
    settings = Settings(database_url=database_url, remediator_secret=SECRET, db_pool_size=4)
    application = create_remediator_app(settings, run=run, clock=clock)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        first = asyncio.create_task(executor(transport, clock, timeout=5).execute(REQUEST))
        await run.started.wait()
        impatient = executor(transport, clock, timeout=0.01, margin=0.05)
        try:
            result = await impatient.execute(REQUEST)
        finally:
            await impatient.close()
        assert run.gate is not None
        run.gate.set()
        await first
    assert result.status == "failed"
    assert result.retryable
    assert result.details["reason"] == "in_progress"
    assert len(run.calls) == 1


async def test_a_wrong_secret_is_a_permanent_failure(
    app: FastAPI, run: FakeRun, clock: FakeClock
) -> None:
    remote = executor(httpx.ASGITransport(app=app), clock, secret="y" * 32)
    try:
        result = await remote.execute(REQUEST)
    finally:
        await remote.close()
    assert result.status == "failed"
    assert not result.retryable
    assert "signature" in result.message
    assert "VIGIL_REMEDIATOR_SECRET" in result.message
    assert result.details == {"reason": "unauthorized", "http_status": 401}
    assert run.calls == []


async def test_a_refused_request_is_a_permanent_failure(
    app: FastAPI, run: FakeRun, clock: FakeClock
) -> None:
    remote = executor(httpx.ASGITransport(app=app), clock)
    try:
        await remote.execute(REQUEST)
        reused = await remote.execute(REQUEST.model_copy(update={"target": "web-02"}))
    finally:
        await remote.close()
    assert reused.status == "failed"
    assert not reused.retryable
    assert reused.details == {"reason": "rejected", "http_status": 422}
    assert len(run.calls) == 1


async def test_connection_refused_is_a_retryable_failure() -> None:
    remote = RemoteExecutor(
        url=f"http://127.0.0.1:{free_port()}", secret=SECRET, timeout_for=lambda _r: 5.0
    )
    try:
        result = await remote.execute(REQUEST)
    finally:
        await remote.close()
    assert result.status == "failed"
    assert result.retryable
    assert result.details == {"reason": "unreachable"}
    assert "unreachable" in result.message


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_server_error_that_lasts_is_a_retryable_failure(
    status: int, clock: FakeClock
) -> None:
    transport = httpx.MockTransport(lambda _r: httpx.Response(status, json={"detail": "boom"}))
    remote = executor(transport, clock, timeout=0.1, margin=0.1)
    try:
        result = await remote.execute(REQUEST)
    finally:
        await remote.close()
    assert result.status == "failed"
    assert result.retryable
    assert result.details == {"reason": "server_error", "http_status": status}
    assert "boom" in result.message


async def test_the_last_answer_stands_when_sending_ends_before_the_deadline(
    clock: FakeClock,
) -> None:
    """A request lost in flight stretches the deadline past the end of sending; the
    remediator's later 503s are what the attempt reports, not "no answer"."""
    requests: list[httpx.Request] = []
    lost: list[httpx.Request] = []
    started = time.monotonic()

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if not lost and time.monotonic() - started >= 0.1:
            lost.append(request)
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(503, json={"detail": "database away"})

    remote = executor(httpx.MockTransport(answer), clock, timeout=0.1, margin=0.1)
    try:
        result = await remote.execute(REQUEST)
    finally:
        await remote.close()
    assert lost
    assert requests[-1] is not lost[0]
    assert result.retryable
    assert result.details == {"reason": "server_error", "http_status": 503}
    assert "database away" in result.message


async def test_a_garbled_answer_is_a_retryable_failure(clock: FakeClock) -> None:
    transport = httpx.MockTransport(lambda _r: httpx.Response(200, json={"ok": True}))
    remote = executor(transport, clock)
    try:
        result = await remote.execute(REQUEST)
    finally:
        await remote.close()
    assert result.status == "failed"
    assert result.retryable
    assert result.details == {"reason": "bad_response"}


async def test_a_lost_answer_is_asked_for_again_with_the_same_key(
    app: FastAPI, run: FakeRun, clock: FakeClock
) -> None:
    inner = httpx.ASGITransport(app=app)
    lost: list[httpx.Response] = []

    class LosesFirstAnswer(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await inner.handle_async_request(request)
            if not lost:  # the remediator ran it, but the answer never arrived
                lost.append(response)
                raise httpx.ReadTimeout("timed out", request=request)
            return response

    remote = executor(LosesFirstAnswer(), clock)
    try:
        result = await remote.execute(REQUEST)
    finally:
        await remote.close()
    assert result.status == "success"
    assert len(run.calls) == 1
    assert lost


PASS = "pass"
"""An outcome of :class:`Sequence`: the request reaches the remediator."""
PASS_THEN_DROP = "pass, then drop"
"""An outcome of :class:`Sequence`: the remediator runs it, the answer is lost."""


class Sequence(httpx.AsyncBaseTransport):
    """Meets each request with the next outcome (the last repeats), noting when each was
    sent: a response, an exception to raise, or :data:`PASS` / :data:`PASS_THEN_DROP` to
    hand the request to ``inner`` (the remediator)."""

    def __init__(
        self,
        outcomes: list[httpx.Response | Exception | str],
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.outcomes = outcomes
        self.inner = inner
        self.sent: list[tuple[float, bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((time.monotonic(), request.content))
        outcome = self.outcomes[min(len(self.sent), len(self.outcomes)) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, httpx.Response):
            return outcome
        assert self.inner is not None
        response = await self.inner.handle_async_request(request)
        if outcome == PASS_THEN_DROP:
            raise dropped()
        return response


def dropped() -> Exception:
    return httpx.RemoteProtocolError("Server disconnected without sending a response.")


def refusal() -> Exception:
    return httpx.ConnectError("[Errno 111] Connection refused")


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(dropped(), id="connection-dropped"),
        pytest.param(httpx.ReadError("connection reset"), id="read-error"),
        pytest.param(httpx.ReadTimeout("timed out"), id="read-timeout"),
        pytest.param(httpx.Response(409, json={"status": "in_progress"}), id="in-progress"),
        pytest.param(httpx.Response(503, json={"detail": "database"}), id="server-error"),
    ],
)
async def test_once_a_request_may_have_reached_it_refusals_keep_the_attempt_until_the_deadline(
    first: httpx.Response | Exception, clock: FakeClock
) -> None:
    """The remediator died while running the attempt, and refuses connections while it is
    down: the attempt may still be running on the host, so the executor keeps asking with
    the same key until that request's deadline instead of saying "never sent"."""
    transport = Sequence([first, refusal()])
    remote = executor(transport, clock, timeout=0.2, margin=0.1, grace=0.1)
    try:
        result = await remote.execute(REQUEST)
    finally:
        await remote.close()
    done = time.monotonic()
    assert result.status == "failed"
    assert result.retryable
    assert result.details == {"reason": "no_answer"}, result
    assert "deadline" in result.message
    (first_sent, body), *later = transport.sent
    assert len(later) >= 2, "refused requests are asked again"
    assert {sent_body for _, sent_body in later} == {body}, "the same action id and attempt"
    # The executor reads its clock just before it hands the request to the transport, which
    # notes the time it got it: the deadline may fall a hair before first_sent + 0.4.
    assert done - first_sent >= 0.4 - 0.005, "not before the timeout, the grace and the margin"


async def test_each_request_that_may_have_reached_it_moves_the_deadline(clock: FakeClock) -> None:
    """Any of the dropped requests may be the one the remediator claimed the key for; the
    run's deadline counts from that one, so the last of them decides."""
    transport = Sequence([dropped(), dropped(), dropped(), refusal()])
    remote = executor(transport, clock, timeout=0.2, margin=0.1, grace=0.0, poll_interval=0.1)
    try:
        result = await remote.execute(REQUEST)
    finally:
        await remote.close()
    done = time.monotonic()
    assert result.details == {"reason": "no_answer"}, result
    first_dropped, last_dropped = transport.sent[0][0], transport.sent[2][0]
    assert last_dropped - first_dropped >= 0.2  # two polls apart
    # Counted from the first dropped request, the call would end ~0.1 s after the last was
    # sent; counted from the last, 0.3 s after the executor sent it (the transport notes
    # the time a little later, so a little less than 0.3 s here).
    assert done - last_dropped >= 0.25


async def test_a_remediator_back_before_the_deadline_answers_the_same_attempt(
    app: FastAPI, run: FakeRun, clock: FakeClock
) -> None:
    """The first request ran the change, then the connection dropped; the remediator was
    refusing connections for a while, then answered: from its record, without a re-run."""
    transport = Sequence(
        [PASS_THEN_DROP, refusal(), refusal(), PASS], inner=httpx.ASGITransport(app=app)
    )
    remote = executor(transport, clock, timeout=5.0)
    try:
        result = await remote.execute(REQUEST)
    finally:
        await remote.close()
    assert (result.status, result.message) == ("success", "restarted web-01")
    assert run.calls == [REQUEST]
    assert len(transport.sent) == 4


async def test_a_refusal_before_anything_was_sent_is_unreachable_at_once(clock: FakeClock) -> None:
    transport = Sequence([refusal()])
    remote = executor(transport, clock, timeout=60.0)
    try:
        result = await remote.execute(REQUEST)
    finally:
        await remote.close()
    assert result.details == {"reason": "unreachable"}
    assert never_sent(result)
    assert len(transport.sent) == 1


def test_from_settings_needs_url_and_secret(tmp_path: Any) -> None:
    database = f"sqlite:///{tmp_path / 'c.db'}"
    with pytest.raises(ValueError, match="VIGIL_REMEDIATOR_URL"):
        RemoteExecutor.from_settings(Settings(database_url=database))
    remote = RemoteExecutor.from_settings(
        Settings(database_url=database, remediator_url=URL, remediator_secret=SECRET)
    )
    assert isinstance(remote, RemoteExecutor)


async def test_after_a_server_error_it_asks_again_with_the_same_key(clock: FakeClock) -> None:
    """The remediator may have made the change and failed to say so: only the same key can
    tell, so a 5xx is asked again (and the recorded answer taken) before giving up."""
    bodies: list[bytes] = []
    answer = {"status": "success", "message": "done", "details": {}, "duration_ms": 3.0}

    def reply(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        if len(bodies) == 1:
            return httpx.Response(503, json={"detail": "database unavailable"})
        return httpx.Response(200, json=answer)

    remote = executor(httpx.MockTransport(reply), clock)
    try:
        result = await remote.execute(REQUEST)
    finally:
        await remote.close()
    assert (result.status, result.message) == ("success", "done")
    assert len(bodies) == 2
    assert bodies[0] == bodies[1], "the same action id and attempt"


async def test_a_remediator_that_never_answers_ends_the_call_after_its_deadline(
    clock: FakeClock,
) -> None:
    """Every request dropped (a remediator hung, a proxy resetting): nothing is sent after
    the first deadline, and the call gives up once the last request is past its own."""
    transport = httpx.MockTransport(lambda _r: (_ for _ in ()).throw(httpx.ReadError("reset")))
    remote = executor(transport, clock, timeout=0.2, margin=0.1, grace=0.0, poll_interval=0.05)
    started = time.monotonic()
    try:
        result = await remote.execute(REQUEST)
    finally:
        await remote.close()
    took = time.monotonic() - started
    assert result.details == {"reason": "no_answer"}, result
    assert 0.3 <= took < 5.0, "within two lifetimes (0.3 s each), not never"
