"""OTLP metrics (OpenTelemetry's protocol) into samples: the body of an OTLP/HTTP export
request, decompressed and parsed by the generated classes of ``opentelemetry-proto``, and its
data points turned into :class:`~vigil.ingest.schemas.Sample`.

- Gauge and Sum points become samples: the metric's name as sent; the resource's attributes
  and the point's as tags (a point's attribute overrides its resource's; values other than
  strings rendered as text: JSON for arrays and maps); the target the first present of
  :data:`~vigil.ingest.labels.OTLP_TARGET_ATTRIBUTES` among those tags; ``as_int`` or
  ``as_double`` as the value; ``time_unix_nano`` as the time (0: now).
- Points Vigil cannot store are rejected one by one and reported (the OTLP
  ``partial_success``), the rest of the request is stored: histogram, exponential-histogram
  and summary points; NaN and infinite values; names, tags and targets beyond the
  configured limits; times too far ahead of the clock.
- Points flagged "no recorded value" (the end of a series) are skipped and not reported.

Pure: no HTTP, no storage. A body that cannot be read at all is :class:`OtlpInvalid` (400),
an unknown ``Content-Encoding`` :class:`UnsupportedEncoding` (415), a body that decompresses
past the body limit :class:`~vigil.errors.PayloadTooLarge` (413).
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    DataPointFlags,
    Metric,
    NumberDataPoint,
)

from vigil.errors import PayloadTooLarge, VigilError
from vigil.ingest.labels import OTLP_TARGET_ATTRIBUTES, target_of
from vigil.ingest.schemas import Limits, Sample
from vigil.text import no_control

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MEDIA_TYPES = (PROTOBUF, JSON)
"""The bodies OTLP/HTTP sends: binary protobuf, or protobuf's JSON mapping."""

_MAX_NAME = 255
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_RECORDED_VALUE = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_UNSUPPORTED = {
    "histogram": "histogram",
    "exponential_histogram": "exponential histogram",
    "summary": "summary",
}
"""The kinds of metric Vigil does not store (it keeps one value per metric and target)."""


class OtlpInvalid(VigilError):
    """A body that is not an OTLP export request (HTTP 400, which exporters do not retry)."""

    status_code = 400


class UnsupportedEncoding(VigilError):
    """A ``Content-Type`` or ``Content-Encoding`` OTLP/HTTP does not use here (HTTP 415)."""

    status_code = 415


def media_type(content_type: str) -> str:
    """The media type of a ``Content-Type`` (without parameters, lower case), if OTLP's;
    else :class:`UnsupportedEncoding`."""
    media = content_type.partition(";")[0].strip().lower()
    if media not in MEDIA_TYPES:
        shown = media[:100] or "(none)"
        raise UnsupportedEncoding(f"an OTLP body is {PROTOBUF} or {JSON}, not {shown!r}")
    return media


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded from its ``Content-Encoding`` (none, ``identity``, ``gzip`` or
    ``deflate``), refusing more than ``limit`` bytes of it (a small body can inflate to
    gigabytes)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding[:50]!r} is not supported: send gzip, deflate or none"
        )
    wbits = zlib.MAX_WBITS | 16 if encoding != "deflate" else zlib.MAX_WBITS
    out = bytearray()
    rest = body
    try:
        while rest:  # gzip allows several members, one after the other
            inflater = zlib.decompressobj(wbits)
            out += inflater.decompress(rest, limit + 1 - len(out))
            if len(out) > limit:
                raise PayloadTooLarge(
                    f"the body decompresses to more than the limit of {limit} bytes"
                )
            if not inflater.eof:
                raise OtlpInvalid(f"the {encoding} body is truncated")
            rest = inflater.unused_data
    except zlib.error as exc:
        raise OtlpInvalid(f"the body is not valid {encoding}: {exc}") from None
    return bytes(out)


def parse(data: bytes, media: str) -> ExportMetricsServiceRequest:
    """The export request in ``data`` (binary protobuf or OTLP/JSON, by ``media``); unknown
    JSON fields are ignored, as OTLP/JSON asks of receivers."""
    request = ExportMetricsServiceRequest()
    try:
        if media == PROTOBUF:
            request.ParseFromString(data)
        else:
            json_format.Parse(data, request, ignore_unknown_fields=True)
    except Exception as exc:  # DecodeError, ParseError, UnicodeDecodeError, RecursionError...
        # Whatever the parser makes of a client's bytes is the client's error, never a 500.
        kind = "protobuf" if media == PROTOBUF else "OTLP/JSON"
        message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise OtlpInvalid(
            f"the body is not an OTLP metrics export request ({kind}): {message}"
        ) from None
    return request


@dataclass(slots=True)
class Decoded:
    """What a request's data points became."""

    samples: list[Sample] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    """Rejected points by why (the ``partial_success`` message's parts)."""
    not_finite: int = 0
    """Of the rejected points, those with a NaN or infinite value."""
    unsupported: int = 0
    """Of the rejected points, the histogram, exponential-histogram and summary ones."""

    @property
    def rejected_points(self) -> int:
        return sum(self.rejected.values())

    def message(self) -> str:
        """The ``partial_success`` error message: each reason with its count."""
        return "; ".join(f"{count} {why}" for why, count in sorted(self.rejected.items()))


