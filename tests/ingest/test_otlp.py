"""OTLP metrics into samples: which points are stored, with what name, value, time, tags and
target, and which are rejected (and how they are reported); bodies and their encodings."""

from __future__ import annotations

import gzip
import math
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.metrics.v1.metrics_pb2 import DataPointFlags

from tests.ingest.otlp_requests import (
    cumulative_sum,
    exponential_histogram,
    export,
    gauge,
    histogram,
    point,
    summary,
)
from vigil.errors import PayloadTooLarge
from vigil.ingest import otlp
from vigil.ingest.schemas import Limits, Sample

NOW = datetime(2026, 1, 19, 12, 0, tzinfo=UTC)
LIMITS = Limits(max_tags=4, max_tag_key_length=20, max_tag_value_length=30, max_target_length=25)
DECODER = otlp.Decoder(LIMITS, timedelta(seconds=600))


def test_gauge_points_become_samples_with_their_name_value_time_and_target() -> None:
    at = NOW - timedelta(seconds=30)
    decoded = DECODER.samples(
        export([gauge("system.cpu.utilization", point(0.93, at))], {"host.name": "web-01"}),
        NOW,
    )
    assert decoded.samples == [
        Sample("system.cpu.utilization", 0.93, "web-01", {"host.name": "web-01"}, at)
    ]
    assert decoded.rejected_points == 0
    assert not otlp.response(decoded).HasField("partial_success")


def test_sum_points_as_int_and_as_double_become_float_values() -> None:
    decoded = DECODER.samples(
        export(
            [cumulative_sum("requests", point(42)), cumulative_sum("bytes", point(1.5))],
            {"service.name": "api"},
        ),
        NOW,
    )
    assert [(s.name, s.value, s.target) for s in decoded.samples] == [
        ("requests", 42.0, "api"),
        ("bytes", 1.5, "api"),
    ]
    assert all(isinstance(s.value, float) for s in decoded.samples)


def test_a_point_without_a_time_is_stamped_now() -> None:
    [sample] = DECODER.samples(export([gauge("g", point(1.0))]), NOW).samples
    assert sample.ts == NOW


def test_point_attributes_override_resource_ones_and_other_kinds_render_as_text() -> None:
    resource: dict[str, str | bool] = {"host.name": "web-01", "region": "eu", "up": True}
    p = point(3.0, attrs={"region": "us", "cpu": 7, "ratio": 0.25})
    p.attributes.append(
        KeyValue(
            key="list",
            value=AnyValue(
                array_value=ArrayValue(values=[AnyValue(string_value="a"), AnyValue(int_value=2)])
            ),
        )
    )
    decoded = otlp.Decoder(
        Limits(max_tags=10, max_tag_key_length=20, max_tag_value_length=30),
        timedelta(seconds=600),
    ).samples(export([gauge("g", p)], resource), NOW)
    [sample] = decoded.samples
    assert sample.tags == {
        "host.name": "web-01",
        "region": "us",
        "up": "true",
        "cpu": "7",
        "ratio": "0.25",
        "list": '["a",2]',
    }


def test_maps_and_bytes_render_as_json_and_base64() -> None:
    p = point(1.0)
    p.attributes.extend(
        [
            KeyValue(
                key="m",
                value=AnyValue(
                    kvlist_value=KeyValueList(
                        values=[KeyValue(key="k", value=AnyValue(bool_value=False))]
                    )
                ),
            ),
            KeyValue(key="b", value=AnyValue(bytes_value=b"\x01\x02")),
            KeyValue(key="empty", value=AnyValue()),
        ]
    )
    [sample] = DECODER.samples(export([gauge("g", p)]), NOW).samples
    assert sample.tags == {"m": '{"k":false}', "b": "AQI=", "empty": ""}


