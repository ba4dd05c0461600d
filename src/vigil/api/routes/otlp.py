"""OTLP/HTTP metrics: ``POST /v1/metrics``, the path an OpenTelemetry exporter (SDK or
Collector) posts to when given Vigil's base URL.

The body is binary protobuf or OTLP/JSON, optionally gzip- or deflate-compressed; the
answer is an ``ExportMetricsServiceResponse`` in the request's type, 200 even when some
points were rejected (then in its ``partial_success``), as the OTLP specification asks.
A request that cannot be read at all is refused whole: 400, 413 or 415 with a
``google.rpc.Status`` body (in the request's type when it is one of OTLP's), which exporters
do not retry; an overloaded or unavailable Vigil answers 503 with ``Retry-After``, which
they do retry.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from google.protobuf import json_format
from google.rpc.code_pb2 import Code
from google.rpc.status_pb2 import Status
from starlette.responses import Response

from vigil.api.deps import actor_of, container_of
from vigil.container import Container
from vigil.errors import PayloadTooLarge, VigilError
from vigil.http.errors import retry_headers
from vigil.ingest import otlp
from vigil.ingest.labels import OTLP_TARGET_ATTRIBUTES
from vigil.observability.logging import get_logger

log = get_logger(__name__)

router = APIRouter(tags=["otlp"])

_CODES = {
    400: Code.INVALID_ARGUMENT,
    413: Code.RESOURCE_EXHAUSTED,
    415: Code.INVALID_ARGUMENT,
    429: Code.RESOURCE_EXHAUSTED,
    503: Code.UNAVAILABLE,
}
"""The gRPC code of a ``google.rpc.Status`` answer, by HTTP status."""

_OTLP_CONTENT = {
    otlp.PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
    otlp.JSON: {"schema": {"type": "object"}},
}
_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An OTLP ExportMetricsServiceRequest (binary protobuf or OTLP/JSON), "
        "optionally with Content-Encoding gzip or deflate",
        "content": _OTLP_CONTENT,
    },
}
_STATUS = {"description": "A google.rpc.Status, in the request's type", "content": _OTLP_CONTENT}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An ExportMetricsServiceResponse in the request's type; points that "
        "were not stored are counted in its partial_success",
        "content": _OTLP_CONTENT,
    },
    400: _STATUS,
    413: {
        "description": "A body above VIGIL_MAX_BODY_BYTES (compressed or not), or more "
        "points than VIGIL_MAX_BATCH_SIZE",
        "content": _OTLP_CONTENT,
    },
    415: {"description": "Not an OTLP Content-Type or Content-Encoding", "content": _OTLP_CONTENT},
    503: {
        "description": "Overloaded, or the database is unavailable; retry after Retry-After",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        "content": _OTLP_CONTENT,
    },
}


@router.post(
    "/v1/metrics",
    response_class=Response,
    responses=_RESPONSES,
    openapi_extra=_BODY,
)
async def export_metrics(request: Request) -> Response:
    """Store an OTLP metrics export's gauge and sum points, evaluate the policies reading
    them, and record any resulting actions; report the points not stored."""
    container = container_of(request)
    media = otlp.JSON
    try:
        media = otlp.media_type(request.headers.get("content-type", ""))
        decoded = await _decoded(request, container, media)
        if decoded.samples:
            await container.ingest.ingest(decoded.samples, source="otlp", actor=actor_of(request))
    except VigilError as exc:
        if exc.status_code in (400, 415):
            container.metrics.ingest_rejected_total.labels(reason="invalid").inc()
        elif exc.status_code == 413:
            container.metrics.ingest_rejected_total.labels(reason="too_large").inc()
        return _status(exc, media)
    _report(container, decoded)
    return Response(otlp.encode(otlp.response(decoded), media), media_type=media)


async def _decoded(request: Request, container: Container, media: str) -> otlp.Decoded:
    settings = container.settings
    body = await request.body()
    data = otlp.decompress(
        body, request.headers.get("content-encoding", ""), settings.max_body_bytes
    )
    decoder = otlp.Decoder(
        container.limits,
        timedelta(seconds=settings.max_future_seconds),
        tuple(settings.otlp_target_attributes) or OTLP_TARGET_ATTRIBUTES,
    )
    decoded = decoder.samples(otlp.parse(data, media), container.clock.now())
    limit = settings.max_batch_size
    if len(decoded.samples) > limit:
        raise PayloadTooLarge(
            f"{len(decoded.samples)} data points are above the limit of {limit} a request"
        )
    return decoded


def _report(container: Container, decoded: otlp.Decoded) -> None:
    """Count and log the points a request sent that were not stored."""
    if not decoded.rejected:
        return
    dropped = container.metrics.ingest_dropped_total
    if decoded.not_finite:
        dropped.labels(reason="not_finite").inc(decoded.not_finite)
    unsupported = decoded.unsupported
    if unsupported:
        dropped.labels(reason="unsupported").inc(unsupported)
    invalid = decoded.rejected_points - decoded.not_finite - unsupported
    if invalid:
        dropped.labels(reason="invalid").inc(invalid)
    log.info("otlp.points_rejected", points=decoded.rejected_points, why=decoded.message())


def _status(exc: VigilError, media: str) -> Response:
    """The ``google.rpc.Status`` answer to a refused request."""
    status = Status(code=_CODES.get(exc.status_code, Code.UNKNOWN), message=exc.message)
    if media == otlp.PROTOBUF:
        body = status.SerializeToString()
    else:
        body = json_format.MessageToJson(status, indent=None).encode()
    return Response(
        body,
        status_code=exc.status_code,
        media_type=media,
        headers=retry_headers(exc.status_code),
    )
