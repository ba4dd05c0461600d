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
from vigil.ingest.labels import TARGET_LABELS, strip_port
from vigil.ingest.prompb.types_pb2 import Label
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
_EARLIEST_MS = -62_135_596_800_000
"""0001-01-01T00:00:00Z in milliseconds since the epoch: no earlier time is representable."""


@dataclass(slots=True)
class Decoded:
    """What a request holds: the samples to store and what was dropped, by reason."""

    samples: list[Sample] = field(default_factory=list)
    unused: int = 0
    not_finite: int = 0
    future: int = 0
    stale: int = 0


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


def parse(raw: bytes) -> WriteRequestView:
    """The ``prometheus.WriteRequest`` in ``raw`` (uncompressed), seen through
    :class:`WriteRequestView`: each label and sample left serialized."""
    view = WriteRequestView()
    try:
        view.ParseFromString(raw)
    except DecodeError as exc:
        raise Undecodable(f"the body is not a prometheus.WriteRequest: {exc}") from exc
    return view


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

    ``used``: the metric names worth storing (None: all of them).

    The body is read through :class:`WriteRequestView`, which leaves labels and samples
    serialized. With ``used``, a series is judged by its first label's bytes alone
    (``__name__``, as Prometheus sorts labels; :data:`_FIRST_LABELS`), so a dropped series
    makes no Python object but the view and those bytes. A series kept has its labels
    looked up by their bytes (:class:`_Labels`: the same label recurs in series after
    series), each parsed and checked against the limits once."""
    view = parse(decompress(body, max_bytes))
    out = Decoded()
    series_of = _Series(
        out,
        _labels_for(limits),
        limits,
        math.floor((now.timestamp() + max_future_seconds) * 1000),
    )
    if used is None:
        for position, series in enumerate(view.timeseries):
            series_of.add(series, position)
        return out
    first_labels = _FIRST_LABELS
    unused = 0
    for position, series in enumerate(view.timeseries):
        try:
            name = first_labels.get(series.labels[0])
        except IndexError:  # no label at all
            name = None
        if name is None:
            name = _first_name(series, position)
        if name in used:
            series_of.add(series, position)
        else:
            unused += len(series.samples)
    out.unused = unused
    return out


_FIRST_LABELS: dict[bytes, str] = {}
"""A serialized ``__name__`` label → its value: the first labels seen so far (a few per
metric name), each parsed once."""
_MAX_CACHED = 16_384
"""How many labels a cache remembers before starting afresh."""
_MAX_CACHED_BYTES = 512
"""Longer labels are parsed each time they come, not remembered (a cache stays a few MB)."""


def _label(data: bytes, position: int) -> Label:
    try:
        return Label.FromString(data)
    except DecodeError as exc:
        raise Undecodable(f"timeseries[{position}]: a label does not decode: {exc}") from exc


def _first_name(series: TimeSeriesView, position: int) -> str:
    """The ``__name__`` of a series (its first label remembered when it is ``__name__``)."""
    for index, data in enumerate(series.labels):
        label = _label(data, position)
        if label.name == NAME_LABEL:
            if index == 0 and len(data) <= _MAX_CACHED_BYTES:
                if len(_FIRST_LABELS) >= _MAX_CACHED:
                    _FIRST_LABELS.clear()
                _FIRST_LABELS[data] = label.value
            return label.value
    raise Undecodable(f"timeseries[{position}] has no __name__ label")


class _Labels(dict[bytes, tuple[str, str]]):
    """Serialized labels → ``(name, value)``, each checked against one set of limits."""

    def __init__(self, limits: Limits) -> None:
        super().__init__()
        self.limits = limits

    def parse(self, data: bytes, position: int) -> tuple[str, str]:
        """The label in ``data``, checked and remembered; :class:`Undecodable` if Vigil
        cannot store it."""
        label = _label(data, position)
        pair = (label.name, label.value)
        _check_label(*pair, f"timeseries[{position}]", self.limits)
        if len(data) <= _MAX_CACHED_BYTES:
            if len(self) >= _MAX_CACHED:
                self.clear()
            self[data] = pair
        return pair


_LABELS: dict[Limits, _Labels] = {}


def _labels_for(limits: Limits) -> _Labels:
    labels = _LABELS.get(limits)
    if labels is None:
        labels = _LABELS[limits] = _Labels(limits)
    return labels


def _check_label(key: str, value: str, where: str, limits: Limits) -> None:
    """:class:`Undecodable` for a label Vigil cannot store as a name or tag."""
    if key == NAME_LABEL:
        if not value or len(value) > _MAX_NAME:
            raise Undecodable(f"{where}: __name__ must be 1 to {_MAX_NAME} characters")
    elif not key or len(key) > limits.max_tag_key_length:
        raise Undecodable(
            f"{where}: label names must be 1 to {limits.max_tag_key_length} characters"
        )
    elif len(value) > limits.max_tag_value_length:
        raise Undecodable(
            f"{where}: label {key[:64]!r}: values must be at most "
            f"{limits.max_tag_value_length} characters"
        )
    try:
        no_control(key + value)  # they would forge lines in logs
    except ValueError:
        raise Undecodable(
            f"{where}: labels must not contain control characters (such as a newline)"
        ) from None


@dataclass(slots=True)
class _Series:
    """Turns the series kept into samples, appended to ``out``."""

    out: Decoded
    labels: _Labels
    limits: Limits
    latest_ms: int
    stamps: dict[int, datetime] = field(default_factory=dict)
    instances: dict[str, str] = field(default_factory=dict)
    """``instance`` labels without their ports (a request repeats each many times)."""

    def add(self, series: TimeSeriesView, position: int) -> None:
        """Append the samples of ``series``, counting those dropped."""
        name, tags, target = self._labels_of(series, position)
        out = self.out
        append = out.samples.append
        latest_ms, stamps = self.latest_ms, self.stamps
        for data in series.samples:
            try:
                point = PromSample.FromString(data)
            except DecodeError as exc:
                raise Undecodable(f"timeseries[{position}]: a sample does not decode") from exc
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
            if ms < _EARLIEST_MS:
                raise Undecodable(f"timeseries[{position}]: timestamp {ms} ms is before the year 1")
            ts = stamps.get(ms)
            if ts is None:
                ts = stamps[ms] = _EPOCH + timedelta(milliseconds=ms)
            append(Sample(name, value, target, tags, ts))

    def _labels_of(
        self, series: TimeSeriesView, position: int
    ) -> tuple[str, dict[str, str], str | None]:
        """The series' name, tags and target; :class:`Undecodable` if Vigil cannot store it."""
        known = self.labels
        tags: dict[str, str] = {}
        for data in series.labels:
            key, value = known.get(data) or known.parse(data, position)
            if key in tags:
                raise Undecodable(f"timeseries[{position}]: label {key!r} appears twice")
            tags[key] = value
        name = tags.pop(NAME_LABEL, None)
        where = f"timeseries[{position}]"
        if name is None:
            raise Undecodable(f"{where} has no __name__ label")
        limits = self.limits
        if len(tags) > limits.max_tags:
            raise Undecodable(f"{where}: at most {limits.max_tags} labels besides __name__")
        target = self._target(tags)
        if target is not None and len(target) > limits.max_target_length:
            raise Undecodable(
                f"{where}: the target must be at most {limits.max_target_length} characters"
            )
        return name, tags, target

    def _target(self, tags: dict[str, str]) -> str | None:
        """:func:`~vigil.ingest.labels.target_of` ``tags``, each ``instance`` stripped once."""
        for label in TARGET_LABELS:
            value = tags.get(label)
            if value:
                if label != "instance":
                    return value
                stripped = self.instances.get(value)
                if stripped is None:
                    stripped = self.instances[value] = strip_port(value)
                return stripped
        return None
