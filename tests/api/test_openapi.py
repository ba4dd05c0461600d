"""The OpenAPI document describes every route with its 4xx responses; no client input
gets a 500 from the policy and action routes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.support import started_client, table_counts
from vigil.api.middleware import MACHINE_BODIES
from vigil.settings import Settings

# The 4xx answers each route can give. A new route must be added here, with its errors.
EXPECTED_ERRORS: dict[tuple[str, str], set[int]] = {
    ("GET", "/health"): set(),
    ("GET", "/ready"): set(),
    ("GET", "/metrics"): set(),
    ("GET", "/api/v1/ingest/health"): set(),
    ("GET", "/api/v1/actions/health"): set(),
    ("POST", "/api/v1/ingest"): {413, 422},
    ("POST", "/api/v1/ingest/agent/metrics"): {413, 422},
    ("POST", "/api/v1/ingest/batch"): {413, 422},
    # Prometheus remote write: a body that does not decode is a 400 (its client's contract).
    ("POST", "/api/v1/write"): {400, 413, 415},
    ("GET", "/api/v1/policies"): set(),
    ("POST", "/api/v1/policies"): {409, 413, 422},
    ("GET", "/api/v1/policies/runner/status"): set(),
    ("GET", "/api/v1/policies/severity/{severity}"): {422},
    ("POST", "/api/v1/policies/reload"): {422},
    ("POST", "/api/v1/policies/evaluate"): {413, 422},
    ("GET", "/api/v1/policies/{name}"): {404, 422},
    ("PUT", "/api/v1/policies/{name}"): {404, 409, 413, 422},
    ("DELETE", "/api/v1/policies/{name}"): {404, 422},
    ("PUT", "/api/v1/policies/{name}/enable"): {404, 422},
    ("PUT", "/api/v1/policies/{name}/disable"): {404, 422},
    ("GET", "/api/v1/actions"): {422},
    ("POST", "/api/v1/actions"): {409, 413, 422},
    ("GET", "/api/v1/actions/status/{status}"): {422},
    ("GET", "/api/v1/actions/{action_id}"): {404, 422},
    ("GET", "/api/v1/actions/{action_id}/history"): {404, 422},
    ("PUT", "/api/v1/actions/{action_id}/cancel"): {404, 409, 413, 422},
    ("GET", "/api/v1/queue/stats"): set(),
    ("GET", "/api/v1/ui/queue/stats"): set(),
    ("GET", "/api/v1/queue/dead-letter"): {422},
    ("POST", "/api/v1/queue/dead-letter/redrive"): {413, 422},
    ("GET", "/api/v1/automation"): set(),
    ("POST", "/api/v1/automation/pause"): {413, 422},
    ("POST", "/api/v1/automation/resume"): {413, 422},
    ("POST", "/api/v1/silences"): {413, 422},
    ("GET", "/api/v1/silences"): {422},
    ("DELETE", "/api/v1/silences/{silence_id}"): {404, 422},
    ("GET", "/api/v1/decisions"): {422},
    ("GET", "/api/v1/audit"): {422},
    ("GET", "/api/v1/simulator/fleet"): {403},
    ("POST", "/api/v1/simulator/fleet/{service}/scale"): {403, 404, 413, 422},
    ("POST", "/api/v1/simulator/fleet/{service}/restart"): {403, 404, 422},
    ("POST", "/api/v1/simulator/start"): {403, 409, 413, 422},
    ("POST", "/api/v1/simulator/stop"): {403},
    ("GET", "/api/v1/simulator/status"): {403},
    ("POST", "/api/v1/ui/simulator/start"): {403, 409, 413, 422},
    ("POST", "/api/v1/ui/simulator/stop"): {403},
    ("GET", "/api/v1/ui/simulator/status"): {403},
    ("GET", "/api/v1/keys"): set(),
    ("POST", "/api/v1/keys"): {409, 413, 422},
    ("DELETE", "/api/v1/keys/{name}"): {404, 422},
    ("POST", "/api/v1/policies/backtest"): {413, 422},
    ("POST", "/api/v1/policies/{name}/backtest"): {404, 413, 422},
    ("POST", "/api/v1/actions/{action_id}/approve"): {404, 409, 413, 422},
    ("POST", "/api/v1/actions/{action_id}/reject"): {404, 409, 413, 422},
    ("GET", "/api/v1/policies/{name}/state"): {404, 422},
    ("POST", "/api/v1/policies/{name}/reset"): {404, 422},
    ("GET", "/api/v1/notifications"): {422},
    # OTLP/HTTP: its own statuses (a google.rpc.Status body), not Vigil's 422.
    ("POST", "/v1/metrics"): {400, 413, 415},
    ("POST", "/api/v1/alerts/alertmanager"): {413, 422},
    ("GET", "/api/v1/alerts"): {422},
    # Slack's button clicks: a form; 401 is its own (Slack's signature), not an API key's.
    ("POST", "/api/v1/integrations/slack/interactions"): {400, 401, 413},
}

# Path parameters that name something stored: an unknown one is a 404.
RESOURCE_PARAMS = {"name", "action_id", "silence_id", "service"}


def _operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every API route of the app, routers included."""
    operations: list[tuple[str, str]] = []
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and route.include_in_schema:
            assert route.path is not None
            operations.extend((method, route.path) for method in sorted(route.methods or ()))
    return operations


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["schemas"][name]
    return schema


