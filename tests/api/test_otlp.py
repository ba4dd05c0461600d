"""``POST /v1/metrics`` (OTLP/HTTP) through the ASGI app, on SQLite and on PostgreSQL: protobuf
and JSON bodies, gzip, the answer in the request's type with its ``partial_success``, every
refusal writing nothing, the cross-site check letting exporters through, and agent keys."""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from tests.api.support import started_client
from tests.api.test_access import make_keys
from tests.api.test_ingest import create_policy, exceeds, policy, rows, written
from tests.ingest.otlp_requests import cumulative_sum, export, gauge, histogram, point
from vigil.container import Container
from vigil.db.tables import actions, metrics
from vigil.errors import Unavailable
from vigil.ingest.pipeline import IngestResult
from vigil.ingest.schemas import Sample
from vigil.settings import Settings

PATH = "/v1/metrics"
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
MAX_BODY = 4096
MAX_BATCH = 5


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_body_bytes": MAX_BODY, "max_batch_size": MAX_BATCH}


def hot_cpu() -> ExportMetricsServiceRequest:
    """A host's CPU above 90 (a gauge), a counter, and a histogram Vigil does not store."""
    return export(
        [
            gauge("cpu_usage", point(97.0)),
            cumulative_sum("requests_total", point(1200)),
            histogram("http.server.duration", points=2),
        ],
        {"host.name": "web-01", "service.name": "api"},
    )


def protobuf_answer(response: httpx.Response) -> ExportMetricsServiceResponse:
    assert response.status_code == 200, response.content
    assert response.headers["content-type"] == "application/x-protobuf"
    answer = ExportMetricsServiceResponse()
    answer.ParseFromString(response.content)
    return answer


def ingested(container: Container, source: str = "otlp") -> float:
    value = container.metrics.registry.get_sample_value("vigil_ingest_total", {"source": source})
    return value or 0.0


async def test_a_protobuf_export_stores_gauges_and_sums_and_fires_an_instant_policy(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create_policy(client, policy("cpu-hot", exceeds("cpu_usage", 90)))
    r = await client.post(PATH, content=hot_cpu().SerializeToString(), headers=PROTOBUF)
    answer = protobuf_answer(r)
    assert answer.partial_success.rejected_data_points == 2
    assert "2 histogram points" in answer.partial_success.error_message
    stored = {(m["name"], m["target"], m["value"]) for m in await rows(container, metrics)}
    assert stored == {("cpu_usage", "web-01", 97.0), ("requests_total", "web-01", 1200.0)}
    [action] = await rows(container, actions)
    assert (action["target"], action["action"]) == ("web-01", "scale-up")
    assert ingested(container) == 2
    dropped = container.metrics.registry.get_sample_value(
        "vigil_ingest_dropped_total", {"reason": "unsupported"}
    )
    assert dropped == 2


async def test_tags_are_the_resource_and_point_attributes(
    client: httpx.AsyncClient, container: Container
) -> None:
    request = export(
        [gauge("queue_depth", point(3, attrs={"queue": "mail", "region": "us"}))],
        {"service.name": "worker", "region": "eu"},
    )
    protobuf_answer(await client.post(PATH, content=request.SerializeToString(), headers=PROTOBUF))
    [stored] = await rows(container, metrics)
    assert stored["target"] == "worker"
    assert stored["tags"] == {"service.name": "worker", "region": "us", "queue": "mail"}


async def test_a_json_export_is_answered_in_json(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create_policy(client, policy("cpu-hot", exceeds("cpu_usage", 90)))
    body = json_format.MessageToJson(hot_cpu())
    r = await client.post(PATH, content=body, headers=JSON)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    answer = r.json()
    assert answer["partialSuccess"]["rejectedDataPoints"] in ("2", 2)
    assert "histogram" in answer["partialSuccess"]["errorMessage"]
    assert len(await rows(container, actions)) == 1


async def test_a_fully_accepted_export_has_no_partial_success(
    client: httpx.AsyncClient, container: Container
) -> None:
    request = export([gauge("cpu_usage", point(1.0))], {"host.name": "web-01"})
    r = await client.post(PATH, content=json_format.MessageToJson(request), headers=JSON)
    assert r.status_code == 200
    assert r.json() == {}
    answer = protobuf_answer(
        await client.post(PATH, content=request.SerializeToString(), headers=PROTOBUF)
    )
    assert not answer.HasField("partial_success")


async def test_a_gzip_body_is_decompressed(client: httpx.AsyncClient, container: Container) -> None:
    body = gzip.compress(hot_cpu().SerializeToString())
    r = await client.post(PATH, content=body, headers={**PROTOBUF, "Content-Encoding": "gzip"})
    protobuf_answer(r)
    assert len(await rows(container, metrics)) == 2


async def test_nan_points_are_dropped_and_counted(
    client: httpx.AsyncClient, container: Container
) -> None:
    request = export([gauge("g", point(float("nan")), point(1.0))], {"host.name": "h"})
    answer = protobuf_answer(
        await client.post(PATH, content=request.SerializeToString(), headers=PROTOBUF)
    )
    assert answer.partial_success.rejected_data_points == 1
    assert [m["value"] for m in await rows(container, metrics)] == [1.0]
    dropped = container.metrics.registry.get_sample_value(
        "vigil_ingest_dropped_total", {"reason": "not_finite"}
    )
    assert dropped == 1


def _status(response: httpx.Response) -> Status:
    status = Status()
    if response.headers["content-type"] == "application/x-protobuf":
        status.ParseFromString(response.content)
    else:
        json_format.Parse(response.content, status)
    return status


BOMB = gzip.compress(b"\x00" * (MAX_BODY * 100))
MANY = export([gauge("g", *(point(float(i)) for i in range(MAX_BATCH + 1)))], {"host.name": "h"})


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"\xff\xff\xff\xff", PROTOBUF, 400),
        (b"\x0a\x05\x0a\x03", PROTOBUF, 400),
        (b'{"resourceMetrics": 5}', JSON, 400),
        (b"{", JSON, 400),
        (b"\x00garbage", {**PROTOBUF, "Content-Encoding": "gzip"}, 400),
        (
            gzip.compress(hot_cpu().SerializeToString())[:-8],
            {**PROTOBUF, "Content-Encoding": "gzip"},
            400,
        ),
        (hot_cpu().SerializeToString(), {**PROTOBUF, "Content-Encoding": "zstd"}, 415),
        (hot_cpu().SerializeToString(), {"Content-Type": "application/grpc"}, 415),
        (hot_cpu().SerializeToString(), {"Content-Type": "text/plain"}, 415),
        (BOMB, {**PROTOBUF, "Content-Encoding": "gzip"}, 413),
        (b"\x00" * (MAX_BODY + 1), PROTOBUF, 413),
        (MANY.SerializeToString(), PROTOBUF, 413),
    ],
)
async def test_a_bad_request_is_refused_and_writes_nothing(
    client: httpx.AsyncClient,
    container: Container,
    content: bytes,
    headers: dict[str, str],
    status: int,
) -> None:
    await create_policy(client, policy("cpu-hot", exceeds("cpu_usage", 90)))
    before = await written(container)
    r = await client.post(PATH, content=content, headers=headers)
    assert r.status_code == status, r.content
    assert await written(container) == before
    assert ingested(container) == 0
    media = headers["Content-Type"]
    if r.headers["content-type"] == media:  # the route's own answer: a google.rpc.Status
        assert _status(r).message
    else:  # refused before the route (body size, cross-site): Vigil's JSON error
        assert r.headers["content-type"] == "application/json"
        assert orjson.loads(r.content)["detail"]


