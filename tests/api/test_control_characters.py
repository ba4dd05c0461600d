"""Names, targets and tags refuse control characters (a newline in a target would forge a log
line): 422 naming the field, and nothing stored, on every ingest path and in every body that
carries them."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.api.support import table_counts
from vigil.container import Container

CONTROLS = ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028"]


def metric(**fields: Any) -> dict[str, Any]:
    return {"name": "cpu", "value": 1.0, "target": "web-01", **fields}


INGEST: list[tuple[str, str, Any, list[Any]]] = []
for c in CONTROLS:
    INGEST += [
        ("/api/v1/ingest", f"target {c!r}", metric(target=f"web{c}01"), ["body", "target"]),
        ("/api/v1/ingest", f"name {c!r}", metric(name=f"c{c}pu"), ["body", "name"]),
        ("/api/v1/ingest", f"tag value {c!r}", metric(tags={"r": f"a{c}b"}), ["body", "tags", "r"]),
        (
            "/api/v1/ingest/batch",
            f"batch target {c!r}",
            {"metrics": [metric(), metric(target=f"web{c}02")]},
            ["body", "metrics", 1, "target"],
        ),
    ]


@pytest.mark.parametrize(("path", "case", "body", "loc"), INGEST, ids=[i[1] for i in INGEST])
async def test_ingest_refuses_control_characters(
    client: httpx.AsyncClient, container: Container, path: str, case: str, body: Any, loc: Any
) -> None:
    before = await table_counts(container)
    # Both the JSON escape (\n) and, where JSON allows it, the raw character (DEL, C1,
    # U+2028) are refused, by the fast path as by the slow one.
    for raw in (orjson.dumps(body), orjson.dumps(body).replace(b"\\u007f", b"\x7f")):
        r = await client.post(path, content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (case, r.text)
        errors = r.json()["detail"]
        assert [e["loc"][: len(loc)] for e in errors] == [loc], errors
        assert "control characters" in errors[0]["msg"]
    assert await table_counts(container) == before


async def test_a_tag_name_with_a_control_character_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/ingest", json=metric(tags={"re\ngion": "eu"}))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][:2] == ["body", "tags"]


async def test_other_text_still_passes(client: httpx.AsyncClient) -> None:
    for target in ("web-01", "café-°", "服务器-1", 'quote"and\\backslash'):
        r = await client.post("/api/v1/ingest", json=metric(target=target))
        assert r.status_code == 201, (target, r.text)
        assert r.json()["actions"] == []


BODIES: list[tuple[str, dict[str, Any], list[Any]]] = [
    (
        "/api/v1/policies",
        {
            "name": "p",
            "target": "web-\n*",
            "condition": {"type": "metric_exceeds", "metric": "cpu", "threshold": 1},
            "action": "scale-up",
        },
        ["body", "target"],
    ),
    (
        "/api/v1/policies",
        {
            "name": "p",
            "condition": {"type": "metric_exceeds", "metric": "c\tpu", "threshold": 1},
            "action": "scale-up",
        },
        ["body", "condition", "metric_exceeds", "metric"],
    ),
    (
        "/api/v1/silences",
        {
            "matchers": {"target": "web-01\r\nforged"},
            "ends_at": "2099-01-01T00:00:00Z",
            "comment": "x",
        },
        ["body", "matchers", "target"],
    ),
    (
        "/api/v1/silences",
        {
            "matchers": {"tags": {"region": "eu\x1b[31m"}},
            "ends_at": "2099-01-01T00:00:00Z",
            "comment": "x",
        },
        ["body", "matchers", "tags", "region"],
    ),
    (
        "/api/v1/actions",
        {"target": "web-01\nforged", "action": "scale-up"},
        ["body", "target"],
    ),
]


@pytest.mark.parametrize(("path", "body", "loc"), BODIES, ids=[str(b[2]) for b in BODIES])
async def test_bodies_refuse_control_characters_in_names_and_targets(
    client: httpx.AsyncClient, container: Container, path: str, body: Any, loc: Any
) -> None:
    before = await table_counts(container)
    r = await client.post(path, json=body)
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["loc"] == loc
    assert "control characters" in error["msg"]
    assert await table_counts(container) == before


async def test_an_over_long_target_says_characters(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/ingest", json=metric(target="w" * 256))
    assert r.status_code == 422
    assert r.json()["detail"][0]["msg"] == "String should have at most 255 characters"
