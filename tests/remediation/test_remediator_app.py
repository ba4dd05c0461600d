"""The remediator service over HTTP (docs/api.md "Remediator service"), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry

from tests.helpers import connection_lost
from tests.remediation.test_service import FakeRun
from vigil.clock import FakeClock
from vigil.db.engine import Database, create_engine
from vigil.http.errors import RETRY_AFTER_SECONDS
from vigil.remediation.app import MAX_BODY_BYTES, RemediatorNotConfigured, create_remediator_app
from vigil.remediation.runs import INTERRUPTED_MESSAGE, claim_run
from vigil.remediation.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, signed_headers
from vigil.remediation.wire import RemediateRequest
from vigil.settings import Settings

SECRET = "x" * 32
NOT_JSON = b"{this is not json"
REQUEST: dict[str, Any] = {
    "action_id": 42,
    "attempt": 1,
    "action": "restart",
    "target": "web-01",
    "params": {"reason": "cpu"},
}


def settings_for(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "remediator_secret": SECRET,
        "remediator_timeout_seconds": 10,
        "db_pool_size": 4,
        **overrides,
    }
    return Settings(**values)


class Remediator:
    """A running remediator app and a client that signs what it sends."""

    def __init__(self, client: httpx.AsyncClient, clock: FakeClock, registry: CollectorRegistry):
        self.client = client
        self.clock = clock
        self.registry = registry

    def headers(self, body: bytes, *, secret: str = SECRET, skew: float = 0) -> dict[str, str]:
        now = self.clock.now().timestamp() + skew
        return {"content-type": "application/json", **signed_headers(secret.encode(), body, now)}

    async def post(self, payload: dict[str, Any] | bytes, **sign_options: Any) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return await self.client.post(
            "/v1/remediate", content=body, headers=self.headers(body, **sign_options)
        )

    def counted(self, status: str, action: str = "restart") -> float:
        labels = {"action": action, "status": status}
        return self.registry.get_sample_value("vigil_remediations_total", labels) or 0.0


@asynccontextmanager
async def remediator_app(
    settings: Settings, run: FakeRun | None, clock: FakeClock
) -> AsyncIterator[Remediator]:
    registry = CollectorRegistry()
    app = create_remediator_app(settings, run=run, clock=clock, registry=registry)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://remediator.test"
        ) as client,
    ):
        yield Remediator(client, clock, registry)


@pytest.fixture
def run() -> FakeRun:
    return FakeRun()


@pytest.fixture
async def remediator(
    database_url: str, run: FakeRun, clock: FakeClock
) -> AsyncIterator[Remediator]:
    async with remediator_app(settings_for(database_url), run, clock) as r:
        yield r


# --- the signature is checked first -------------------------------------------------------


async def test_unsigned_request_is_401_before_the_body_is_read(
    remediator: Remediator, run: FakeRun
) -> None:
    response = await remediator.client.post(
        "/v1/remediate", content=NOT_JSON, headers={"content-type": "application/json"}
    )
    assert response.status_code == 401
    assert "missing" in response.json()["detail"]
    assert run.calls == []
    assert remediator.counted("rejected", action="unknown") == 1


@pytest.mark.parametrize("skew", [-301, 301])
async def test_stale_request_is_401(remediator: Remediator, run: FakeRun, skew: float) -> None:
    response = await remediator.post(NOT_JSON, skew=skew)
    assert response.status_code == 401
    assert "stale" in response.json()["detail"]
    assert run.calls == []


async def test_wrongly_signed_request_is_401(remediator: Remediator, run: FakeRun) -> None:
    response = await remediator.post(NOT_JSON, secret="y" * 32)
    assert response.status_code == 401
    assert "bad signature" in response.json()["detail"]
    assert run.calls == []


async def test_a_valid_signature_over_other_bytes_is_401(remediator: Remediator) -> None:
    body = orjson.dumps(REQUEST)
    headers = remediator.headers(body)
    tampered = orjson.dumps({**REQUEST, "target": "db-01"})
    response = await remediator.client.post("/v1/remediate", content=tampered, headers=headers)
    assert response.status_code == 401


async def test_malformed_signature_is_401(remediator: Remediator) -> None:
    timestamp = int(remediator.clock.now().timestamp())
    response = await remediator.client.post(
        "/v1/remediate",
        content=NOT_JSON,
        headers={TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: "md5=abc"},
    )
    assert response.status_code == 401
    assert "malformed" in response.json()["detail"]


# --- validation after the signature -------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (NOT_JSON, None),
        ({**REQUEST, "attempt": 0}, "attempt"),
        ({k: v for k, v in REQUEST.items() if k != "target"}, "target"),
        ({**REQUEST, "action": ""}, "action"),
        ({**REQUEST, "params": [1]}, "params"),
        (b"[]", None),
    ],
)
async def test_invalid_body_after_a_valid_signature_is_422(
    remediator: Remediator, run: FakeRun, payload: dict[str, Any] | bytes, field: str | None
) -> None:
    response = await remediator.post(payload)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    if field is not None:
        assert [field] in [d["loc"] for d in detail]
    assert run.calls == []


async def test_unknown_fields_are_ignored(remediator: Remediator, run: FakeRun) -> None:
    response = await remediator.post({**REQUEST, "priority": "high"})
    assert response.status_code == 200
    assert len(run.calls) == 1


async def test_body_above_the_limit_is_413(remediator: Remediator, run: FakeRun) -> None:
    body = orjson.dumps({**REQUEST, "params": {"blob": "a" * MAX_BODY_BYTES}})
    response = await remediator.post(body)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert run.calls == []


# --- running and deduplicating ------------------------------------------------------------


async def test_signed_request_runs_once_and_repeats_get_the_record(
    remediator: Remediator, run: FakeRun
) -> None:
    first = await remediator.post(REQUEST)
    assert first.status_code == 200
    assert first.json() == {
        "status": "success",
        "message": "restarted web-01",
        "details": {"attempt": 1},
        "duration_ms": 1.5,
        "retryable": True,
    }
    assert len(run.calls) == 1
    assert run.calls[0] == RemediateRequest.model_validate(REQUEST)

    remediator.clock.advance(120)  # a later retry, freshly signed
    again = await remediator.post(REQUEST)
    assert again.status_code == 200
    assert again.content == first.content
    assert len(run.calls) == 1
    assert remediator.counted("success") == 1
    assert remediator.counted("duplicate") == 1

    assert (await remediator.post({**REQUEST, "attempt": 2})).status_code == 200
    assert [r.attempt for r in run.calls] == [1, 2]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("statement", "status"),
    [
        # The claim is lost: nothing ran; the worker asks again with the same key.
        ("INSERT INTO remediation_runs ", 503),
        # The result is lost: the remediator records it again itself.
        ("UPDATE remediation_runs ", 200),
    ],
)
async def test_a_connection_lost_at_commit_is_never_500(
    database_url: str, run: FakeRun, clock: FakeClock, statement: str, status: int
) -> None:
    """A claim whose COMMIT loses its connection answers 503 with Retry-After; a result
    whose COMMIT does is recorded again. Never 500, and the change runs once."""
    database = Database(create_engine(settings_for(database_url)))
    app = create_remediator_app(settings_for(database_url), run=run, clock=clock, database=database)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://remediator.test"
        ) as client,
    ):
        remediator = Remediator(client, clock, CollectorRegistry())
        with connection_lost(database.engine, after=statement) as lost:
            first = await remediator.post(REQUEST)
        assert lost
        assert first.status_code == status, first.text
        if status == 503:
            assert first.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
        again = await remediator.post(REQUEST)
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "success"
    await database.dispose()
    assert len(run.calls) == 1


async def test_a_replayed_request_gets_the_record_not_a_second_run(
    remediator: Remediator, run: FakeRun
) -> None:
    body = orjson.dumps(REQUEST)
    headers = remediator.headers(body)
    first = await remediator.client.post("/v1/remediate", content=body, headers=headers)
    replay = await remediator.client.post("/v1/remediate", content=body, headers=headers)
    assert replay.content == first.content
    assert len(run.calls) == 1


async def test_concurrent_duplicate_is_409_until_the_first_finishes(
    database_url: str, clock: FakeClock
) -> None:
    run = FakeRun(blocking=True)
    async with remediator_app(settings_for(database_url), run, clock) as remediator:
        first = asyncio.create_task(remediator.post(REQUEST))
        await run.started.wait()

        duplicate = await remediator.post(REQUEST)
        assert duplicate.status_code == 409
        assert duplicate.json() == {"status": "in_progress"}
        assert remediator.counted("in_progress") == 1

        assert run.gate is not None
        run.gate.set()
        done = await first
        assert done.status_code == 200
        after = await remediator.post(REQUEST)
        assert after.status_code == 200
        assert after.content == done.content
        assert len(run.calls) == 1


async def test_records_survive_a_restart(database_url: str, clock: FakeClock) -> None:
    settings = settings_for(database_url)
    first_run = FakeRun()
    async with remediator_app(settings, first_run, clock) as remediator:
        first = await remediator.post(REQUEST)
    assert first.status_code == 200

    second_run = FakeRun()
    async with remediator_app(settings, second_run, clock) as restarted:
        again = await restarted.post(REQUEST)
    assert again.status_code == 200
    assert again.content == first.content
    assert second_run.calls == []


async def test_a_run_left_running_past_its_expiry_is_an_interrupted_failure(
    database_url: str, remediator: Remediator, run: FakeRun, clock: FakeClock
) -> None:
    # A remediator process died while running attempt 1: its record says running.
    database = Database(create_engine(settings_for(database_url)))
    try:
        async with database.write() as conn:
            await claim_run(
                conn,
                request=RemediateRequest.model_validate(REQUEST),
                owner="dead-process",
                now=clock.now() - timedelta(minutes=5),
                expires_at=clock.now() - timedelta(seconds=1),
            )
    finally:
        await database.dispose()

    response = await remediator.post(REQUEST)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "failed"
    assert body["retryable"] is True
    assert body["message"] == INTERRUPTED_MESSAGE
    assert run.calls == []
    assert (await remediator.post(REQUEST)).content == response.content

    retry = await remediator.post({**REQUEST, "attempt": 2})
    assert retry.status_code == 200
    assert retry.json()["status"] == "success"
    assert [r.attempt for r in run.calls] == [2]


async def test_a_key_reused_for_another_target_is_422(remediator: Remediator, run: FakeRun) -> None:
    assert (await remediator.post(REQUEST)).status_code == 200
    response = await remediator.post({**REQUEST, "target": "web-02"})
    assert response.status_code == 422
    assert "web-01" in response.json()["detail"]
    assert len(run.calls) == 1


# --- the service around it ----------------------------------------------------------------


async def test_health(remediator: Remediator) -> None:
    response = await remediator.client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["service"] == "vigil-remediator"
    assert body["version"]


async def test_metrics(remediator: Remediator) -> None:
    await remediator.post(REQUEST)
    await remediator.post(REQUEST)
    response = await remediator.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'vigil_remediations_total{action="restart",status="success"} 1.0' in text
    assert 'vigil_remediations_total{action="restart",status="duplicate"} 1.0' in text
    assert 'vigil_remediation_duration_seconds_count{action="restart"} 1.0' in text
    assert "vigil_build_info{version=" in text


def test_refuses_to_start_without_a_secret(tmp_path: Any) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(RemediatorNotConfigured, match="VIGIL_REMEDIATOR_SECRET"):
        create_remediator_app(settings, run=FakeRun())


async def test_the_secret_is_never_logged(
    database_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with remediator_app(settings_for(database_url), FakeRun(), clock) as remediator:
        await remediator.post(REQUEST)
        await remediator.post(NOT_JSON, secret="y" * 32)
        await remediator.client.post("/v1/remediate", content=b"{}")
    assert caplog.records
    assert SECRET not in caplog.text
    assert sign(SECRET.encode(), int(clock.now().timestamp()), NOT_JSON) not in caplog.text


async def test_without_an_injected_run_it_runs_the_remediations_file(
    database_url: str, clock: FakeClock
) -> None:
    # The packaged remediations file sends every built-in action name to the `log` plugin.
    async with remediator_app(settings_for(database_url), None, clock) as remediator:
        response = await remediator.post(REQUEST)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "success"
        unknown = await remediator.post({**REQUEST, "attempt": 2, "action": "no-such-action"})
        assert unknown.status_code == 200
        assert unknown.json()["status"] == "failed"
        assert unknown.json()["retryable"] is False


async def test_tags_in_a_signed_request_reach_the_placeholders(
    database_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    remediations = tmp_path / "remediations.yaml"
    remediations.write_text(
        "remediations:\n"
        "  - action: restart\n"
        "    plugin: log\n"
        "    with: {message: 'would restart {tags.service} in {tags.k8s.namespace}'}\n"
    )
    settings = settings_for(database_url, remediations_file=remediations)
    tags = {"service": "nginx", "k8s.namespace": "shop"}
    async with remediator_app(settings, None, clock) as remediator:
        response = await remediator.post({**REQUEST, "tags": tags})
        assert response.status_code == 200, response.text
        assert response.json()["message"] == "dry run: would restart nginx in shop"
        missing = await remediator.post({**REQUEST, "attempt": 2, "tags": {"service": "nginx"}})
        assert missing.json()["status"] == "failed"
        assert missing.json()["retryable"] is False
        assert "no tag 'k8s.namespace'" in missing.json()["message"]
        unsafe = await remediator.post(
            {**REQUEST, "attempt": 3, "tags": {**tags, "service": "a;b"}}
        )
        assert unsafe.json()["status"] == "failed"
        assert unsafe.json()["retryable"] is False
        assert "{tags.service}" in unsafe.json()["message"]
