"""Structured logs: JSON lines with the request id, secrets masked; request ids echoed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog

from tests.api.support import audit_rows
from vigil.container import Container
from vigil.observability.logging import (
    bound,
    configure_logging,
    get_logger,
    redact,
    request_id_header,
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("info", "json", out)
    yield out
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    root.handlers, root.level = saved[0], saved[1]


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_json_with_its_event_and_the_bound_request_id(stream: io.StringIO) -> None:
    with bound(request_id="req-1", action_id=7):
        get_logger("vigil.test").info("task.completed", attempt=2)
        logging.getLogger("uvicorn.access").info('%s - "GET /health" %d', "127.0.0.1", 200)
    logging.getLogger("sqlalchemy.engine").warning("no request here")
    first, second, third = lines(stream)
    assert first["event"] == "task.completed"
    assert (first["request_id"], first["action_id"], first["attempt"]) == ("req-1", 7, 2)
    assert first["level"] == "info"
    assert first["logger"] == "vigil.test"
    assert second["event"] == '127.0.0.1 - "GET /health" 200'
    assert second["request_id"] == "req-1"
    assert "request_id" not in third


def test_secrets_never_reach_the_output(stream: io.StringIO) -> None:
    log = get_logger("vigil.test")
    log.info(
        "connecting",
        url="postgresql://vigil:hunter2@db:5432/vigil",
        remediator_secret="s3cr3t-value",
        api_key="vk_live_123",
        headers="Authorization: Bearer abc.def.ghi",
    )
    logging.getLogger("vigil.test").warning("cannot reach redis://:pw123@cache:6379/0")
    text = stream.getvalue()
    for secret in ("hunter2", "s3cr3t-value", "vk_live_123", "abc.def.ghi", "pw123"):
        assert secret not in text
    first = lines(stream)[0]
    assert first["url"] == "postgresql://vigil:***@db:5432/vigil"
    assert first["remediator_secret"] == "***"


def test_redact_leaves_ordinary_text_alone() -> None:
    assert redact("action 5 on web-01 completed") == "action 5 on web-01 completed"
    assert redact("http://host:8080/path") == "http://host:8080/path"


def test_the_request_id_travels_in_a_header() -> None:
    assert request_id_header() == {}
    with bound(request_id="trace-9"):
        assert request_id_header() == {"X-Request-ID": "trace-9"}


async def test_the_api_echoes_or_makes_up_a_request_id_and_audits_under_it(
    client: httpx.AsyncClient, container: Container
) -> None:
    body = {
        "name": "traced",
        "condition": {"type": "metric_exceeds", "metric": "m", "threshold": 1},
        "action": "custom",
    }
    given = await client.post("/api/v1/policies", json=body, headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await client.get("/api/v1/policies/traced", headers={"X-Request-ID": "bad id!"})
    assert made.headers["x-request-id"] not in ("", "bad id!")
    await client.put("/api/v1/policies/traced/disable")
    rows = await audit_rows(container)
    assert rows[-2]["request_id"] == "abc-123"
    disabled = rows[-1]
    assert disabled["kind"] == "policy.disabled"
    assert len(disabled["request_id"]) == 32  # generated, as echoed to the caller
