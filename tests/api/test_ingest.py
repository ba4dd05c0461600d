"""The ingest API through the ASGI app, on SQLite and on PostgreSQL.

Covers the three ingest routes' responses, target and timestamp defaulting, storage, every
refusal of docs/api.md's "Errors" (with nothing written), policy evaluation over each target's
latest values, the decisions (guards) an ingest records, invariant 2 across two app replicas
sharing a database, the group commit under concurrency, and the Prometheus counters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.sql.schema import Table
from starlette.types import Message

from tests.api.support import table_counts
from tests.conftest import CLIENT_HEADERS
from vigil.api.app import create_app
from vigil.clock import FakeClock
from vigil.container import Container, build_container
from vigil.db.tables import action_history, actions, metric_latest, metrics
from vigil.settings import Settings

INGEST = "/api/v1/ingest"
AGENT = "/api/v1/ingest/agent/metrics"
BATCH = "/api/v1/ingest/batch"
SINGLE_ROUTES = [INGEST, AGENT]

# Limits below their defaults, so the tests show they come from the settings.
MAX_BODY = 8192
MAX_BATCH = 5
MAX_TAGS = 3
MAX_TAG_KEY = 10
MAX_TAG_VALUE = 64
MAX_TARGET = 40


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "max_body_bytes": MAX_BODY,
        "max_batch_size": MAX_BATCH,
        "max_tags": MAX_TAGS,
        "max_tag_key_length": MAX_TAG_KEY,
        "max_tag_value_length": MAX_TAG_VALUE,
        "max_target_length": MAX_TARGET,
    }


# --------------------------------------------------------------------------- helpers


def policy(name: str, condition: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "severity": "warning",
        "target": "all",
        "auto_remediate": True,
        "condition": condition,
        "action": "scale-up",
    }
    body.update(fields)
    return body


def exceeds(metric: str, threshold: float) -> dict[str, Any]:
    return {"type": "metric_exceeds", "metric": metric, "threshold": threshold}


def below(metric: str, threshold: float) -> dict[str, Any]:
    return {"type": "metric_below", "metric": metric, "threshold": threshold}


async def create_policy(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    r = await client.post("/api/v1/policies", json=body)
    assert r.status_code == 201, r.text


async def ingest(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(INGEST, json=body)
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


async def count(container: Container, table: Table, *where: Any) -> int:
    async with container.database.read() as conn:
        query = select(func.count()).select_from(table).where(*where)
        return int((await conn.execute(query)).scalar_one())


async def rows(container: Container, table: Table, *where: Any) -> list[dict[str, Any]]:
    async with container.database.read() as conn:
        result = await conn.execute(select(table).where(*where).order_by(*table.primary_key))
        return [dict(r._mapping) for r in result]


async def written(container: Container) -> tuple[int, ...]:
    """How many metrics, latest values, actions and action history rows the database holds."""
    return (
        await count(container, metrics),
        await count(container, metric_latest),
        await count(container, actions),
        await count(container, action_history),
    )


def action_ref(body: dict[str, Any]) -> dict[str, Any]:
    [action] = body["actions"]
    assert isinstance(action, dict)
    return action


# --------------------------------------------------------------------------- responses


@pytest.mark.parametrize("path", SINGLE_ROUTES)
async def test_single_metric_response_shape(
    client: httpx.AsyncClient, container: Container, path: str
) -> None:
    r = await client.post(
        path,
        json={"name": "cpu_usage", "value": 42.5, "tags": {"host": "web-01"}},
    )
    assert r.status_code == 201
    assert r.headers["content-type"] == "application/json"
    [stored] = await rows(container, metrics)
    assert r.json() == {
        "ok": True,
        "metric_id": stored["id"],
        "status": "stored",
        "policies_evaluated": True,
        "violations": [],
        "actions": [],
        "message": "Metric ingested successfully",
    }


@pytest.mark.parametrize("path", SINGLE_ROUTES)
async def test_violation_response_lists_violation_and_created_action(
    client: httpx.AsyncClient, container: Container, path: str
) -> None:
    await create_policy(client, policy("cpu-hot", exceeds("cpu_usage", 90), target="web-*"))
    r = await client.post(path, json={"name": "cpu_usage", "value": 95, "target": "web-01"})
    assert r.status_code == 201, r.text
    body = r.json()
    [action] = await rows(container, actions)
    [stored] = await rows(container, metrics)
    assert body == {
        "ok": True,
        "metric_id": stored["id"],
        "status": "stored",
        "policies_evaluated": True,
        "violations": [
            {
                "policy_name": "cpu-hot",
                "severity": "warning",
                "action": "scale-up",
                "target": "web-01",
            }
        ],
        "actions": [
            {
                "action_id": action["id"],
                "action": "scale-up",
                "target": "web-01",
                "status": "pending",
            }
        ],
        "message": "Metric ingested successfully",
    }


async def test_batch_response_shape(client: httpx.AsyncClient, container: Container) -> None:
    await create_policy(client, policy("cpu-hot", exceeds("cpu_usage", 90)))
    r = await client.post(
        BATCH,
        json={
            "metrics": [
                {"name": "cpu_usage", "value": 10, "target": "web-01"},
                {"name": "cpu_usage", "value": 99, "target": "web-02"},
                {"name": "memory_percent", "value": 50, "tags": {"host": "web-03"}},
            ]
        },
    )
    assert r.status_code == 201, r.text
    [action] = await rows(container, actions)
    assert r.json() == {
        "ok": True,
        "stored": 3,
        "violations": [
            {
                "policy_name": "cpu-hot",
                "severity": "warning",
                "action": "scale-up",
                "target": "web-02",
            }
        ],
        "actions": [
            {
                "action_id": action["id"],
                "action": "scale-up",
                "target": "web-02",
                "status": "pending",
            }
        ],
    }
    stored = await rows(container, metrics)
    assert [(m["name"], m["value"], m["target"]) for m in stored] == [
        ("cpu_usage", 10.0, "web-01"),
        ("cpu_usage", 99.0, "web-02"),
        ("memory_percent", 50.0, "web-03"),
    ]


async def test_empty_batch_stores_nothing(client: httpx.AsyncClient, container: Container) -> None:
    r = await client.post(BATCH, json={"metrics": []})
    assert r.status_code == 201
    assert r.json() == {"ok": True, "stored": 0, "violations": [], "actions": []}
    assert await count(container, metrics) == 0


# --------------------------------------------------------------------------- defaults, storage


TARGET_DEFAULTS: list[tuple[dict[str, Any], str]] = [
    ({"target": "t-field", "tags": {"target": "t-tag", "host": "h", "service": "s"}}, "t-field"),
    ({"tags": {"target": "t-tag", "host": "h", "service": "s"}}, "t-tag"),
    ({"tags": {"host": "h", "service": "s"}}, "h"),
    ({"tags": {"service": "s", "region": "eu"}}, "s"),
    ({"target": "  ", "tags": {"host": "h"}}, "h"),
    ({"tags": {"target": " ", "service": "s"}}, "s"),
]


async def test_target_defaults_to_target_host_service_tags(
    client: httpx.AsyncClient, container: Container, subtests: pytest.Subtests
) -> None:
    for body, target in TARGET_DEFAULTS:
        with subtests.test(msg=repr(body)):
            result = await ingest(client, {"name": "cpu_usage", "value": 1, **body})
            assert result["policies_evaluated"] is True
            [stored] = await rows(container, metrics, metrics.c.id == result["metric_id"])
            assert stored["target"] == target


async def test_metric_without_target_is_stored_but_not_evaluated(
    client: httpx.AsyncClient, container: Container
) -> None:
    # A policy on every target, which this value would violate if the metric had one.
    await create_policy(client, policy("cpu-hot", exceeds("cpu_usage", 90)))
    result = await ingest(client, {"name": "cpu_usage", "value": 99, "tags": {"region": "eu"}})
    assert result["ok"] is True
    assert result["status"] == "stored"
    assert result["policies_evaluated"] is False
    assert result["violations"] == []
    assert result["actions"] == []
    [stored] = await rows(container, metrics)
    assert stored["id"] == result["metric_id"]
    assert stored["target"] is None
    assert stored["tags"] == {"region": "eu"}
    assert await count(container, actions) == 0
    assert await count(container, metric_latest) == 0


async def test_metric_is_stored_with_tags_and_trimmed_strings(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    result = await ingest(
        client,
        {
            "name": "  cpu_usage ",
            "value": 87.5,
            "tags": {"host": " web-01 ", "region": "us-east-1"},
            "timestamp": "2026-01-19T11:00:00Z",
        },
    )
    [stored] = await rows(container, metrics)
    assert stored["id"] == result["metric_id"]
    assert stored["name"] == "cpu_usage"
    assert stored["value"] == 87.5
    assert stored["target"] == "web-01"
    assert stored["tags"] == {"host": "web-01", "region": "us-east-1"}
    assert stored["ts"] == datetime(2026, 1, 19, 11, 0, tzinfo=UTC)
    assert stored["received_at"] == clock.now()


TIMESTAMPS = [
    (None, datetime(2026, 1, 19, 12, 0, tzinfo=UTC)),  # the FakeClock's now
    ("2026-01-19T10:30:00", datetime(2026, 1, 19, 10, 30, tzinfo=UTC)),  # naive: UTC
    ("2026-01-19T12:30:00+02:00", datetime(2026, 1, 19, 10, 30, tzinfo=UTC)),
    ("2026-01-19T09:15:00.250Z", datetime(2026, 1, 19, 9, 15, 0, 250_000, tzinfo=UTC)),
    ("2026-01-19T07:00:00-05:00", datetime(2026, 1, 19, 12, 0, tzinfo=UTC)),
]


async def test_timestamp_defaults_to_now_and_is_stored_in_utc(
    client: httpx.AsyncClient, container: Container, subtests: pytest.Subtests
) -> None:
    for i, (timestamp, stored_ts) in enumerate(TIMESTAMPS):
        with subtests.test(msg=str(timestamp)):
            body: dict[str, Any] = {"name": "cpu_usage", "value": 1, "target": f"web-{i}"}
            if timestamp is not None:
                body["timestamp"] = timestamp
            result = await ingest(client, body)
            [stored] = await rows(container, metrics, metrics.c.id == result["metric_id"])
            assert stored["ts"] == stored_ts
            assert stored["ts"].utcoffset() == timedelta(0)
            [latest] = await rows(container, metric_latest, metric_latest.c.target == f"web-{i}")
            assert latest["ts"] == stored_ts


async def test_timestamp_defaults_to_the_clock(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    clock.advance(3600)
    await ingest(client, {"name": "cpu_usage", "value": 1, "target": "web-01"})
    [stored] = await rows(container, metrics)
    assert stored["ts"] == datetime(2026, 1, 19, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize("path", [INGEST, BATCH])
async def test_unknown_fields_are_ignored(
    client: httpx.AsyncClient, container: Container, path: str
) -> None:
    metric = {
        "name": "cpu_usage",
        "value": 3,
        "target": "web-01",
        "unit": "percent",
        "labels": {"nested": [1, 2]},
        "value_type": None,
    }
    body = {"metrics": [metric], "source": "agent-7"} if path == BATCH else metric
    r = await client.post(path, json=body)
    assert r.status_code == 201, r.text
    [stored] = await rows(container, metrics)
    assert (stored["name"], stored["value"], stored["target"], stored["tags"]) == (
        "cpu_usage",
        3.0,
        "web-01",
        {},
    )


# --------------------------------------------------------------------------- refusals

GOOD = '{"name": "cpu_usage", "value": 95, "target": "web-01"}'


def _metric(extra: str) -> str:
    return '{"name": "cpu_usage", "value": 95, "target": "web-01", ' + extra + "}"


@dataclass(frozen=True)
class Case:
    """A refused body: raw JSON text, and the path of the field the 422 must name."""

    id: str
    raw: str
    loc: list[Any]


SINGLE_ERRORS = [
    Case("missing-name", '{"value": 95, "target": "web-01"}', ["body", "name"]),
    Case("no-value", '{"name": "cpu_usage", "target": "web-01"}', ["body", "value"]),
    Case("blank", '{"name": "   ", "value": 95, "target": "web-01"}', ["body", "name"]),
    Case(
        "name-256-chars",
        '{"name": "' + "c" * 256 + '", "value": 95, "target": "web-01"}',
        ["body", "name"],
    ),
    Case(
        "value-string",
        '{"name": "cpu_usage", "value": "95", "target": "web-01"}',
        ["body", "value"],
    ),
    Case(
        "value-bool", '{"name": "cpu_usage", "value": true, "target": "web-01"}', ["body", "value"]
    ),
    Case(
        "value-null", '{"name": "cpu_usage", "value": null, "target": "web-01"}', ["body", "value"]
    ),
    Case("value-nan", '{"name": "cpu_usage", "value": NaN, "target": "web-01"}', ["body"]),
    Case("value-inf", '{"name": "cpu_usage", "value": Infinity, "target": "web-01"}', ["body"]),
    Case(
        "value-minus-inf", '{"name": "cpu_usage", "value": -Infinity, "target": "web-01"}', ["body"]
    ),
    Case("value-overflow", '{"name": "cpu_usage", "value": 1e999, "target": "web-01"}', ["body"]),
    Case("truncated-json", '{"name": "cpu_usage", "value": 95,', ["body"]),
    Case("empty-body", "", ["body"]),
    Case("not-json", "not json", ["body"]),
    Case("array", '[{"name": "cpu_usage", "value": 95}]', ["body"]),
    Case("null", "null", ["body"]),
    Case("tags-list", _metric('"tags": ["host"]'), ["body", "tags"]),
    Case("tags-string", _metric('"tags": "host=web-01"'), ["body", "tags"]),
    Case("tag-int", _metric('"tags": {"zone": 1}'), ["body", "tags", "zone"]),
    Case("tag-null", _metric('"tags": {"zone": null}'), ["body", "tags", "zone"]),
    Case("tag-bool", _metric('"tags": {"zone": true}'), ["body", "tags", "zone"]),
    Case("tag-object", _metric('"tags": {"zone": {"a": "b"}}'), ["body", "tags", "zone"]),
    Case(
        "too-many-tags",
        _metric('"tags": {"a": "1", "b": "2", "c": "3", "d": "4"}'),
        ["body", "tags"],
    ),
    Case(
        "tag-key-too-long",
        _metric('"tags": {"' + "k" * (MAX_TAG_KEY + 1) + '": "v"}'),
        ["body", "tags", "k" * (MAX_TAG_KEY + 1)],
    ),
    Case(
        "tag-value-too-long",
        _metric('"tags": {"zone": "' + "v" * (MAX_TAG_VALUE + 1) + '"}'),
        ["body", "tags", "zone"],
    ),
    Case("tag-key-blank", _metric('"tags": {" ": "v"}'), ["body", "tags"]),
    Case(
        "nul-in-name",
        '{"name": "cpu\\u0000usage", "value": 95, "target": "web-01"}',
        ["body", "name"],
    ),
    Case(
        "nul-in-target",
        '{"name": "cpu_usage", "value": 95, "target": "web\\u000001"}',
        ["body", "target"],
    ),
    Case("nul-tag", _metric('"tags": {"zone": "a\\u0000"}'), ["body", "tags", "zone"]),
    Case("nul-tag-key", _metric('"tags": {"zo\\u0000ne": "a"}'), ["body", "tags"]),
    Case(
        "target-too-long",
        '{"name": "cpu_usage", "value": 95, "target": "' + "t" * (MAX_TARGET + 1) + '"}',
        ["body", "target"],
    ),
    Case(
        "target-from-tag-too-long",
        '{"name": "cpu_usage", "value": 95, "tags": {"host": "' + "h" * (MAX_TARGET + 1) + '"}}',
        ["body", "tags", "host"],
    ),
    Case(
        "target-256-chars",
        '{"name": "cpu_usage", "value": 95, "target": "' + "t" * 256 + '"}',
        ["body", "target"],
    ),
    Case("bad-timestamp", _metric('"timestamp": "yesterday"'), ["body", "timestamp"]),
    # Found by the fuzz test: pydantic took numbers (and numeric strings) as Unix seconds
    # and a bare date as midnight, while docs/api.md and the OpenAPI document say ISO 8601.
    Case("timestamp-number", _metric('"timestamp": 0'), ["body", "timestamp"]),
    Case("timestamp-float", _metric('"timestamp": 1768824000.5'), ["body", "timestamp"]),
    Case("timestamp-numeric-string", _metric('"timestamp": "1768824000"'), ["body", "timestamp"]),
    Case("timestamp-date-only", _metric('"timestamp": "2026-01-19"'), ["body", "timestamp"]),
    Case(
        "timestamp-after-9999-in-utc",
        _metric('"timestamp": "9999-12-31T23:00:00-05:00"'),
        ["body", "timestamp"],
    ),
    Case(
        "timestamp-before-year-1-in-utc",
        _metric('"timestamp": "0001-01-01T00:00:00+05:00"'),
        ["body", "timestamp"],
    ),
]


def assert_refused(r: httpx.Response, status: int, loc: list[Any] | None = None) -> None:
    """A JSON ``{"detail": ...}`` refusal; for a 422, an error at (or under) ``loc``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"detail"}
    if loc is not None:
        locs = [e["loc"] for e in body["detail"]]
        assert any(found[: len(loc)] == loc for found in locs), locs