async def test_openapi_lists_every_route_with_its_4xx_responses(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    operations = _operations(app)
    assert set(operations) == set(EXPECTED_ERRORS)
    documented_paths = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented_paths == set(EXPECTED_ERRORS)

    for method, path in operations:
        where = f"{method} {path}"
        operation = doc["paths"][path][method.lower()]
        documented = {int(code) for code in operation["responses"] if code.startswith("4")}
        # Every route that needs an API key also documents 401 and 403; every route but
        # the probes' a foreign Host (400); every state-changing one a body that is not
        # JSON (415), and 403 for neither JSON nor X-Vigil-Request.
        access = set() if path in ("/health", "/ready", "/metrics") else {401, 403}
        cross_site = set() if path in ("/health", "/ready") else {400}
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            cross_site |= {403, 415}
        assert documented == EXPECTED_ERRORS[(method, path)] | access | cross_site, where

        # The rules behind the table, checked against what each route declares.
        has_body = "requestBody" in operation
        has_params = bool(operation.get("parameters"))
        # OTLP answers its refusals as a google.rpc.Status, in the request's media type.
        machine = path == "/v1/metrics"
        if has_body:
            refused = 400 if path in MACHINE_BODIES else 422
            assert {413, refused} <= documented, f"{where} takes a body"
        if has_params:
            assert 422 in documented, f"{where} has parameters"
        path_params = set(re.findall(r"{(\w+)}", path))
        if path_params & RESOURCE_PARAMS:
            assert 404 in documented, f"{where} names a stored resource"
        else:
            assert 404 not in documented, f"{where} names no stored resource"

        for code in documented:
            content = operation["responses"][str(code)]["content"]
            schema = _resolve(doc, content["application/json"]["schema"])
            if machine and code not in (401, 403):  # Vigil's error, or the protocol's
                assert schema == {"type": "object"}, f"{where} {code}"
                media = {m.decode() for m in MACHINE_BODIES[path]}
                assert set(content) >= media, f"{where} {code}"
            else:
                assert "detail" in schema["properties"], f"{where} {code}"


# --- no 500 for anything a client can send ------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)


def _nest(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)


_json = st.recursive(_scalars, _nest, max_leaves=8)
_names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,8}", fullmatch=True) | st.text(max_size=10)
_durations = st.sampled_from(["30s", "2m", "0", "-1s", "1h", "soon"]) | st.floats()
_leaf_types = ["metric_exceeds", "metric_below", "threshold", "absent", "rate", "expr", "bogus"]


def _group(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"type": st.sampled_from(["all", "any"]), "conditions": st.lists(inner, max_size=3)}
    )


_condition = st.recursive(
    st.fixed_dictionaries(
        {"type": st.sampled_from(_leaf_types) | _json},
        optional={
            "metric": _names | _json,
            "threshold": st.floats() | _scalars,
            "operator": st.sampled_from([">", ">=", "<", "<=", "==", "!=", "=>", ""]) | _json,
            "for": _durations | _json,
            "window": _durations | _json,
            "aggregate": st.sampled_from(["avg", "p95", "count", "median"]) | _json,
            "expression": st.sampled_from(
                ["cpu > 90", 'cpu > 1 and tags.r == "x"', "__import__('os')", "9**9**9", ""]
            )
            | st.text(max_size=40)
            | _json,
        },
    ),
    _group,
    max_leaves=6,
)
_policy = st.fixed_dictionaries(
    {},
    optional={
        "name": _names | _json,
        "description": st.text(max_size=20) | _json,
        "severity": st.sampled_from(["info", "warning", "critical"]) | _json,
        "target": _names | _json,
        "enabled": st.booleans() | _json,
        "auto_remediate": st.booleans() | _json,
        "condition": _condition | _json,
        "clear": _condition | _json,
        "max_actions_per_hour": st.integers(-2, 5) | _json,
        "max_concurrent_targets": st.integers(-2, 5) | _json,
        "approval_required": st.booleans() | _json,
        "approval_timeout_seconds": _durations | _json,
        "action": _names | _json,
        "params": _json,
        "cooldown_seconds": st.sampled_from(["30s", "2m", "-1", "1h", "x"]) | _scalars,
    },
)
_manual = st.fixed_dictionaries(
    {},
    optional={
        "target": _names | _json,
        "action": _names | _json,
        "params": _json,
        "details": _json,
    },
)
_evaluate = st.fixed_dictionaries(
    {},
    optional={
        "metrics": st.dictionaries(_names, st.floats() | _scalars, max_size=3) | _json,
        "target": _names | _json,
    },
)
_fuzz = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _encode(body: Any) -> bytes:
    # NaN and Infinity are written as JavaScript writes them: not JSON, but clients send them.
    return json.dumps(body, allow_nan=True).encode()


