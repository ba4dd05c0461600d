"""Every request body refuses unknown keys with a 422 naming the key and, when one is close,
the likely intended one; nothing changes. (Ingest bodies are the documented exception: agents
send extra fields, which are ignored.)"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.support import table_counts
from vigil.container import Container

SILENCE = {"matchers": {"target": "web-*"}, "ends_at": "2099-01-01T00:00:00Z", "comment": "x"}
POLICY = {
    "name": "p",
    "condition": {"type": "metric_exceeds", "metric": "cpu", "threshold": 1},
    "action": "scale-up",
}

CASES: list[tuple[str, str, dict[str, Any], list[Any], str]] = [
    # (method, path, body, loc of the error, message)
    (
        "POST",
        "/api/v1/silences",
        {**SILENCE, "coment": "typo"},
        ["body", "coment"],
        "unknown field 'coment' (did you mean 'comment'?)",
    ),
    (
        "POST",
        "/api/v1/silences",
        {**SILENCE, "matchers": {"target": "web-*", "polcy": "high-*"}},
        ["body", "matchers", "polcy"],
        "unknown field 'polcy' (did you mean 'policy'?)",
    ),
    (
        "POST",
        "/api/v1/keys",
        {"name": "ci", "rol": "admin"},
        ["body", "rol"],
        "unknown field 'rol' (did you mean 'role'?)",
    ),
    (
        "POST",
        "/api/v1/simulator/start",
        {"rat": 50},
        ["body", "rat"],
        "unknown field 'rat' (did you mean 'rate'?)",
    ),
    (
        "POST",
        "/api/v1/simulator/fleet/web/scale",
        {"replica": 3},
        ["body", "replica"],
        "unknown field 'replica' (did you mean 'replicas'?)",
    ),
    (
        "POST",
        "/api/v1/automation/pause",
        {"reason": "x", "until": "tomorrow"},
        ["body", "until"],
        "unknown field 'until'",
    ),
    (
        "POST",
        "/api/v1/queue/dead-letter/redrive",
        {"al": True},
        ["body", "al"],
        "unknown field 'al' (did you mean 'all'?)",
    ),
    (
        "POST",
        "/api/v1/policies/evaluate",
        {"metrics": {"cpu": 1}, "target": "web-01", "tag": {}},
        ["body", "tag"],
        "unknown field 'tag' (did you mean 'tags'?)",
    ),
    (
        "POST",
        "/api/v1/policies/backtest",
        {
            "from": "2026-01-19T11:00:00Z",
            "to": "2026-01-19T12:00:00Z",
            "policy": {**POLICY, "max_actions_per_hr": 3},
        },
        ["body", "policy", "max_actions_per_hr"],
        "unknown field 'max_actions_per_hr' (did you mean 'max_actions_per_hour'?)",
    ),
    (
        "POST",
        "/api/v1/actions/1/approve",
        {"coment": "go"},
        ["body", "coment"],
        "unknown field 'coment' (did you mean 'comment'?)",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "loc", "message"), CASES, ids=[f"{c[1]}-{c[3][-1]}" for c in CASES]
)
async def test_unknown_keys_are_refused_naming_the_likely_intended_one(
    client: httpx.AsyncClient,
    container: Container,
    method: str,
    path: str,
    body: dict[str, Any],
    loc: list[Any],
    message: str,
) -> None:
    before = await table_counts(container)
    r = await client.request(method, path, json=body)
    assert r.status_code == 422, r.text
    assert {"loc": loc, "msg": message, "type": "extra_forbidden"} in r.json()["detail"]
    assert await table_counts(container) == before
    assert not container.simulator.running


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"rate": True}, ["body", "rate"]),
        ({"batch": "yes"}, ["body", "batch"]),
        ({"seed": "7"}, ["body", "seed"]),
        ({"seed": 7.0}, ["body", "seed"]),
        ({"duration_seconds": "60"}, ["body", "duration_seconds"]),
    ],
)
async def test_the_simulator_start_body_takes_no_loose_types(
    client: httpx.AsyncClient, container: Container, body: dict[str, Any], loc: list[Any]
) -> None:
    r = await client.post("/api/v1/simulator/start", json=body)
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [loc]
    assert not container.simulator.running


async def test_ingest_ignores_unknown_top_level_fields_as_documented(
    client: httpx.AsyncClient,
) -> None:
    metric = {"name": "cpu", "value": 1, "target": "web-01", "agent_version": "1.2"}
    r = await client.post("/api/v1/ingest", json=metric)
    assert r.status_code == 201, r.text
    r = await client.post("/api/v1/ingest/batch", json={"metrics": [metric], "agent": "x"})
    assert r.status_code == 201, r.text