@pytest.fixture
async def watched(client: httpx.AsyncClient) -> None:
    """A policy that the refused bodies would violate, and one sample already stored."""
    await create_policy(client, policy("cpu-hot", exceeds("cpu_usage", 90)))
    await ingest(client, {"name": "cpu_usage", "value": 1, "target": "db-01"})


async def check_refusals(
    client: httpx.AsyncClient,
    container: Container,
    subtests: pytest.Subtests,
    path: str,
    cases: list[Case],
) -> None:
    """Each case gets a JSON 422 naming its field, and leaves the database as it was."""
    for case in cases:
        with subtests.test(msg=f"{path} {case.id}"):
            before = await written(container)
            r = await client.post(
                path, content=case.raw, headers={"content-type": "application/json"}
            )
            assert_refused(r, 422, case.loc)
            assert await written(container) == before


@pytest.mark.parametrize("path", SINGLE_ROUTES)
@pytest.mark.usefixtures("watched")
async def test_invalid_metric_is_refused_and_nothing_written(
    client: httpx.AsyncClient,
    container: Container,
    subtests: pytest.Subtests,
    path: str,
) -> None:
    await check_refusals(client, container, subtests, path, SINGLE_ERRORS)


BATCH_ERRORS = [
    Case("not-an-object", "[]", ["body", "metrics"]),
    Case("a-string", '"metrics"', ["body", "metrics"]),
    Case("no-metrics", "{}", ["body", "metrics"]),
    Case("metrics-object", '{"metrics": {}}', ["body", "metrics"]),
    Case("metrics-string", '{"metrics": "cpu_usage"}', ["body", "metrics"]),
    Case("metrics-null", '{"metrics": null}', ["body", "metrics"]),
    Case("item-number", '{"metrics": [' + GOOD + ", 1]}", ["body", "metrics", 1]),
    Case(
        "second-value-string",
        '{"metrics": [' + GOOD + ', {"name": "cpu_usage", "value": "95"}]}',
        ["body", "metrics", 1, "value"],
    ),
    Case(
        "second-value-nan",
        '{"metrics": [' + GOOD + ', {"name": "cpu_usage", "value": NaN}]}',
        ["body"],
    ),
    Case(
        "second-name-empty",
        '{"metrics": [' + GOOD + ', {"name": "", "value": 95}]}',
        ["body", "metrics", 1, "name"],
    ),
    Case(
        "second-too-many-tags",
        '{"metrics": ['
        + GOOD
        + ","
        + _metric('"tags": {"a": "1", "b": "2", "c": "3", "d": "4"}')
        + "]}",
        ["body", "metrics", 1, "tags"],
    ),
    Case(
        "second-target-too-long",
        '{"metrics": ['
        + GOOD
        + ', {"name": "cpu_usage", "value": 95, "tags": {"host": "'
        + "h" * (MAX_TARGET + 1)
        + '"}}]}',
        ["body", "metrics", 1, "tags", "host"],
    ),
    Case("truncated-json", '{"metrics": [' + GOOD, ["body"]),
]