async def test_an_overloaded_ingest_is_a_503_with_retry_after(
    client: httpx.AsyncClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def overloaded(samples: list[Sample], **_: Any) -> IngestResult:
        raise Unavailable("ingest is overloaded; retry later")

    monkeypatch.setattr(container.ingest, "ingest", overloaded)
    r = await client.post(PATH, content=hot_cpu().SerializeToString(), headers=PROTOBUF)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"
    assert "overloaded" in _status(r).message


async def test_an_exporter_needs_no_vigil_header_but_other_routes_still_refuse_protobuf(
    app: FastAPI, container: Container
) -> None:
    bare = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://vigil.test")
    async with bare:
        r = await bare.post(PATH, content=hot_cpu().SerializeToString(), headers=PROTOBUF)
        assert r.status_code == 200
        other = await bare.post("/api/v1/ingest/batch", content=b"\x0a\x00", headers=PROTOBUF)
        assert other.status_code == 415
        form = await bare.post(PATH, content=b"a=b", headers={"Content-Type": "text/plain"})
        assert form.status_code == 415
    assert len(await rows(container, metrics)) == 2


async def test_with_access_control_an_agent_key_sent_as_bearer_may_export(
    app: FastAPI, container: Container
) -> None:
    keys = await make_keys(container)
    body = hot_cpu().SerializeToString()
    bare = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://vigil.test")
    async with bare:
        anonymous = await bare.post(PATH, content=body, headers=PROTOBUF)
        assert anonymous.status_code == 401
        viewer = await bare.post(
            PATH, content=body, headers={**PROTOBUF, "Authorization": f"Bearer {keys['viewer']}"}
        )
        assert viewer.status_code == 403
        assert len(await rows(container, metrics)) == 0
        agent = await bare.post(
            PATH, content=body, headers={**PROTOBUF, "Authorization": f"Bearer {keys['agent']}"}
        )
        protobuf_answer(agent)
    assert len(await rows(container, metrics)) == 2


async def test_the_target_attributes_come_from_the_settings(settings: Settings) -> None:
    configured = settings.model_copy(update={"otlp_target_attributes": ["k8s.pod.name"]})
    request = export(
        [gauge("cpu_usage", point(1.0))], {"host.name": "node-3", "k8s.pod.name": "api-1"}
    )
    async with started_client(configured) as (client, container):
        r = await client.post(PATH, content=request.SerializeToString(), headers=PROTOBUF)
        protobuf_answer(r)
        [stored] = await rows(container, metrics)
    assert stored["target"] == "api-1"