async def _send(client: httpx.AsyncClient, method: str, path: str, body: Any) -> httpx.Response:
    r = await client.request(
        method, path, content=_encode(body), headers={"content-type": "application/json"}
    )
    assert r.status_code < 500, (method, path, body, r.text)
    assert r.headers["content-type"] == "application/json"
    assert "detail" in r.json() or r.status_code < 400
    return r


@_fuzz
@given(body=_policy, changes=_policy)
async def test_no_500_from_policy_bodies(
    client: httpx.AsyncClient, body: dict[str, Any], changes: dict[str, Any]
) -> None:
    created = await _send(client, "POST", "/api/v1/policies", body)
    name = body.get("name") if created.status_code == 201 else "web-cpu-high"
    path = f"/api/v1/policies/{name}"
    await _send(client, "PUT", path, changes)
    await _send(client, "PUT", f"{path}/disable", None)
    await _send(client, "DELETE", path, None)


@_fuzz
@given(body=_evaluate)
async def test_no_500_from_evaluate(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    await _send(client, "POST", "/api/v1/policies/evaluate", body)


@_fuzz
@given(body=_manual, cancel=_json)
async def test_no_500_from_action_bodies(
    client: httpx.AsyncClient, body: dict[str, Any], cancel: Any
) -> None:
    created = await _send(client, "POST", "/api/v1/actions", body)
    action_id = created.json()["action_id"] if created.status_code == 201 else 1
    await _send(client, "PUT", f"/api/v1/actions/{action_id}/cancel", cancel)


_query_parameters = [
    "page",
    "limit",
    "status",
    "event",
    "delivery",
    "target",
    "policy",
    "start_time",
    "end_time",
]
_query_values = (
    st.text(max_size=12)
    | st.integers().map(str)
    | st.sampled_from(
        ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-01:00", "2026-01-19", "%00", "1e999"]
    )
)


@_fuzz
@given(
    params=st.dictionaries(
        st.sampled_from(_query_parameters),
        _query_values,
        max_size=4,
    ),
    segment=st.text(min_size=1, max_size=12),
)
async def test_no_500_from_paths_and_queries(
    client: httpx.AsyncClient, params: dict[str, str], segment: str
) -> None:
    quoted = quote(segment, safe="")
    for path in (
        "/api/v1/actions",
        f"/api/v1/actions/{quoted}",
        f"/api/v1/actions/{quoted}/history",
        f"/api/v1/actions/status/{quoted}",
        f"/api/v1/policies/{quoted}",
        f"/api/v1/policies/severity/{quoted}",
        "/api/v1/notifications",
    ):
        r = await client.get(path, params=params)
        assert r.status_code < 500, (path, params, r.text)


async def test_the_documented_413s_happen(settings: Settings, subtests: pytest.Subtests) -> None:
    small = settings.model_copy(update={"max_body_bytes": 1024})
    oversized = {"name": "big", "description": "x" * 2000}
    async with started_client(small) as (client, container):
        before = await table_counts(container)
        for method, path in sorted(
            (m, p) for (m, p), errors in EXPECTED_ERRORS.items() if 413 in errors
        ):
            with subtests.test(method=method, path=path):
                concrete = path.replace("{name}", "big").replace("{action_id}", "1")
                r = await client.request(method, concrete, json=oversized)
                assert r.status_code == 413, r.text
                assert "detail" in r.json()
        assert await table_counts(container) == before


def _duration_schemas(schema: Any, path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every duration in a schema (its number branch), with where it is."""
    if isinstance(schema, dict):
        if "anyOf" in schema and any(
            b.get("pattern", "").endswith("(ms|s|m|h|d)?\\s*$") for b in schema["anyOf"]
        ):
            [number] = [b for b in schema["anyOf"] if b.get("type") == "number"]
            yield path, number
        for key, value in schema.items():
            yield from _duration_schemas(value, f"{path}.{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from _duration_schemas(value, f"{path}[{i}]")


async def test_the_schema_says_what_the_server_enforces(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    doc = (await client.get("/openapi.json")).json()
    policy = doc["components"]["schemas"]["PolicySpec"]
    bounds = dict(_duration_schemas(doc["components"]["schemas"]))
    assert bounds, "no duration found"
    # Durations that must be positive publish exclusiveMinimum, and the server agrees.
    positive = {p for p, number in bounds.items() if number.get("exclusiveMinimum") == 0}
    non_negative = {p for p, number in bounds.items() if number.get("minimum") == 0}
    assert positive | non_negative == set(bounds)
    assert any(p.endswith("approval_timeout_seconds") for p in positive)
    assert any(p.endswith("cooldown_seconds") for p in non_negative)
    body = {
        "name": "p",
        "condition": {"type": "metric_exceeds", "metric": "cpu", "threshold": 1},
        "action": "scale-up",
    }
    r = await client.post("/api/v1/policies", json={**body, "approval_timeout_seconds": 0})
    assert r.status_code == 422
    r = await client.post("/api/v1/policies", json={**body, "cooldown_seconds": 0})
    assert r.status_code == 201
    # Bodies that refuse unknown keys say so.
    assert policy["additionalProperties"] is False
    assert "additionalProperties" not in doc["components"]["schemas"]["MetricIn"]
