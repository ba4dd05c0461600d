"""``POST /api/v1/write`` (Prometheus remote write 1.0) through the ASGI app, on SQLite and
PostgreSQL: what is stored (only what a policy reads, or everything), what is dropped and
counted, every refusal (with nothing written and no 5xx), overload, and access control.

Requests carry only the headers Prometheus sends (no ``X-Vigil-Request``): the cross-site
check lets a protobuf body through, and refuses what a web page could send.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.api.test_access import make_keys
from tests.conftest import CLIENT_HEADERS
from tests.remote_write import HEADERS, Series, body, compress, write_request
from vigil.clock import FakeClock
from vigil.container import Container
from vigil.db.tables import actions, metric_latest, metrics
from vigil.ingest.remote_write import STALE_NAN
from vigil.ingest.store import lock_targets

WRITE = "/api/v1/write"
MAX_BODY = 16384


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_body_bytes": MAX_BODY, "max_tags": 4, "max_tag_value_length": 32}


@pytest.fixture
async def prometheus(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client sending what Prometheus sends: its headers, none of Vigil's."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://vigil.test", headers=HEADERS
    ) as c:
        yield c


def ms(clock: FakeClock, seconds_ago: float = 0.0) -> int:
    return int((clock.now() - timedelta(seconds=seconds_ago)).timestamp() * 1000)


def cpu(value: float, at: int, host: str = "web-1") -> Series:
    labels = {"__name__": "cpu_usage", "instance": f"{host}:9100", "job": "node"}
    return (labels, [(value, at)])


def load(value: float, at: int) -> Series:
    return ({"__name__": "node_load1", "instance": "web-1:9100", "job": "node"}, [(value, at)])


async def add_policy(client: httpx.AsyncClient, metric: str = "cpu_usage") -> None:
    policy = {
        "name": f"{metric}-high",
        "severity": "warning",
        "target": "all",
        "auto_remediate": True,
        "condition": {"type": "metric_exceeds", "metric": metric, "threshold": 90},
        "action": "scale-up",
    }
    assert (await client.post("/api/v1/policies", json=policy)).status_code == 201


async def stored(container: Container) -> list[dict[str, Any]]:
    async with container.database.read() as conn:
        result = await conn.execute(select(metrics).order_by(metrics.c.id))
        return [dict(r._mapping) for r in result]


async def written(container: Container) -> list[int]:
    """How many metrics, latest values and actions the database holds."""
    counts = []
    async with container.database.read() as conn:
        for table in (metrics, metric_latest, actions):
            query = select(func.count()).select_from(table)
            counts.append(int((await conn.execute(query)).scalar_one()))
    return counts


def counted(container: Container, name: str, **labels: str) -> float:
    return container.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_series_a_policy_reads_are_stored_with_tags_and_target(
    client: httpx.AsyncClient,
    prometheus: httpx.AsyncClient,
    container: Container,
    clock: FakeClock,
) -> None:
    await add_policy(client)
    at = ms(clock, 1.5)
    response = await prometheus.post(WRITE, content=body([cpu(42.5, at), load(3.0, at)]))
    assert response.status_code == 204, response.text
    assert response.content == b""
    [row] = await stored(container)
    assert (row["name"], row["value"], row["target"]) == ("cpu_usage", 42.5, "web-1")
    assert row["tags"] == {"instance": "web-1:9100", "job": "node"}
    assert row["ts"].replace(tzinfo=None) == (clock.now() - timedelta(seconds=1.5)).replace(
        tzinfo=None
    )
    assert counted(container, "vigil_ingest_total", source="remote_write") == 1
    assert counted(container, "vigil_ingest_dropped_total", reason="unused") == 1


async def test_a_policy_added_later_makes_its_metric_stored_from_then_on(
    client: httpx.AsyncClient, prometheus: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    assert (await prometheus.post(WRITE, content=body([load(1.0, ms(clock))]))).status_code == 204
    assert await stored(container) == []
    await add_policy(client, "node_load1")
    assert (await prometheus.post(WRITE, content=body([load(2.0, ms(clock))]))).status_code == 204
    assert [r["value"] for r in await stored(container)] == [2.0]
    assert counted(container, "vigil_ingest_dropped_total", reason="unused") == 1


@pytest.mark.parametrize("settings_overrides", [{"remote_write_store": "all"}])
async def test_all_stores_every_series(
    prometheus: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    at = ms(clock)
    assert (
        await prometheus.post(WRITE, content=body([cpu(1.0, at), load(2.0, at)]))
    ).status_code == 204
    assert sorted(r["name"] for r in await stored(container)) == ["cpu_usage", "node_load1"]
    assert counted(container, "vigil_ingest_dropped_total", reason="unused") == 0


async def test_a_violating_sample_acts_through_the_policies(
    client: httpx.AsyncClient, prometheus: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await add_policy(client)
    series = [cpu(95.0, ms(clock), "web-1"), cpu(10.0, ms(clock), "web-2")]
    assert (await prometheus.post(WRITE, content=body(series))).status_code == 204
    listed = (await client.get("/api/v1/actions")).json()["actions"]
    assert [(a["action"], a["target"]) for a in listed] == [("scale-up", "web-1")]


async def test_stale_markers_are_skipped_and_other_non_finite_values_counted(
    client: httpx.AsyncClient, prometheus: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await add_policy(client)
    at = ms(clock)
    labels = cpu(0.0, at)[0]
    samples = [(1.0, at - 3000), (STALE_NAN, at - 2000), (math.nan, at - 1000), (math.inf, at)]
    assert (await prometheus.post(WRITE, content=body([(labels, samples)]))).status_code == 204
    assert [r["value"] for r in await stored(container)] == [1.0]
    assert counted(container, "vigil_ingest_dropped_total", reason="not_finite") == 2
    assert counted(container, "vigil_ingest_total", source="remote_write") == 1


def _bad_bodies() -> list[tuple[str, bytes, dict[str, str], int]]:
    good = body([cpu(1.0, 0)])
    json_headers = {**HEADERS, "Content-Type": "application/json"}
    raw = write_request([cpu(1.0, 0)] * 400).SerializeToString()  # about 24 KiB
    assert len(raw) > MAX_BODY
    twice = write_request([cpu(1.0, 0)])
    twice.timeseries[0].labels.add(name="__name__", value="other")  # after cpu_usage's
    return [
        ("a label twice", compress(twice.SerializeToString()), HEADERS, 400),
        ("not snappy", b"\x00garbage", HEADERS, 400),
        ("truncated snappy", good[:-4], HEADERS, 400),
        ("not protobuf", compress(b"\xff\xfe\xfd"), HEADERS, 400),
        ("no __name__", body([({"job": "node"}, [(1.0, 0)])]), HEADERS, 400),
        ("before the year 1", body([cpu(1.0, -62_135_596_800_001)]), HEADERS, 400),
        (
            "too many labels",
            body([({"__name__": "cpu_usage", **{f"l{i}": "v" for i in range(5)}}, [])]),
            HEADERS,
            400,
        ),
        (
            "label value too long",
            body([({"__name__": "cpu_usage", "k": "v" * 33}, [])]),
            HEADERS,
            400,
        ),
        ("json content type", good, json_headers, 415),
        ("no content encoding", good, {**HEADERS, "Content-Encoding": "identity"}, 415),
        ("gzip", good, {**HEADERS, "Content-Encoding": "gzip"}, 415),
        (
            "remote write 2.0",
            good,
            {
                **HEADERS,
                "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            },
            415,
        ),
        ("over the body limit", b"\x00" * (MAX_BODY + 1), HEADERS, 413),
        ("uncompresses over it", compress(raw), HEADERS, 413),
    ]


async def test_each_bad_body_is_refused_and_writes_nothing(
    client: httpx.AsyncClient, prometheus: httpx.AsyncClient, container: Container
) -> None:
    await add_policy(client)
    before = await written(container)
    for case, data, headers, status in _bad_bodies():
        response = await prometheus.post(WRITE, content=data, headers=headers)
        assert response.status_code == status, (case, response.text)
        assert response.json()["detail"], case
    assert await written(container) == before
    assert counted(container, "vigil_ingest_total", source="remote_write") == 0
    assert counted(container, "vigil_ingest_rejected_total", reason="invalid") == 12


@pytest.mark.parametrize(
    "settings_overrides", [{"ingest_queue_limit": 1, "remote_write_store": "all"}]
)
async def test_overload_answers_503_with_retry_after_and_the_retry_is_stored(
    prometheus: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    sent: list[asyncio.Task[httpx.Response]] = []
    refused: httpx.Response | None = None
    async with container.database.write() as conn:
        await lock_targets(conn, targets=["web-1"])  # the ingest writer waits for it
        for i in range(10):
            task = asyncio.create_task(
                prometheus.post(WRITE, content=body([cpu(float(i), ms(clock))]))
            )
            done, _ = await asyncio.wait([task], timeout=0.5)
            if done:
                refused = task.result()
                break
            sent.append(task)
    assert refused is not None, "no request was refused while ingest was held"
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) > 0
    assert [r.status_code for r in await asyncio.gather(*sent)] == [204] * len(sent)
    assert len(await stored(container)) == len(sent)


async def test_a_web_page_cannot_send_to_it(
    client: httpx.AsyncClient, prometheus: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    """Only a request a browser must ask first for (a preflight) gets through: a form or
    text/plain body is refused before the route, with or without a custom header."""
    await add_policy(client)
    data = body([cpu(1.0, ms(clock))])
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        response = await prometheus.post(
            WRITE, content=data, headers={"Content-Type": content_type}
        )
        assert response.status_code == 415, response.text
        assert "application/x-protobuf" in response.json()["detail"]
    response = await client.post(WRITE, content=data, headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    # No body type and no custom header: what any page could send.
    response = await prometheus.post(WRITE, content=data, headers={"Content-Type": ""})
    assert response.status_code == 415, response.text
    assert await stored(container) == []


@pytest.mark.parametrize("settings_overrides", [{"auth": "required"}])
async def test_an_agent_key_sent_as_prometheus_sends_it(
    app: FastAPI, prometheus: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    keys = await make_keys(container)
    admin = {**CLIENT_HEADERS, "Authorization": f"Bearer {keys['admin']}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://vigil.test") as admin_client:
        policy = {
            "name": "cpu-high",
            "target": "all",
            "condition": {"type": "metric_exceeds", "metric": "cpu_usage", "threshold": 90},
            "action": "scale-up",
        }
        created = await admin_client.post("/api/v1/policies", json=policy, headers=admin)
        assert created.status_code == 201, created.text
    data = body([cpu(1.0, ms(clock))])
    assert (await prometheus.post(WRITE, content=data)).status_code == 401
    for role, status in (("viewer", 403), ("operator", 403), ("agent", 204)):
        auth = {"Authorization": f"Bearer {keys[role]}"}
        response = await prometheus.post(WRITE, content=data, headers=auth)
        assert response.status_code == status, (role, response.text)
    [row] = await stored(container)
    assert row["target"] == "web-1"
