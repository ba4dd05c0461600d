"""Prometheus remote-write request bodies, built as Prometheus builds them: the generated
``prometheus.WriteRequest`` class, serialised and snappy-compressed (block format)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cramjam

from vigil.ingest.prompb.remote_pb2 import WriteRequest

HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
"""The headers Prometheus sends with each request."""

Series = tuple[Mapping[str, str], Sequence[tuple[float, int]]]
"""A series: its labels (``__name__`` included) and its ``(value, milliseconds)`` samples."""


def write_request(series: Sequence[Series]) -> WriteRequest:
    request = WriteRequest()
    for labels, samples in series:
        added = request.timeseries.add()
        for name in sorted(labels):  # Prometheus sends labels sorted by name
            added.labels.add(name=name, value=labels[name])
        for value, ms in samples:
            added.samples.add(value=value, timestamp=ms)
    return request


def compress(raw: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(raw))


def body(series: Sequence[Series]) -> bytes:
    """A request body holding ``series``."""
    return compress(write_request(series).SerializeToString())