def response(decoded: Decoded) -> ExportMetricsServiceResponse:
    """The export response: ``partial_success`` set only when points were rejected."""
    answer = ExportMetricsServiceResponse()
    if decoded.rejected:
        answer.partial_success.rejected_data_points = decoded.rejected_points
        answer.partial_success.error_message = (
            f"{decoded.rejected_points} data points rejected: {decoded.message()}"
        )
    return answer


def encode(message: ExportMetricsServiceResponse, media: str) -> bytes:
    """``message`` in the request's ``media`` type."""
    if media == PROTOBUF:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode()


@dataclass(frozen=True, slots=True)
class _Resource:
    """A resource's attributes as tags, why they are refused (if), and the target they name."""

    tags: dict[str, str]
    problem: str | None
    target: str | None


@dataclass(frozen=True, slots=True)
class Decoder:
    """Turns export requests into samples under the configured limits."""

    limits: Limits
    max_future: timedelta
    target_attributes: Sequence[str] = OTLP_TARGET_ATTRIBUTES
    """Where a point names its target, first present wins."""

    def samples(self, request: ExportMetricsServiceRequest, now: datetime) -> Decoded:
        decoded = Decoded()
        latest_ns = _nanos(now + self.max_future)
        for resource_metrics in request.resource_metrics:
            resource = self._resource(_attributes(resource_metrics.resource.attributes))
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    self._metric(metric, resource, now, latest_ns, decoded)
        return decoded

    def _metric(
        self,
        metric: Metric,
        resource: _Resource,
        now: datetime,
        latest_ns: int,
        decoded: Decoded,
    ) -> None:
        kind = metric.WhichOneof("data")
        if kind is None:
            return
        if kind in _UNSUPPORTED:
            skipped = len(getattr(metric, kind).data_points)
            if skipped:
                decoded.unsupported += skipped
                decoded.rejected[
                    f"{_UNSUPPORTED[kind]} points (only gauge and sum are stored)"
                ] += skipped
            return
        points = metric.gauge.data_points if kind == "gauge" else metric.sum.data_points
        name = metric.name
        if not _valid_name(name):
            decoded.rejected[_BAD_NAME] += len(points)
            return
        for point in points:
            why = self._point(name, point, resource, now, latest_ns, decoded.samples)
            if why is not None:
                decoded.rejected[why] += 1
                if why == _NOT_FINITE:
                    decoded.not_finite += 1

    def _point(
        self,
        name: str,
        point: NumberDataPoint,
        resource: _Resource,
        now: datetime,
        latest_ns: int,
        samples: list[Sample],
    ) -> str | None:
        """Append ``point``'s sample to ``samples``; or why it is rejected."""
        if point.flags & _NO_RECORDED_VALUE:
            return None
        which = point.WhichOneof("value")
        if which is None:
            return "points without a value"
        value = float(point.as_int) if which == "as_int" else point.as_double
        if not math.isfinite(value):
            return _NOT_FINITE
        if point.attributes:
            own = _attributes(point.attributes)
            tags = {**resource.tags, **own}
            problem = resource.problem or self._tag_problem(own, len(tags))
            target = target_of(tags, order=self.target_attributes)
            problem = problem or self._target_problem(target)
        else:  # the resource's, checked once
            tags, problem, target = resource.tags, resource.problem, resource.target
        if problem is not None:
            return problem
        ns = point.time_unix_nano
        if ns > latest_ns:
            return "points stamped too far ahead of the server's clock"
        ts = _EPOCH + timedelta(microseconds=ns // 1000) if ns else now
        samples.append(Sample(name, value, target, tags, ts))
        return None

    def _resource(self, tags: dict[str, str]) -> _Resource:
        target = target_of(tags, order=self.target_attributes)
        problem = self._tag_problem(tags, len(tags)) or self._target_problem(target)
        return _Resource(tags, problem, target)

    def _target_problem(self, target: str | None) -> str | None:
        if target is not None and len(target) > self.limits.max_target_length:
            return f"points whose target is over {self.limits.max_target_length} characters"
        return None

    def _tag_problem(self, tags: Mapping[str, str], count: int) -> str | None:
        """Why ``tags`` (of ``count`` tags in all, with the resource's) are refused, if."""
        limits = self.limits
        if count > limits.max_tags:
            return f"points with more than {limits.max_tags} attributes"
        for key, value in tags.items():
            if not key or len(key) > limits.max_tag_key_length:
                return f"points with an attribute name not 1 to {limits.max_tag_key_length} long"
            if len(value) > limits.max_tag_value_length:
                return f"points with an attribute value over {limits.max_tag_value_length} long"
            if not (_clean(key) and _clean(value)):
                return "points with control characters in an attribute"
        return None


_NOT_FINITE = "points with a NaN or infinite value"
_BAD_NAME = f"points of a metric whose name is empty, over {_MAX_NAME} long or not plain text"


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= _MAX_NAME and name.strip() == name and _clean(name)


def _clean(text: str) -> bool:
    try:
        no_control(text)
    except ValueError:
        return False
    return True


def _nanos(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _attributes(attributes: Iterable[KeyValue]) -> dict[str, str]:
    """Attributes as tags: string values as they are, others rendered as text."""
    return {kv.key: _text(kv.value) for kv in attributes}


def _text(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind in ("array_value", "kvlist_value"):
        return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False)
    plain = _plain(value)
    if plain is None:
        return ""
    return json.dumps(plain) if isinstance(plain, bool) else str(plain)


def _plain(value: AnyValue) -> object:
    """An AnyValue as the Python value JSON renders it (bytes as base64, as OTLP/JSON)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_plain(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    plain: object = getattr(value, kind)
    return plain