@pytest.mark.parametrize(
    ("resource", "attrs", "expected"),
    [
        (
            {"service.name": "api", "k8s.pod.name": "api-7d9f", "service.instance.id": "i-1"},
            {},
            "i-1",
        ),
        ({"service.name": "api", "k8s.pod.name": "api-7d9f"}, {}, "api-7d9f"),
        ({"service.name": "api", "host.name": "web-01"}, {}, "web-01"),
        ({"service.name": "api"}, {}, "api"),
        # The point's attribute of a name overrides its resource's; the order still rules.
        ({"host.name": "web-01"}, {"host.name": "web-02"}, "web-02"),
        ({"host.name": "web-01"}, {"service.name": "api"}, "web-01"),
        ({"service.name": "api"}, {"k8s.pod.name": "api-1"}, "api-1"),
        ({"region": "eu"}, {}, None),
        ({"host.name": ""}, {"service.name": "api"}, "api"),
    ],
)
def test_the_target_is_the_first_present_of_the_otlp_attributes(
    resource: dict[str, str], attrs: dict[str, str], expected: str | None
) -> None:
    [sample] = DECODER.samples(export([gauge("g", point(1.0, attrs=attrs))], resource), NOW).samples
    assert sample.target == expected


def test_histogram_exponential_histogram_and_summary_points_are_rejected_and_reported() -> None:
    decoded = DECODER.samples(
        export(
            [
                gauge("kept", point(1.0)),
                histogram("latency", points=2),
                exponential_histogram("size"),
                summary("rpc", points=3),
            ],
            {"host.name": "web-01"},
        ),
        NOW,
    )
    assert [s.name for s in decoded.samples] == ["kept"]
    assert decoded.rejected_points == 6
    assert decoded.unsupported == 6
    answer = otlp.response(decoded)
    assert answer.partial_success.rejected_data_points == 6
    message = answer.partial_success.error_message
    assert "2 histogram points" in message
    assert "1 exponential histogram points" in message
    assert "3 summary points" in message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinite_values_are_dropped_counted_and_reported(value: float) -> None:
    decoded = DECODER.samples(export([gauge("g", point(value), point(2.0))]), NOW)
    assert [s.value for s in decoded.samples] == [2.0]
    assert decoded.not_finite == 1
    assert otlp.response(decoded).partial_success.rejected_data_points == 1
    assert "NaN or infinite" in decoded.message()


def test_a_point_with_no_recorded_value_is_skipped_quietly() -> None:
    ended = point(5.0)
    ended.flags = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
    decoded = DECODER.samples(export([gauge("g", ended, point(1.0))]), NOW)
    assert [s.value for s in decoded.samples] == [1.0]
    assert decoded.rejected_points == 0


@pytest.mark.parametrize(
    ("name", "resource", "attrs", "why"),
    [
        ("", {}, {}, "name is empty"),
        ("x" * 256, {}, {}, "name is empty, over 255"),
        ("bad\nname", {}, {}, "not plain text"),
        (" padded", {}, {}, "not plain text"),
        ("g", {"a": "1", "b": "2", "c": "3"}, {"d": "4", "e": "5"}, "more than 4 attributes"),
        ("g", {}, {"k" * 21: "v"}, "attribute name not 1 to 20"),
        ("g", {}, {"k": "v" * 31}, "attribute value over 30"),
        ("g", {}, {"k": "line\nbreak"}, "control characters"),
        ("g", {"host.name": "h" * 26}, {}, "target is over 25"),
    ],
)
def test_points_beyond_the_limits_are_rejected_one_by_one(
    name: str, resource: dict[str, str], attrs: dict[str, str], why: str
) -> None:
    decoded = DECODER.samples(
        export([gauge(name, point(1.0, attrs=attrs)), gauge("fine", point(2.0))], resource),
        NOW,
    )
    if "target" in why:  # the resource's target spoils both points
        assert decoded.samples == []
    else:
        assert [s.name for s in decoded.samples] == ["fine"]
    assert why in decoded.message()


def test_points_too_far_ahead_of_the_clock_are_rejected() -> None:
    decoded = DECODER.samples(
        export(
            [
                gauge("soon", point(1.0, NOW + timedelta(seconds=590))),
                gauge("late", point(1.0, NOW + timedelta(seconds=700))),
            ]
        ),
        NOW,
    )
    assert [s.name for s in decoded.samples] == ["soon"]
    assert "too far ahead" in decoded.message()


def test_protobuf_and_json_bodies_decode_to_the_same_request() -> None:
    request = export([gauge("g", point(7, NOW))], {"host.name": "web-01"})
    from_protobuf = otlp.parse(request.SerializeToString(), otlp.PROTOBUF)
    from_json = otlp.parse(json_format.MessageToJson(request).encode(), otlp.JSON)
    assert from_protobuf == request == from_json


