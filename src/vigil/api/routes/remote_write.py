"""``POST /api/v1/write``: Prometheus remote write 1.0 (docs/api.md, docs/prometheus.md).

Answers as Prometheus expects: 204 once stored; a 4xx for a body it must not send again (it
drops it); 503 with ``Retry-After`` when Vigil cannot take it now (ingest overloaded, the
database away), which Prometheus retries. Decoding is :mod:`vigil.ingest.remote_write`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from vigil.api.deps import actor_of, container_of
from vigil.container import Container
from vigil.errors import PayloadTooLarge, Undecodable, UnsupportedMedia
from vigil.http.errors import ErrorOut, error_responses
from vigil.ingest import remote_write
from vigil.ingest.remote_write import Decoded

router = APIRouter(tags=["ingest"])

PATH = "/api/v1/write"
MEDIA_TYPE = "application/x-protobuf"
SOURCE = "remote_write"

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorOut,
        "description": "A body that does not decode (snappy, protobuf), a series without "
        "__name__, or a stored series over the configured limits: nothing is stored",
    },
    415: {
        "model": ErrorOut,
        "description": "Not a snappy-compressed application/x-protobuf body (remote write 1.0)",
    },
    **error_responses(413, 503),
}
_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A snappy-compressed (block format) protobuf prometheus.WriteRequest, "
        "as Prometheus sends it (Content-Encoding: snappy).",
        "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    },
}


def _check_headers(request: Request) -> None:
    """415 for a body that is not a snappy-compressed remote-write 1.0 protobuf."""
    content_type = request.headers.get("content-type", "")
    media, _, params = content_type.partition(";")
    if media.strip().lower() != MEDIA_TYPE:
        raise UnsupportedMedia(
            f"the body must be {MEDIA_TYPE} (Prometheus remote write 1.0), "
            f"not {media.strip()[:100]!r}"
        )
    # Remote write 2.0 names its message in a parameter: only 1.0's is understood.
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "proto" and value.strip() != "prometheus.WriteRequest":
            raise UnsupportedMedia(
                f"only remote write 1.0 (prometheus.WriteRequest) is understood, "
                f"not {value.strip()[:100]!r}"
            )
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding != "snappy":
        raise UnsupportedMedia(
            f"the body must be snappy-compressed (Content-Encoding: snappy), "
            f"not {encoding[:100] or 'uncompressed'!r}"
        )
    version = request.headers.get("x-prometheus-remote-write-version", "0.1.0").strip()
    if not version.startswith("0."):
        raise UnsupportedMedia(f"only remote write version 0.1.0 is understood, not {version!r}")


async def _decoded(request: Request, container: Container) -> Decoded:
    settings = container.settings
    body = await request.body()
    used = None
    if settings.remote_write_store == "used":
        used = await container.ingest.metric_names()
    return remote_write.decode(
        body,
        limits=container.limits,
        max_bytes=settings.max_body_bytes,
        used=used,
        now=container.clock.now(),
        max_future_seconds=settings.max_future_seconds,
    )


def _count_dropped(container: Container, decoded: Decoded) -> None:
    dropped = container.metrics.ingest_dropped_total
    for reason, count in (
        ("unused", decoded.unused),
        ("not_finite", decoded.not_finite),
        ("future", decoded.future),
    ):
        if count:
            dropped.labels(reason=reason).inc(count)


@router.post(
    PATH,
    status_code=204,
    response_class=Response,
    responses=_ERRORS,
    openapi_extra=_BODY,
)
async def write(request: Request) -> Response:
    """Store the samples of a Prometheus remote-write request (those a policy reads, unless
    VIGIL_REMOTE_WRITE_STORE=all), evaluate the policies and record what they decide."""
    container = container_of(request)
    rejected = container.metrics.ingest_rejected_total
    try:
        _check_headers(request)
        decoded = await _decoded(request, container)
    except (Undecodable, UnsupportedMedia):
        rejected.labels(reason="invalid").inc()
        raise
    except PayloadTooLarge:
        rejected.labels(reason="too_large").inc()
        raise
    if decoded.samples:
        await container.ingest.ingest(decoded.samples, source=SOURCE, actor=actor_of(request))
    # Counted once the stored samples are: a request refused for overload is sent again.
    _count_dropped(container, decoded)
    return Response(status_code=204)
