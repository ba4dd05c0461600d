"""The fast path of ingest (msgspec, :mod:`vigil.ingest.fast`) against the slow path (orjson
and pydantic's :class:`MetricIn`), on SQLite and on PostgreSQL.

The fast path may only accept: what it accepts must be stored exactly as the slow path
stores it, and every body it is unsure of (invalid ones included) must get the slow path's
answer. Each table below runs through the API twice, with the fast path and with it turned
off, and the stored rows and the refusals must be the same.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.test_ingest import (
    BATCH,
    INGEST,
    MAX_BATCH,
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    MAX_TAGS,
    MAX_TARGET,
    SINGLE_ERRORS,
    rows,
)
from vigil.api.routes.ingest import _slow_batch, _slow_one
from vigil.clock import FakeClock
from vigil.container import Container
from vigil.db.tables import metrics
from vigil.ingest import fast

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "max_batch_size": MAX_BATCH,
        "max_tags": MAX_TAGS,
        "max_tag_key_length": MAX_TAG_KEY,
        "max_tag_value_length": MAX_TAG_VALUE,
        "max_target_length": MAX_TARGET,
    }


def _m(**fields: Any) -> dict[str, Any]:
    return {"name": "cpu_usage", "value": 87.5, **fields}


# (id, body, whether the fast path must take it itself)
VALID: list[tuple[str, dict[str, Any], bool]] = [
    ("plain", _m(target="web-01", tags={"region": "eu"}, timestamp="2026-01-19T11:00:00Z"), True),
    ("int-value", _m(value=95, target="web-01"), True),
    ("negative-zero", _m(value=-0.0, target="web-01"), True),
    ("tiny-value", _m(value=1e-310, target="web-01"), True),
    ("big-float", _m(value=1.5e15, target="web-01"), True),
    ("no-timestamp", _m(target="web-01"), True),
    ("null-timestamp-and-target", _m(timestamp=None, target=None, tags={"host": "h"}), True),
    ("naive", _m(target="web-01", timestamp="2026-01-19T10:30:00"), True),
    ("offset", _m(target="web-01", timestamp="2026-01-19T12:30:00+02:00"), True),
    ("negative-offset", _m(target="web-01", timestamp="2026-01-19T07:00:00-05:00"), True),
    ("millis", _m(target="web-01", timestamp="2026-01-19T09:15:00.250Z"), True),
    ("micros", _m(target="web-01", timestamp="2026-01-19T09:15:00.123456+05:30"), True),
    ("lowercase-t-z", _m(target="web-01", timestamp="2026-01-19t09:15:00z"), True),
    ("space-separator", _m(target="web-01", timestamp="2026-01-19 09:15:00"), True),
    ("target-from-target-tag", _m(tags={"target": "t-1", "host": "h-1"}), True),
    ("target-from-host-tag", _m(tags={"host": "h-1", "service": "s-1"}), True),
    ("target-from-service-tag", _m(tags={"service": "s-1", "zone": "a"}), True),
    ("empty-target-falls-to-tags", _m(target="", tags={"target": "", "host": "h-1"}), True),
    ("no-target", _m(tags={"zone": "a"}), True),
    ("empty-targets", _m(target="", tags={"target": "", "host": "", "service": ""}), True),
    ("nothing-but-name-and-value", _m(), True),
    ("empty-tag-value", _m(target="web-01", tags={"zone": ""}), True),
    ("inner-spaces", _m(name="cpu usage", target="web 01", tags={"zone": "a b"}), True),
    ("unicode", _m(name="température", target="hôte-01", tags={"zône": "é"}), True),
    (
        "limits-exactly",
        _m(target="t" * MAX_TARGET, tags={"k" * MAX_TAG_KEY: "v" * MAX_TAG_VALUE}),
        True,
    ),
    ("name-255", _m(name="n" * 255, target="web-01"), True),
    # Taken by the slow path (the fast one is unsure), stored the same all the same.
    ("trimmed-name", _m(name="  cpu_usage ", target="web-01"), False),
    ("trimmed-target", _m(target=" web-01\t"), False),
    ("trimmed-tags", _m(tags={" host ": " web-01 ", "region": "eu\n"}), False),
    ("unknown-field", _m(target="web-01", unit="%"), False),
    ("huge-int-value", _m(value=2**60 + 1, target="web-01"), False),
]

BATCH_ONLY_ERRORS = [
    ('{"metrics": {}}', "metrics-object"),
    ('{"items": []}', "no-metrics"),
    ("[]", "array"),
    ('{"metrics": [' + ",".join(['{"name": "a", "value": 1}'] * (MAX_BATCH + 1)) + "]}", "413"),
    ('{"metrics": [{"name": "a", "value": 1}, {"name": "a"}]}', "second-invalid"),
]


def _no_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast, "decode_one", lambda *args: None)
    monkeypatch.setattr(fast, "decode_batch", lambda *args: None)


def _stored(row: dict[str, Any]) -> tuple[Any, ...]:
    ts = row["ts"]
    assert isinstance(ts, datetime)
    return (row["name"], row["value"], row["target"], row["tags"], ts, ts.utcoffset())


async def _post_all(client: httpx.AsyncClient, bodies: list[dict[str, Any]]) -> None:
    for body in bodies:
        r = await client.post(INGEST, content=json.dumps(body), headers=JSON)
        assert r.status_code == 201, r.text
    r = await client.post(BATCH, content=json.dumps({"metrics": bodies[:MAX_BATCH]}), headers=JSON)
    assert r.status_code == 201, r.text


def test_the_fast_path_takes_what_it_should_and_makes_the_same_samples(
    container: Container, clock: FakeClock
) -> None:
    now = clock.now()
    for case, body, taken in VALID:
        raw = json.dumps(body).encode()
        sample = fast.decode_one(raw, container.limits, now)
        assert (sample is not None) == taken, case
        slow = _slow_one(raw, container, now)
        if sample is not None:
            assert sample == slow, case
            assert sample.ts.tzinfo == slow.ts.tzinfo, case
            assert type(sample.value) is type(slow.value) is float, case
        batch = json.dumps({"metrics": [body, body]}).encode()
        samples = fast.decode_batch(batch, container.limits, now, MAX_BATCH)
        assert (samples is not None) == taken, case
        if samples is not None:
            assert samples == _slow_batch(batch, container, now) == [slow, slow], case


async def test_the_fast_path_stores_what_the_slow_path_stores(
    client: httpx.AsyncClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = [body for _, body, _ in VALID]
    await _post_all(client, bodies)
    fast_rows = [_stored(r) for r in await rows(container, metrics)]
    _no_fast_path(monkeypatch)
    await _post_all(client, bodies)
    all_rows = [_stored(r) for r in await rows(container, metrics)]
    assert len(all_rows) == 2 * len(fast_rows) == 2 * (len(bodies) + MAX_BATCH)
    assert fast_rows == all_rows[len(fast_rows) :]
    for row in all_rows:
        assert row[-1] == timedelta(0)


@pytest.mark.parametrize("path", [INGEST, BATCH])
async def test_refusals_are_the_slow_paths(
    client: httpx.AsyncClient,
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
    subtests: pytest.Subtests,
    path: str,
) -> None:
    now = container.clock.now()
    cases = [(c.raw, c.id) for c in SINGLE_ERRORS]
    if path == BATCH:
        cases = [('{"metrics": [{"name": "ok", "value": 1}, ' + raw + "]}", i) for raw, i in cases]
        cases += BATCH_ONLY_ERRORS
    answers = []
    for raw, case in cases:
        if path == INGEST:
            assert fast.decode_one(raw.encode(), container.limits, now) is None, case
        r = await client.post(path, content=raw, headers=JSON)
        answers.append((r.status_code, r.json()))
    _no_fast_path(monkeypatch)
    for (raw, case), (status, answer) in zip(cases, answers, strict=True):
        with subtests.test(msg=case):
            r = await client.post(path, content=raw, headers=JSON)
            assert status in (413, 422)
            assert (r.status_code, r.json()) == (status, answer)
    assert await rows(container, metrics) == []