def test_otlp_json_as_exporters_write_it_with_unknown_fields_ignored() -> None:
    body = b"""{"resourceMetrics": [{
        "resource": {"attributes": [{"key": "host.name", "value": {"stringValue": "web-01"}}]},
        "scopeMetrics": [{"scope": {"name": "m", "someFutureField": 1}, "metrics": [
          {"name": "cpu", "unit": "1", "gauge": {"dataPoints": [
            {"timeUnixNano": "1768824000000000000", "asDouble": 0.5}]}},
          {"name": "reqs", "sum": {"aggregationTemporality": 2, "isMonotonic": true,
            "dataPoints": [{"asInt": "12"}]}}
        ]}]}]}"""
    decoded = DECODER.samples(otlp.parse(body, otlp.JSON), NOW)
    assert [(s.name, s.value, s.target, s.ts) for s in decoded.samples] == [
        ("cpu", 0.5, "web-01", NOW),
        ("reqs", 12.0, "web-01", NOW),
    ]


@pytest.mark.parametrize(
    ("body", "media"),
    [
        (b"\xff\xff\xff", otlp.PROTOBUF),
        (b"\x0a\x05\x0a\x03", otlp.PROTOBUF),  # truncated
        (b"{", otlp.JSON),
        (b'{"resourceMetrics": 5}', otlp.JSON),
        (b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"gauge": 5}]}]}]}', otlp.JSON),
        (b"\xff\xfe", otlp.JSON),
        (b"[" * 100_000 + b"]" * 100_000, otlp.JSON),
    ],
)
def test_a_body_that_is_not_an_export_request_is_invalid(body: bytes, media: str) -> None:
    with pytest.raises(otlp.OtlpInvalid):
        otlp.parse(body, media)


def test_gzip_and_deflate_bodies_are_decompressed() -> None:
    data = export([gauge("g", point(1.0))]).SerializeToString()
    assert otlp.decompress(gzip.compress(data), "gzip", 1000) == data
    assert otlp.decompress(zlib.compress(data), "deflate", 1000) == data
    assert otlp.decompress(data, "identity", 1000) == data
    assert otlp.decompress(gzip.compress(data) + gzip.compress(data), "gzip", 1000) == data * 2


def test_a_body_inflating_past_the_limit_is_refused_without_inflating_it_all() -> None:
    bomb = gzip.compress(b"\x00" * 50_000_000)
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge):
        otlp.decompress(bomb, "gzip", 1_000_000)


@pytest.mark.parametrize(
    "body", [b"not gzip", gzip.compress(b"x" * 100, mtime=0)[:-10]], ids=["not gzip", "truncated"]
)
def test_corrupt_or_truncated_gzip_is_invalid(body: bytes) -> None:
    with pytest.raises(otlp.OtlpInvalid):
        otlp.decompress(body, "gzip", 1000)


def test_an_unknown_content_encoding_or_type_is_unsupported() -> None:
    with pytest.raises(otlp.UnsupportedEncoding):
        otlp.decompress(b"x", "zstd", 1000)
    with pytest.raises(otlp.UnsupportedEncoding):
        otlp.media_type("text/plain")
    assert otlp.media_type("Application/JSON; charset=utf-8") == otlp.JSON


def test_the_response_is_encoded_in_the_request_type() -> None:
    decoded = DECODER.samples(export([histogram("h")]), NOW)
    answer = otlp.response(decoded)
    parsed = ExportMetricsServiceResponse()
    parsed.ParseFromString(otlp.encode(answer, otlp.PROTOBUF))
    assert parsed == answer
    assert json_format.Parse(otlp.encode(answer, otlp.JSON), ExportMetricsServiceResponse()) == (
        answer
    )


def test_the_target_attributes_can_be_configured() -> None:
    decoder = otlp.Decoder(LIMITS, timedelta(seconds=600), ("k8s.pod.name", "host.name"))
    request = export(
        [gauge("g", point(1.0)), gauge("h", point(1.0, attrs={"k8s.pod.name": "api-1"}))],
        {"host.name": "node-3", "service.name": "api"},
    )
    assert [s.target for s in decoder.samples(request, NOW).samples] == ["node-3", "api-1"]