async def test_openapi_documents_the_configured_tag_limits(client: httpx.AsyncClient) -> None:
    # Found by the fuzz test: the routes enforce these limits, /openapi.json did not say so.
    document = (await client.get("/openapi.json")).json()
    tags = document["components"]["schemas"]["MetricIn"]["properties"]["tags"]
    assert tags["maxProperties"] == MAX_TAGS
    assert tags["propertyNames"] == {"minLength": 1, "maxLength": MAX_TAG_KEY}
    assert tags["additionalProperties"] == {"type": "string", "maxLength": MAX_TAG_VALUE}


@pytest.mark.usefixtures("watched")
async def test_invalid_batch_is_refused_and_nothing_written(
    client: httpx.AsyncClient, container: Container, subtests: pytest.Subtests
) -> None:
    await check_refusals(client, container, subtests, BATCH, BATCH_ERRORS)


@pytest.mark.usefixtures("watched")
async def test_batch_above_max_batch_size_is_413_and_nothing_written(
    client: httpx.AsyncClient, container: Container
) -> None:
    before = await written(container)
    metric = {"name": "cpu_usage", "value": 95, "target": "web-01"}
    r = await client.post(BATCH, json={"metrics": [metric] * (MAX_BATCH + 1)})
    assert_refused(r, 413)
    assert str(MAX_BATCH) in r.json()["detail"]
    assert await written(container) == before

    r = await client.post(BATCH, json={"metrics": [metric] * MAX_BATCH})
    assert r.status_code == 201, r.text
    assert r.json()["stored"] == MAX_BATCH


