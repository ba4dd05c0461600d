"""OTLP metrics export requests for the tests, built with the generated classes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
    Summary,
    SummaryDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

Attributes = Mapping[str, str | int | float | bool]


def nanos(moment: datetime) -> int:
    """``moment`` as OTLP's ``time_unix_nano``."""
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000) * 1000


def value_of(value: str | int | float | bool) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=value)


def attributes(values: Attributes) -> list[KeyValue]:
    return [KeyValue(key=k, value=value_of(v)) for k, v in values.items()]


def point(
    value: float | int, at: datetime | None = None, attrs: Attributes | None = None
) -> NumberDataPoint:
    """A number point: ``as_int`` for an int, ``as_double`` for a float; time 0 without
    ``at``."""
    p = NumberDataPoint(attributes=attributes(attrs or {}))
    if at is not None:
        p.time_unix_nano = nanos(at)
    if isinstance(value, int):
        p.as_int = value
    else:
        p.as_double = value
    return p


def gauge(name: str, *points: NumberDataPoint) -> Metric:
    return Metric(name=name, gauge=Gauge(data_points=points))


def cumulative_sum(name: str, *points: NumberDataPoint) -> Metric:
    return Metric(
        name=name,
        sum=Sum(
            data_points=points,
            aggregation_temporality=AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE,
            is_monotonic=True,
        ),
    )


def histogram(name: str, points: int = 1) -> Metric:
    return Metric(
        name=name,
        histogram=Histogram(
            data_points=[
                HistogramDataPoint(count=2, sum=3.0, bucket_counts=[1, 1], explicit_bounds=[1.0])
                for _ in range(points)
            ],
            aggregation_temporality=AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE,
        ),
    )


def exponential_histogram(name: str, points: int = 1) -> Metric:
    return Metric(
        name=name,
        exponential_histogram=ExponentialHistogram(
            data_points=[ExponentialHistogramDataPoint(count=1, scale=2) for _ in range(points)]
        ),
    )


def summary(name: str, points: int = 1) -> Metric:
    return Metric(
        name=name,
        summary=Summary(data_points=[SummaryDataPoint(count=1, sum=1.0) for _ in range(points)]),
    )


def export(
    metrics: Sequence[Metric], resource: Attributes | None = None
) -> ExportMetricsServiceRequest:
    """One resource (with ``resource`` attributes) holding ``metrics`` in one scope."""
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=Resource(attributes=attributes(resource or {})),
                scope_metrics=[ScopeMetrics(metrics=metrics)],
            )
        ]
    )
