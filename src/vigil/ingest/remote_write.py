"""Prometheus remote write 1.0: a request body into samples.

The body is a snappy-compressed (block format, no framing) protobuf ``prometheus.WriteRequest``
(:mod:`vigil.ingest.prompb`, generated from Prometheus's own ``.proto`` files). Each sample
of each series becomes a :class:`~vigil.ingest.schemas.Sample`: the series' ``__name__`` is
its name, its other labels its tags, its target taken from the labels
(:func:`~vigil.ingest.labels.target_of`), its timestamp from the milliseconds sent.

What is not stored, counted by reason (:class:`Decoded`):

- ``unused``: with ``used`` names given, a series whose name no policy reads is dropped as
  soon as its name is read, before any of its labels or samples become Python objects;
- ``not_finite``: a NaN or infinite value;
- ``future``: a timestamp more than the allowed seconds ahead of the clock (it would pin
  the metric's latest value);
- a stale marker (the NaN Prometheus writes when a series ends) is skipped and counted
  nowhere: it ends nothing by itself (a policy's ``absent`` or ``for`` sees the samples stop).

A body that does not decode, a series without ``__name__``, or a stored series over the
configured limits is refused whole (:class:`~vigil.errors.Undecodable`): nothing of it is
stored.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import cramjam
from google.protobuf.message import DecodeError

from vigil.errors import PayloadTooLarge, Undecodable
from vigil.ingest.labels import target_of
from vigil.ingest.prompb.remote_pb2 import WriteRequest
from vigil.ingest.prompb.types_pb2 import Label, TimeSeries
from vigil.ingest.prompb.types_pb2 import Sample as PromSample
from vigil.ingest.prompb.view_pb2 import TimeSeriesView, WriteRequestView
from vigil.ingest.schemas import Limits, Sample
from vigil.text import no_control

NAME_LABEL = "__name__"
STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
"""The value Prometheus writes when a series ends (a NaN with this exact bit pattern)."""
_STALE_BITS = struct.pack("<Q", 0x7FF0000000000002)
_MAX_NAME = 255
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class Decoded:
    """What a request holds: the samples to store and what was dropped, by reason."""

    samples: list[Sample] = field(default_factory=list)
    unused: int = 0
    not_finite: int = 0
    future: int = 0
    stale: int = 0
    series: int = 0


def decompress(body: bytes, max_bytes: int) -> bytes:
    """``body`` uncompressed (snappy's block format); at most ``max_bytes`` of it.

    The length snappy's header announces is checked before anything is uncompressed, so a
    small body cannot make the process allocate gigabytes."""
    try:
        size = cramjam.snappy.decompress_raw_len(body)
    except cramjam.DecompressionError as exc:
        raise Undecodable(f"the body is not snappy-compressed (block format): {exc}") from exc
    if size > max_bytes:
        raise PayloadTooLarge(
            f"the body uncompresses to {size} bytes, above the limit of {max_bytes}"
        )
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError as exc:
        raise Undecodable(f"the body is not snappy-compressed (block format): {exc}") from exc


def parse(raw: bytes) -> WriteRequest:
    """The ``prometheus.WriteRequest`` in ``raw`` (uncompressed)."""
    request = WriteRequest()
    try:
        request.ParseFromString(raw)
    except DecodeError as exc:
        raise Undecodable(f"the body is not a prometheus.WriteRequest: {exc}") from exc
    return request


def name_of(series: TimeSeries, position: int) -> str:
    """The series' ``__name__`` (Prometheus sorts labels, so it is nearly always first)."""
    labels = series.labels
    if labels:
        first = labels[0]
        if first.name == NAME_LABEL:
            return first.value
        for label in labels:
            if label.name == NAME_LABEL:
                return label.value
    raise Undecodable(f"timeseries[{position}] has no __name__ label")


def decode(
    body: bytes,
    *,
    limits: Limits,
    max_bytes: int,
    used: frozenset[str] | None,
    now: datetime,
    max_future_seconds: float,
) -> Decoded:
    """The samples of a remote-write body (snappy-compressed), and what was dropped.

    ``used``: the metric names worth storing (None: all of them)."""
    raw = decompress(body, max_bytes)
    latest_ms = math.floor((now.timestamp() + max_future_seconds) * 1000)
    stamps: dict[int, datetime] = {}
    if used is not None:
        return _decode_used(raw, used, limits, latest_ms, stamps)
    request = parse(raw)
    out = Decoded(series=len(request.timeseries))
    for position, series in enumerate(request.timeseries):
        name = name_of(series, position)
        _add_series(out, series, name, position, limits, latest_ms, stamps)
    return out


def _decode_used(
    raw: bytes, used: frozenset[str], limits: Limits, latest_ms: int, stamps: dict[int, datetime]
) -> Decoded:
    """:func:`decode` keeping only the series named in ``used``.

    Read through :class:`WriteRequestView`, which leaves labels and samples serialized: a
    series is judged by its first label's bytes alone (``__name__``, as Prometheus sorts
    them), looked up in :data:`_FIRST_LABELS`, so a dropped series makes no Python object
    but that view and those bytes. The series kept are parsed whole."""
    view = WriteRequestView()
    try:
        view.ParseFromString(raw)
    except DecodeError as exc:
        raise Undecodable(f"the body is not a prometheus.WriteRequest: {exc}") from exc
    out = Decoded(series=len(view.timeseries))
    first_labels = _FIRST_LABELS
    for position, series in enumerate(view.timeseries):
        labels = series.labels
        name = first_labels.get(labels[0]) if labels else None
        if name is None:
            name = _view_name(series, position)
        if name in used:
            full = TimeSeries(
                labels=[Label.FromString(label) for label in labels],
                samples=[PromSample.FromString(point) for point in series.samples],
            )
            _add_series(out, full, name, position, limits, latest_ms, stamps)
        else:
            out.unused += len(series.samples)
    return out


_FIRST_LABELS: dict[bytes, str] = {}
"""A serialized ``__name__`` label → its value: the first labels seen so far (a few per
metric name), each parsed once."""
_MAX_FIRST_LABELS = 65_536


def _view_name(series: TimeSeriesView, position: int) -> str:
    """The ``__name__`` of a series seen through the view (its first label remembered when
    it is ``__name__``)."""
    try:
        labels = [Label.FromString(label) for label in series.labels]
    except DecodeError as exc:
        raise Undecodable(f"timeseries[{position}]: a label does not decode: {exc}") from exc
    for index, label in enumerate(labels):
        if label.name == NAME_LABEL:
            if index == 0:
                if len(_FIRST_LABELS) >= _MAX_FIRST_LABELS:
                    _FIRST_LABELS.clear()
                _FIRST_LABELS[series.labels[0]] = label.value
            return label.value
    raise Undecodable(f"timeseries[{position}] has no __name__ label")


def _add_series(
    out: Decoded,
    series: TimeSeries,
    name: str,
    position: int,
    limits: Limits,
    latest_ms: int,
    stamps: dict[int, datetime],
) -> None:
    """Append the samples of ``series`` (named ``name``) to ``out``, counting those dropped."""
    tags = {label.name: label.value for label in series.labels}
    del tags[NAME_LABEL]
    target = target_of(tags)
    _check(name, tags, target, position, limits)
    append = out.samples.append
    for point in series.samples:
        value = point.value
        if not math.isfinite(value):
            if struct.pack("<d", value) == _STALE_BITS:
                out.stale += 1
            else:
                out.not_finite += 1
            continue
        ms = point.timestamp
        if ms > latest_ms:
            out.future += 1
            continue
        ts = stamps.get(ms)
        if ts is None:
            ts = stamps[ms] = _EPOCH + timedelta(milliseconds=ms)
        append(Sample(name, value, target, tags, ts))


def _check(
    name: str, tags: dict[str, str], target: str | None, position: int, limits: Limits
) -> None:
    """:class:`Undecodable` for a series Vigil cannot store as it is."""
    where = f"timeseries[{position}]"
    if not name or len(name) > _MAX_NAME:
        raise Undecodable(f"{where}: __name__ must be 1 to {_MAX_NAME} characters")
    if len(tags) > limits.max_tags:
        raise Undecodable(f"{where}: at most {limits.max_tags} labels besides __name__")
    for key, value in tags.items():
        if len(key) > limits.max_tag_key_length:
            raise Undecodable(
                f"{where}: label names must be at most {limits.max_tag_key_length} characters"
            )
        if len(value) > limits.max_tag_value_length:
            raise Undecodable(
                f"{where}: label {key[:64]!r}: values must be at most "
                f"{limits.max_tag_value_length} characters"
            )
    if target is not None and len(target) > limits.max_target_length:
        raise Undecodable(
            f"{where}: the target must be at most {limits.max_target_length} characters"
        )
    try:
        # One search over every string of the series (they would forge lines in logs).
        no_control("".join((name, *tags.keys(), *tags.values())))
    except ValueError:
        raise Undecodable(
            f"{where}: labels must not contain control characters (such as a newline)"
        ) from None