class Body:
    """A request body streamed in chunks, which records whether anything read it."""

    def __init__(self, data: bytes, chunk: int = 1024) -> None:
        self.data = data
        self.chunk = chunk
        self.read = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.read = True
        for start in range(0, len(self.data), self.chunk):
            yield self.data[start : start + self.chunk]


def padded(body: str, size: int) -> bytes:
    """``body`` followed by JSON whitespace up to ``size`` bytes."""
    raw = body.encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


@pytest.mark.usefixtures("watched")
async def test_body_above_limit_is_refused_from_content_length_unread(
    client: httpx.AsyncClient, container: Container, subtests: pytest.Subtests
) -> None:
    before = await written(container)
    for path in [INGEST, AGENT, BATCH]:
        with subtests.test(msg=path):
            text = GOOD if path != BATCH else '{"metrics": [' + GOOD + "]}"
            body = Body(padded(text, MAX_BODY + 1))
            r = await client.post(
                path,
                content=body,
                headers={"content-type": "application/json", "content-length": str(MAX_BODY + 1)},
            )
            assert_refused(r, 413)
            assert str(MAX_BODY) in r.json()["detail"]
            assert body.read is False, "the body was read before the Content-Length was checked"
            assert await written(container) == before


@pytest.mark.usefixtures("watched")
async def test_chunked_body_above_limit_is_refused(
    client: httpx.AsyncClient, container: Container, subtests: pytest.Subtests
) -> None:
    # No Content-Length: the body is counted as it arrives. The policies route has FastAPI
    # parse its body, which must not turn the refusal into a 400.
    for path in [INGEST, BATCH, "/api/v1/policies"]:
        with subtests.test(msg=path):
            before = await written(container)
            body = Body(padded(GOOD, MAX_BODY * 2))
            r = await client.post(path, content=body, headers={"content-type": "application/json"})
            assert "content-length" not in r.request.headers
            assert_refused(r, 413)
            assert body.read is True
            assert await written(container) == before


