"""Decoding Prometheus remote-write bodies into samples (vigil.ingest.remote_write)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.remote_write import body, compress, write_request
from vigil.errors import PayloadTooLarge, Undecodable
from vigil.ingest.remote_write import STALE_NAN, Decoded, decode
from vigil.ingest.schemas import Limits

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
MS = int(NOW.timestamp() * 1000)
LIMITS = Limits(max_tags=4, max_tag_key_length=16, max_tag_value_length=32, max_target_length=20)
CPU = {"__name__": "cpu_usage", "instance": "web-1:9100", "job": "node", "mode": "user"}


def decoded(data: bytes, used: frozenset[str] | None = None, max_bytes: int = 1 << 20) -> Decoded:
    return decode(
        data, limits=LIMITS, max_bytes=max_bytes, used=used, now=NOW, max_future_seconds=60
    )


def test_each_sample_becomes_a_sample_named_tagged_and_targeted_by_its_labels() -> None:
    out = decoded(body([(CPU, [(0.5, MS - 1500), (0.75, MS)])]))
    assert [(s.name, s.value, s.target, s.ts) for s in out.samples] == [
        ("cpu_usage", 0.5, "web-1", NOW - timedelta(milliseconds=1500)),
        ("cpu_usage", 0.75, "web-1", NOW),
    ]
    assert out.samples[0].tags == {"instance": "web-1:9100", "job": "node", "mode": "user"}
    assert (out.unused, out.not_finite, out.stale, out.future) == (0, 0, 0, 0)


def test_the_target_label_order_is_that_of_alerts() -> None:
    labels = {"__name__": "up", "job": "node", "pod": "api-7", "service": "api"}
    [sample] = decoded(body([(labels, [(1.0, MS)])])).samples
    assert sample.target == "api-7"
    [untargeted] = decoded(body([({"__name__": "up"}, [(1.0, MS)])])).samples
    assert untargeted.target is None


def test_series_no_policy_reads_are_dropped_and_counted() -> None:
    data = body(
        [
            (CPU, [(1.0, MS), (2.0, MS)]),
            ({"__name__": "node_load1", "instance": "web-1:9100"}, [(3.0, MS)]),
            ({"Zone": "a", "__name__": "node_load5"}, [(4.0, MS)]),  # __name__ not first
        ]
    )
    out = decoded(data, used=frozenset({"cpu_usage"}))
    assert [s.value for s in out.samples] == [1.0, 2.0]
    assert out.samples[0].tags == {"instance": "web-1:9100", "job": "node", "mode": "user"}
    assert out.unused == 2
    # Read a second time (the first labels are remembered), and with the other names used.
    assert decoded(data, used=frozenset({"cpu_usage"})).unused == 2
    out = decoded(data, used=frozenset({"node_load1", "node_load5"}))
    assert [(s.name, s.tags) for s in out.samples] == [
        ("node_load1", {"instance": "web-1:9100"}),
        ("node_load5", {"Zone": "a"}),
    ]
    assert out.unused == 2
    assert len(decoded(data, used=None).samples) == 4


def test_stale_markers_are_skipped_and_other_non_finite_values_counted() -> None:
    values = [1.0, STALE_NAN, math.nan, math.inf, -math.inf, 2.0]
    out = decoded(body([(CPU, [(v, MS) for v in values])]))
    assert [s.value for s in out.samples] == [1.0, 2.0]
    assert (out.stale, out.not_finite) == (1, 3)


def test_samples_too_far_ahead_of_the_clock_are_dropped_and_counted() -> None:
    out = decoded(body([(CPU, [(1.0, MS + 60_000), (2.0, MS + 61_000)])]))
    assert [s.value for s in out.samples] == [1.0]
    assert out.future == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not snappy at all", "not snappy-compressed"),
        (body([(CPU, [(1.0, MS)])])[:-5], "not snappy-compressed"),  # truncated
        (compress(b"\xff\xff\xff\xff"), "not a prometheus.WriteRequest"),
        (compress(b'{"timeseries": []}'), "not a prometheus.WriteRequest"),
        (body([({"job": "node"}, [(1.0, MS)])]), r"timeseries\[0\] has no __name__"),
        (body([(CPU, [(1.0, MS)]), ({"__name__": ""}, [(1.0, MS)])]), r"timeseries\[1\]"),
        (body([({"__name__": "x" * 256}, [(1.0, MS)])]), "__name__ must be 1 to 255"),
        (body([({"__name__": "m", **{f"l{i}": "v" for i in range(5)}}, [])]), "at most 4"),
        (body([({"__name__": "m", "k" * 17: "v"}, [])]), "label names must be 1 to 16"),
        (body([({"__name__": "m", "k": "v" * 33}, [])]), "values must be at most 32"),
        (body([({"__name__": "m", "host": "h" * 21}, [])]), "target must be at most 20"),
        (body([({"__name__": "m", "k": "a\nb"}, [])]), "control characters"),
    ],
)
@pytest.mark.parametrize("used", [None, frozenset({"cpu_usage", "m", "", "x" * 256})])
def test_a_body_vigil_cannot_store_is_refused_whole(
    data: bytes, message: str, used: frozenset[str] | None
) -> None:
    with pytest.raises(Undecodable, match=message):
        decoded(data, used=used)


def test_an_unused_series_is_not_checked_against_the_limits() -> None:
    data = body([({"__name__": "other", "k": "v" * 33}, [(1.0, MS)])])
    assert decoded(data, used=frozenset({"cpu_usage"})).unused == 1


def test_the_uncompressed_size_is_checked_before_uncompressing() -> None:
    raw = write_request([(CPU, [(1.0, MS)])] * 200).SerializeToString()
    with pytest.raises(PayloadTooLarge, match=f"uncompresses to {len(raw)} bytes"):
        decoded(compress(raw), max_bytes=len(raw) - 1)
    assert len(decoded(compress(raw), max_bytes=len(raw)).samples) == 200


def test_the_generated_code_needs_at_most_the_protobuf_version_required() -> None:
    """``make prompb`` may move the generated code's protobuf version: the lower bound in
    pyproject.toml must follow, or an install with the oldest allowed protobuf fails."""
    root = Path(__file__).resolve().parents[2]
    needed = {
        tuple(int(n) for n in match.group(1).split("."))
        for path in (root / "src/vigil/ingest/prompb").glob("*_pb2.py")
        if (match := re.search(r"Protobuf Python Version: ([\d.]+)", path.read_text()))
    }
    assert needed
    pinned = re.search(r'"protobuf>=([\d.]+)', (root / "pyproject.toml").read_text())
    assert pinned is not None
    assert max(needed) <= tuple(int(n) for n in pinned.group(1).split("."))
