"""A real OpenTelemetry SDK exporting to a running Vigil (``vigil serve`` on a free port, on
SQLite and PostgreSQL, access control on): ``OTLPMetricExporter`` pointed at ``/v1/metrics``
with an agent key in its ``headers``, gzip on. Its gauges fire an instant policy; its
histogram is reported as rejected in the answer's ``partial_success`` and counted; the same
data as an OTLP/JSON body gets the same answer in JSON."""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from typing import Any

import httpx
import pytest
import requests
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from tests.e2e.procs import Processes, VigilProcess

TARGET = "web-otel"


def _cpu(_options: CallbackOptions) -> Iterable[Observation]:
    yield Observation(97.0, {"cpu": "total"})


def _key(server: VigilProcess, name: str, role: str, admin: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {admin}"} if admin else {"X-Vigil-Request": "1"}
    r = httpx.post(
        f"{server.url}/api/v1/keys", json={"name": name, "role": role}, headers=headers, timeout=10
    )
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


def _counter(server: VigilProcess, line: str) -> float:
    """The value of the ``/metrics`` series ``line`` (its name and labels), 0 if absent."""
    for text in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if text.startswith(line + " "):
            return float(text.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.timeout(90)
def test_an_otel_sdk_exports_gauges_that_fire_a_policy_and_a_histogram_reported_rejected(
    procs: Processes, database_url: str
) -> None:
    server = procs.serve(no_worker=True, env={"DATABASE_URL": database_url})
    admin = _key(server, "admin", "admin")
    agent = _key(server, "collector", "agent", admin)
    as_admin = {"Authorization": f"Bearer {admin}"}
    policy = {
        "name": "cpu-hot",
        "target": "all",
        "condition": {"type": "metric_exceeds", "metric": "cpu_usage", "threshold": 90},
        "action": "scale-up",
        "auto_remediate": True,
    }
    r = httpx.post(f"{server.url}/api/v1/policies", json=policy, headers=as_admin, timeout=10)
    assert r.status_code == 201, r.text

    # What the exporter sent and got back, as the server answered it.
    exchanges: list[requests.Response] = []
    session = requests.Session()
    session.hooks["response"].append(lambda response, *_a, **_k: exchanges.append(response))
    exporter = OTLPMetricExporter(
        endpoint=f"{server.url}/v1/metrics",
        headers={"Authorization": f"Bearer {agent}"},
        compression=Compression.Gzip,
        session=session,
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        resource=Resource.create({"host.name": TARGET, "service.name": "shop"}),
        metric_readers=[reader],
    )
    meter = provider.get_meter("vigil-test")
    meter.create_observable_gauge("cpu_usage", callbacks=[_cpu])
    meter.create_gauge("memory_percent").set(41.5, {"kind": "rss"})
    latency = meter.create_histogram("http.server.duration", unit="ms")
    for value in (12.0, 30.0, 250.0):
        latency.record(value, {"route": "/cart"})
    try:
        assert provider.force_flush(timeout_millis=20_000), procs.tails()
    finally:
        provider.shutdown()

    # One export for the flush, one more as the provider shuts down (cumulative, the same
    # points again): each stored the two gauges and reported the histogram.
    assert len(exchanges) == 2
    for exchange in exchanges:
        assert exchange.status_code == 200, exchange.content
        assert exchange.headers["content-type"] == "application/x-protobuf"
        answer = ExportMetricsServiceResponse()
        answer.ParseFromString(exchange.content)
        assert answer.partial_success.rejected_data_points == 1
        assert "1 histogram points" in answer.partial_success.error_message

    # The gauges were stored for the resource's host, and fired the policy at once.
    actions = httpx.get(f"{server.url}/api/v1/actions", headers=as_admin, timeout=10).json()
    assert [(a["target"], a["action"]) for a in actions["actions"]] == [(TARGET, "scale-up")]
    assert _counter(server, 'vigil_ingest_total{source="otlp"}') == 4
    assert _counter(server, 'vigil_ingest_dropped_total{reason="unsupported"}') == 2

    # The same data as OTLP/JSON gets the same answer, in JSON.
    body = exchanges[0].request.body
    assert isinstance(body, bytes)
    sent = ExportMetricsServiceRequest()
    sent.ParseFromString(gzip.decompress(body))
    r = httpx.post(
        f"{server.url}/v1/metrics",
        content=json_format.MessageToJson(sent),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {agent}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    partial: dict[str, Any] = r.json()["partialSuccess"]
    assert int(partial["rejectedDataPoints"]) == 1
    assert "histogram" in partial["errorMessage"]
    assert _counter(server, 'vigil_ingest_total{source="otlp"}') == 6
    assert "otlp.points_rejected" in server.log_path.read_text()