async def test_body_at_the_limit_is_accepted(
    client: httpx.AsyncClient, container: Container
) -> None:
    r = await client.post(
        INGEST, content=padded(GOOD, MAX_BODY), headers={"content-type": "application/json"}
    )
    assert r.status_code == 201, r.text
    r = await client.post(
        INGEST, content=Body(padded(GOOD, MAX_BODY)), headers={"content-type": "application/json"}
    )
    assert r.status_code == 201, r.text
    assert await count(container, metrics) == 2


async def test_body_limit_applies_to_other_routes_as_json(client: httpx.AsyncClient) -> None:
    body = policy("big", exceeds("cpu_usage", 90), description="x" * MAX_BODY)
    r = await client.post("/api/v1/policies", json=body)
    assert_refused(r, 413)
    assert (await client.get("/api/v1/policies/big")).status_code == 404


# --------------------------------------------------------------------------- latest values


RESOURCE = policy(
    "resource-exhaustion",
    {"type": "all", "conditions": [exceeds("cpu_usage", 80), exceeds("memory_percent", 80)]},
    severity="critical",
)


async def test_all_policy_fires_only_when_both_latest_values_exceed(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create_policy(client, RESOURCE)
    # Only cpu_usage known: the memory condition is false.
    r = await ingest(client, {"name": "cpu_usage", "value": 95, "target": "web-01"})
    assert r["violations"] == []
    # memory known but low: still false.
    r = await ingest(client, {"name": "memory_percent", "value": 50, "target": "web-01"})
    assert r["violations"] == []
    # memory high: cpu's latest (95, from an earlier request) makes the policy fire.
    r = await ingest(client, {"name": "memory_percent", "value": 90, "target": "web-01"})
    assert [v["policy_name"] for v in r["violations"]] == ["resource-exhaustion"]
    assert action_ref(r)["target"] == "web-01"
    latest = {
        (row["target"], row["name"]): row["value"] for row in await rows(container, metric_latest)
    }
    assert latest == {("web-01", "cpu_usage"): 95.0, ("web-01", "memory_percent"): 90.0}


async def test_all_policy_does_not_fire_when_the_other_latest_value_dropped(
    client: httpx.AsyncClient,
) -> None:
    await create_policy(client, RESOURCE)
    await ingest(client, {"name": "memory_percent", "value": 90, "target": "web-01"})
    await ingest(client, {"name": "memory_percent", "value": 20, "target": "web-01"})
    r = await ingest(client, {"name": "cpu_usage", "value": 95, "target": "web-01"})
    assert r["violations"] == []


async def test_latest_values_are_per_target(client: httpx.AsyncClient) -> None:
    await create_policy(client, RESOURCE)
    await ingest(client, {"name": "memory_percent", "value": 90, "target": "web-02"})
    r = await ingest(client, {"name": "cpu_usage", "value": 95, "target": "web-01"})
    assert r["violations"] == []


async def test_metric_never_sent_makes_its_condition_false(client: httpx.AsyncClient) -> None:
    # disk_free_percent < 5 would hold for a missing value read as 0.
    await create_policy(
        client,
        policy(
            "disk-or-cpu",
            {
                "type": "any",
                "conditions": [below("disk_free_percent", 5), exceeds("cpu_usage", 99)],
            },
        ),
    )
    r = await ingest(client, {"name": "cpu_usage", "value": 50, "target": "web-01"})
    assert r["violations"] == []
    r = await ingest(client, {"name": "disk_free_percent", "value": 3, "target": "web-01"})
    assert [v["policy_name"] for v in r["violations"]] == ["disk-or-cpu"]


@pytest.mark.parametrize("path", [INGEST, BATCH])
async def test_values_inside_a_policys_thresholds_still_violate_when_the_policy_says_so(
    client: httpx.AsyncClient, path: str
) -> None:
    # Ingest skips samples whose value can violate none of the policies reading the metric;
    # a band ("above 10 and below 90") and an `any` with a branch on another metric must
    # still be evaluated for a value between their thresholds.
    await create_policy(
        client,
        policy("cpu-band", {"type": "all", "conditions": [exceeds("cpu", 10), below("cpu", 90)]}),
    )
    await create_policy(
        client,
        policy(
            "cpu-or-mem",
            {"type": "any", "conditions": [exceeds("cpu", 95), exceeds("mem", 80)]},
            target="db-*",
        ),
    )

    async def send(metric: dict[str, Any]) -> list[str]:
        body = metric if path == INGEST else {"metrics": [metric]}
        r = await client.post(path, json=body)
        assert r.status_code == 201, r.text
        return [v["policy_name"] for v in r.json()["violations"]]

    assert await send({"name": "cpu", "value": 50, "target": "web-01"}) == ["cpu-band"]
    assert await send({"name": "cpu", "value": 5, "target": "web-01"}) == []
    assert await send({"name": "mem", "value": 85, "target": "db-01"}) == ["cpu-or-mem"]
    assert await send({"name": "cpu", "value": 5, "target": "db-01"}) == ["cpu-or-mem"]


async def test_older_sample_does_not_overwrite_newer_latest_value(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create_policy(client, RESOURCE)
    await ingest(
        client,
        {
            "name": "memory_percent",
            "value": 90,
            "target": "web-01",
            "timestamp": "2026-01-19T11:59:00Z",
        },
    )
    # A late sample from an hour earlier: stored, but the latest memory value stays 90.
    await ingest(
        client,
        {
            "name": "memory_percent",
            "value": 10,
            "target": "web-01",
            "timestamp": "2026-01-19T10:59:00Z",
        },
    )
    assert await count(container, metrics) == 2
    [latest] = await rows(container, metric_latest)
    assert (latest["value"], latest["ts"]) == (90.0, datetime(2026, 1, 19, 11, 59, tzinfo=UTC))
    r = await ingest(client, {"name": "cpu_usage", "value": 95, "target": "web-01"})
    assert [v["policy_name"] for v in r["violations"]] == ["resource-exhaustion"]


async def test_older_sample_in_a_batch_does_not_overwrite_newer_one(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create_policy(client, RESOURCE)
    r = await client.post(
        BATCH,
        json={
            "metrics": [
                {
                    "name": "memory_percent",
                    "value": 90,
                    "target": "web-01",
                    "timestamp": "2026-01-19T11:59:00Z",
                },
                {
                    "name": "memory_percent",
                    "value": 10,
                    "target": "web-01",
                    "timestamp": "2026-01-19T11:00:00Z",
                },
                {"name": "cpu_usage", "value": 95, "target": "web-01"},
            ]
        },
    )
    assert r.status_code == 201, r.text
    assert [v["policy_name"] for v in r.json()["violations"]] == ["resource-exhaustion"]
    latest = {row["name"]: row["value"] for row in await rows(container, metric_latest)}
    assert latest == {"memory_percent": 90.0, "cpu_usage": 95.0}


async def test_batch_sees_earlier_samples_of_the_same_batch(client: httpx.AsyncClient) -> None:
    await create_policy(client, RESOURCE)
    r = await client.post(
        BATCH,
        json={
            "metrics": [
                {"name": "memory_percent", "value": 90, "target": "web-01"},
                {"name": "cpu_usage", "value": 95, "target": "web-01"},
            ]
        },
    )
    assert r.status_code == 201, r.text
    assert [v["policy_name"] for v in r.json()["violations"]] == ["resource-exhaustion"]


# --------------------------------------------------------------------------- decisions


CPU_HOT = policy("cpu-hot", exceeds("cpu_usage", 90), cooldown_seconds=300)
HOT_SAMPLE = {"name": "cpu_usage", "value": 95, "target": "web-01"}
COOL_SAMPLE = {"name": "cpu_usage", "value": 20, "target": "web-01"}


async def test_violation_creates_pending_action_with_first_history_row(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create_policy(client, {**CPU_HOT, "params": {"replicas": 2}})
    r = await ingest(client, HOT_SAMPLE)
    action_id = action_ref(r)["action_id"]
    [stored] = await rows(container, actions)
    assert stored["id"] == action_id
    assert stored["policy_name"] == "cpu-hot"
    assert stored["target"] == "web-01"
    assert stored["action"] == "scale-up"
    assert stored["params"] == {"replicas": 2}
    assert stored["status"] == "pending"
    assert stored["trigger_value"] == 95.0
    assert stored["created_at"] == clock.now()
    [first] = await rows(container, action_history, action_history.c.action_id == action_id)
    assert (first["from_status"], first["to_status"], first["at"]) == (None, "pending", clock.now())
    history = (await client.get(f"/api/v1/actions/{action_id}/history")).json()
    assert [(h["from"], h["to"]) for h in history] == [(None, "pending")]


async def test_repeat_violation_is_suppressed_while_action_open(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create_policy(client, CPU_HOT)
    first = await ingest(client, HOT_SAMPLE)
    assert len(first["actions"]) == 1
    second = await ingest(client, HOT_SAMPLE)
    assert second["actions"] == []
    assert second["violations"] == [
        {
            "policy_name": "cpu-hot",
            "severity": "warning",
            "action": "scale-up",
            "target": "web-01",
            "suppressed": "action already open",
        }
    ]
    # Another target is another pair: it gets its own action.
    other = await ingest(client, {**HOT_SAMPLE, "target": "web-02"})
    assert action_ref(other)["target"] == "web-02"
    assert await count(container, actions) == 2


async def test_cooldown_after_the_action_ends(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create_policy(client, CPU_HOT)
    first = action_ref(await ingest(client, HOT_SAMPLE))["action_id"]
    clock.advance(10)
    r = await client.put(f"/api/v1/actions/{first}/cancel", json={"reason": "test"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"

    # Still the same episode: it acted once, so it does not again (and no reason applies).
    result = await ingest(client, HOT_SAMPLE)
    assert result["actions"] == []
    assert [v.get("suppressed") for v in result["violations"]] == [None]
    await ingest(client, COOL_SAMPLE)  # resolved

    clock.advance(299)  # a new episode 299 s after the action ended: inside the cooldown
    result = await ingest(client, HOT_SAMPLE)
    assert result["actions"] == []
    assert [v.get("suppressed") for v in result["violations"]] == ["cooldown"]
    clock.advance(1)  # the cooldown is over, but a cooldown holds for its whole episode
    result = await ingest(client, HOT_SAMPLE)
    assert [v.get("suppressed") for v in result["violations"]] == ["cooldown"]
    assert await count(container, actions) == 1

    await ingest(client, COOL_SAMPLE)
    result = await ingest(client, HOT_SAMPLE)  # the next episode acts
    second = action_ref(result)["action_id"]
    assert second != first
    assert "suppressed" not in result["violations"][0]
    assert await count(container, actions, actions.c.status == "pending") == 1


async def test_not_auto_remediated_policy_records_no_action(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create_policy(client, {**CPU_HOT, "auto_remediate": False})
    r = await ingest(client, HOT_SAMPLE)
    assert r["actions"] == []
    assert r["violations"] == [
        {
            "policy_name": "cpu-hot",
            "severity": "warning",
            "action": "scale-up",
            "target": "web-01",
            "suppressed": "not auto-remediated",
        }
    ]
    assert await count(container, actions) == 0


async def test_disabled_policy_is_not_evaluated(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create_policy(client, {**CPU_HOT, "enabled": False})
    r = await ingest(client, HOT_SAMPLE)
    assert (r["violations"], r["actions"]) == ([], [])
    # Disabling an enabled policy takes effect on the next sample.
    await create_policy(client, {**CPU_HOT, "name": "cpu-hot-2"})
    assert (await client.put("/api/v1/policies/cpu-hot-2/disable")).status_code == 200
    r = await ingest(client, HOT_SAMPLE)
    assert (r["violations"], r["actions"]) == ([], [])
    assert await count(container, actions) == 0


async def test_policy_target_glob_is_matched(client: httpx.AsyncClient) -> None:
    await create_policy(client, {**CPU_HOT, "target": "web-*"})
    r = await ingest(client, {**HOT_SAMPLE, "target": "db-01"})
    assert r["violations"] == []
    r = await ingest(client, {**HOT_SAMPLE, "target": "web-07"})
    assert [v["target"] for v in r["violations"]] == ["web-07"]


async def test_batch_with_two_violations_of_one_pair_creates_one_action(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create_policy(client, CPU_HOT)
    r = await client.post(BATCH, json={"metrics": [HOT_SAMPLE, {**HOT_SAMPLE, "value": 97}]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["stored"] == 2
    [action] = body["actions"]
    assert [v.get("suppressed") for v in body["violations"]] == [None, "action already open"]
    [stored] = await rows(container, actions)
    assert stored["id"] == action["action_id"]
    assert stored["trigger_value"] == 95.0


# --------------------------------------------------------------------------- replicas


@pytest.fixture
async def replica(settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """A second Vigil app with its own components, on the same database as ``client``'s."""
    container = build_container(settings, clock=clock)
    application = create_app(settings, container, run_runner=False)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://replica.test", headers=CLIENT_HEADERS
        ) as c:
            yield c


async def test_two_replicas_create_one_open_action_per_pair(
    client: httpx.AsyncClient, replica: httpx.AsyncClient, container: Container
) -> None:
    # One replica is sent cpu_usage, the other memory_percent: both violate the policy for
    # web-01, and their transactions touch no common row but the action's. Only the
    # database's constraint keeps the second action out (without it, PostgreSQL gets two).
    await create_policy(
        client,
        policy(
            "hot",
            {
                "type": "any",
                "conditions": [exceeds("cpu_usage", 90), exceeds("memory_percent", 90)],
            },
        ),
    )
    posts = []
    for _ in range(10):
        posts.append(client.post(INGEST, json={**HOT_SAMPLE, "name": "cpu_usage"}))
        posts.append(replica.post(INGEST, json={**HOT_SAMPLE, "name": "memory_percent"}))
    responses = await asyncio.gather(*posts)
    assert [r.status_code for r in responses] == [201] * len(posts)
    created = [a for r in responses for a in r.json()["actions"]]
    assert len(created) == 1
    suppressed = [v.get("suppressed") for r in responses for v in r.json()["violations"]]
    assert sorted(suppressed, key=str) == [None] + ["action already open"] * (len(posts) - 1)
    open_rows = await rows(container, actions, actions.c.status.in_(("pending", "running")))
    assert [(a["id"], a["policy_name"], a["target"]) for a in open_rows] == [
        (created[0]["action_id"], "hot", "web-01")
    ]
    assert await count(container, actions) == 1
    assert await count(container, metrics) == len(posts)


async def test_replica_sees_policies_created_through_the_other(
    client: httpx.AsyncClient, replica: httpx.AsyncClient
) -> None:
    # Warm the replica's policy cache first, so it has to notice the change.
    r = await replica.post(INGEST, json=HOT_SAMPLE)
    assert r.json()["violations"] == []
    await create_policy(client, CPU_HOT)
    r = await replica.post(INGEST, json=HOT_SAMPLE)
    assert len(r.json()["actions"]) == 1


# --------------------------------------------------------------------------- group commit


async def test_concurrent_single_metric_requests_are_all_stored(
    client: httpx.AsyncClient, container: Container
) -> None:
    n = 50
    responses = await asyncio.gather(
        *(
            client.post(
                INGEST if i % 2 else AGENT,
                json={"name": f"m{i % 7}", "value": i, "target": f"host-{i % 5}"},
            )
            for i in range(n)
        )
    )
    assert [r.status_code for r in responses] == [201] * n
    ids = [r.json()["metric_id"] for r in responses]
    assert len(set(ids)) == n
    # Each response names the row holding its own sample.
    stored = {m["id"]: (m["name"], m["value"], m["target"]) for m in await rows(container, metrics)}
    assert len(stored) == n
    for i, metric_id in enumerate(ids):
        assert stored[metric_id] == (f"m{i % 7}", float(i), f"host-{i % 5}")


async def test_concurrent_violations_create_one_action(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create_policy(client, CPU_HOT)
    responses = await asyncio.gather(*(client.post(INGEST, json=HOT_SAMPLE) for _ in range(20)))
    assert [r.status_code for r in responses] == [201] * 20
    assert sum(len(r.json()["actions"]) for r in responses) == 1
    assert await count(container, actions) == 1


async def test_concurrent_batches_and_singles_are_all_stored(
    client: httpx.AsyncClient, container: Container
) -> None:
    batch = {"metrics": [{"name": "b", "value": v, "target": "t"} for v in range(MAX_BATCH)]}
    responses = await asyncio.gather(
        *(client.post(BATCH, json=batch) for _ in range(5)),
        *(client.post(INGEST, json={"name": "s", "value": v, "target": "t"}) for v in range(10)),
    )
    assert [r.status_code for r in responses] == [201] * 15
    assert [r.json()["stored"] for r in responses[:5]] == [MAX_BATCH] * 5
    assert await count(container, metrics, metrics.c.name == "b") == 5 * MAX_BATCH
    assert await count(container, metrics, metrics.c.name == "s") == 10


# --------------------------------------------------------------------------- Prometheus


async def test_prometheus_counts_ingest_and_violations(client: httpx.AsyncClient) -> None:
    await create_policy(client, {**CPU_HOT, "severity": "critical"})
    before = (await client.get("/metrics")).text
    assert 'vigil_policy_violations_total{policy_name="cpu-hot",severity="critical"} 0.0' in before
    await ingest(client, HOT_SAMPLE)
    await ingest(client, {**HOT_SAMPLE, "value": 10})
    r = await client.post(AGENT, json={"name": "cpu_usage", "value": 1, "target": "x"})
    assert r.status_code == 201
    r = await client.post(INGEST, json={"name": "cpu_usage", "value": "high"})
    assert r.status_code == 422
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'vigil_policy_violations_total{policy_name="cpu-hot",severity="critical"} 1.0' in text
    assert 'vigil_ingest_total{source="api"} 2.0' in text
    assert 'vigil_ingest_total{source="agent"} 1.0' in text


async def test_timestamps_too_far_in_the_future_are_refused(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    """A sample from the future would stay the target's latest value, hiding real ones."""
    limit = clock.now() + timedelta(seconds=container.settings.max_future_seconds)
    too_far = (limit + timedelta(seconds=1)).isoformat()
    r = await client.post(
        "/api/v1/ingest", json={"name": "mem", "value": 99, "target": "a", "timestamp": too_far}
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "timestamp"]
    batch = [
        {"name": "mem", "value": 1, "target": "a"},
        {"name": "mem", "value": 99, "target": "a", "timestamp": too_far},
    ]
    r = await client.post("/api/v1/ingest/batch", json={"metrics": batch})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "metrics", 1, "timestamp"]
    assert await count(container, metrics) == 0
    metrics_text = (await client.get("/metrics")).text
    assert 'vigil_ingest_rejected_total{reason="invalid"} 2.0' in metrics_text

    at_limit = {"name": "mem", "value": 1, "target": "a", "timestamp": limit.isoformat()}
    assert (await client.post("/api/v1/ingest", json=at_limit)).status_code == 201


async def test_a_client_that_gives_up_mid_body_is_499_not_an_error(
    app: FastAPI, client: httpx.AsyncClient, container: Container
) -> None:
    """An agent that times out while sending its batch: nothing to answer, nothing stored,
    counted as 499 (client closed request), never as a 5xx."""
    before = (await table_counts(container))["metrics"]
    messages: Iterator[Message] = iter(
        [
            {"type": "http.request", "body": b'{"metrics": [{"name": "cpu', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[Message] = []

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/ingest/batch",
        "raw_path": b"/api/v1/ingest/batch",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"vigil.test"),
            (b"content-type", b"application/json"),
            (b"content-length", b"4096"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("vigil.test", 80),
    }
    await app(scope, receive, send)  # no exception escapes

    assert not any(m["type"] == "http.response.start" for m in sent)
    assert (await table_counts(container))["metrics"] == before
    text = (await client.get("/metrics")).text
    assert (
        'vigil_http_requests_total{method="POST",route="/api/v1/ingest/batch",status="499"} 1.0'
        in text
    )
    assert 'status="500"' not in text
