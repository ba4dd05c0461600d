"""The policies API (docs/api.md "Policies"), on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.api.support import assert_utc_timestamps, audit_rows, started_client, table_counts
from tests.helpers import wait_for_async
from vigil.clock import FakeClock
from vigil.container import Container
from vigil.settings import Settings

BASE = "/api/v1/policies"

POLICY: dict[str, Any] = {
    "name": "web-cpu-high",
    "description": "Scale up when CPU exceeds 90%",
    "severity": "warning",
    "target": "web-*",
    "enabled": True,
    "auto_remediate": True,
    "condition": {"type": "metric_exceeds", "metric": "cpu_percent", "threshold": 90},
    "action": "scale-up",
    "params": {"replicas": 2},
}

STORED_POLICY = {
    **POLICY,
    "condition": {"type": "metric_exceeds", "metric": "cpu_percent", "threshold": 90.0},
    "cooldown_seconds": 300.0,
    "shadow": False,
    "clear": None,
    "max_actions_per_hour": None,
    "max_concurrent_targets": None,
    "approval_required": False,
    "approval_timeout_seconds": 3600.0,
    "verify": None,
    "escalate": [],
    "target_label": None,
    "source": "api",
    "created_at": "2026-01-19T12:00:00Z",
    "updated_at": "2026-01-19T12:00:00Z",
}


def policy(**changes: Any) -> dict[str, Any]:
    """A valid policy document with ``changes`` applied."""
    document = copy.deepcopy(POLICY)
    document.update(changes)
    return document


def exceeds(metric: str, threshold: Any) -> dict[str, Any]:
    return {"type": "metric_exceeds", "metric": metric, "threshold": threshold}


def below(metric: str, threshold: Any) -> dict[str, Any]:
    return {"type": "metric_below", "metric": metric, "threshold": threshold}


async def create(client: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    r = await client.post(BASE, json=policy(**changes))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def listing(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get(BASE)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def error_locs(response: httpx.Response) -> list[list[Any]]:
    """The ``loc`` of every error of a 422 response."""
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list), detail
    assert detail
    return [e["loc"] for e in detail]


async def ingest(client: httpx.AsyncClient, name: str, value: float, target: str) -> Any:
    r = await client.post("/api/v1/ingest", json={"name": name, "value": value, "target": target})
    assert r.status_code == 201, r.text
    return r.json()


# --- list, create, get ------------------------------------------------------------------


async def test_list_is_empty_with_an_empty_policy_file(client: httpx.AsyncClient) -> None:
    assert await listing(client) == {"ok": True, "policies": {}, "total": 0, "enabled_count": 0}


async def test_create_returns_the_stored_policy(client: httpx.AsyncClient) -> None:
    r = await client.post(BASE, json=POLICY)
    assert r.status_code == 201, r.text
    assert r.json() == STORED_POLICY
    assert (await client.get(f"{BASE}/web-cpu-high")).json() == STORED_POLICY
    assert await listing(client) == {
        "ok": True,
        "policies": {"web-cpu-high": STORED_POLICY},
        "total": 1,
        "enabled_count": 1,
    }


async def test_create_fills_in_the_defaults(client: httpx.AsyncClient) -> None:
    r = await client.post(
        BASE, json={"name": "minimal", "condition": below("disk_free", 5), "action": "custom"}
    )
    assert r.status_code == 201, r.text
    assert r.json() == {
        "name": "minimal",
        "description": "",
        "severity": "warning",
        "target": "all",
        "enabled": True,
        "auto_remediate": False,
        "condition": {"type": "metric_below", "metric": "disk_free", "threshold": 5.0},
        "action": "custom",
        "params": {},
        "cooldown_seconds": 300.0,
        "shadow": False,
        "clear": None,
        "max_actions_per_hour": None,
        "max_concurrent_targets": None,
        "approval_required": False,
        "approval_timeout_seconds": 3600.0,
        "verify": None,
        "escalate": [],
        "target_label": None,
        "source": "api",
        "created_at": "2026-01-19T12:00:00Z",
        "updated_at": "2026-01-19T12:00:00Z",
    }


async def test_strings_are_trimmed(client: httpx.AsyncClient) -> None:
    created = await create(
        client,
        name="  web-cpu-high  ",
        target=" web-* ",
        action=" scale-up ",
        condition=exceeds(" cpu_percent ", 90),
    )
    assert created["name"] == "web-cpu-high"
    assert created["target"] == "web-*"
    assert created["action"] == "scale-up"
    assert created["condition"] == {
        "type": "metric_exceeds",
        "metric": "cpu_percent",
        "threshold": 90.0,
    }
    assert (await client.get(f"{BASE}/web-cpu-high")).status_code == 200


async def test_unknown_fields_are_refused_naming_the_likely_intended_one(
    client: httpx.AsyncClient, container: Container
) -> None:
    before = await table_counts(container)
    r = await client.post(
        BASE,
        json=policy(
            aproval_required=True,
            cooldown="10m",
            condition={**exceeds("cpu_percent", 90), "unit": "%"},
            colour="blue",
        ),
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == [
        {
            "loc": ["body", "condition", "metric_exceeds", "unit"],
            "msg": "unknown field 'unit'",
            "type": "extra_forbidden",
        },
        {
            "loc": ["body", "aproval_required"],
            "msg": "unknown field 'aproval_required' (did you mean 'approval_required'?)",
            "type": "extra_forbidden",
        },
        {
            "loc": ["body", "cooldown"],
            "msg": "unknown field 'cooldown' (did you mean 'cooldown_seconds'?)",
            "type": "extra_forbidden",
        },
        {"loc": ["body", "colour"], "msg": "unknown field 'colour'", "type": "extra_forbidden"},
    ]
    assert await table_counts(container) == before


async def test_an_update_with_an_unknown_field_is_refused(client: httpx.AsyncClient) -> None:
    await create(client, name="p")
    r = await client.put(f"{BASE}/p", json={"aproval_required": True})
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "aproval_required"]
    assert error["msg"] == "unknown field 'aproval_required' (did you mean 'approval_required'?)"
    assert (await client.get(f"{BASE}/p")).json()["approval_required"] is False


async def test_cooldown_accepts_seconds_and_duration_strings(client: httpx.AsyncClient) -> None:
    assert (await create(client, name="a", cooldown_seconds=1.5))["cooldown_seconds"] == 1.5
    assert (await create(client, name="b", cooldown_seconds="2m"))["cooldown_seconds"] == 120.0
    assert (await create(client, name="c", cooldown_seconds="1h"))["cooldown_seconds"] == 3600.0
    assert (await create(client, name="d", cooldown_seconds=0))["cooldown_seconds"] == 0.0


async def test_openapi_documents_what_a_cooldown_accepts(client: httpx.AsyncClient) -> None:
    # Found by the fuzz test: /openapi.json said "a number", so clients could not know that
    # "2m" is accepted and that negative or over-ten-year durations are refused.
    document = (await client.get("/openapi.json")).json()
    cooldown = document["components"]["schemas"]["PolicySpec"]["properties"]["cooldown_seconds"]
    number, text = cooldown["anyOf"]
    assert number == {"type": "number", "minimum": 0, "maximum": 10 * 365 * 86400}
    assert text["type"] == "string"
    for good in ("30s", "2m", "1.5h", "7d", "250ms", "90"):
        assert re.match(text["pattern"], good), good
    for bad in ("-5s", "soon", "1w", ""):
        assert not re.match(text["pattern"], bad), bad
    assert (await create(client, name="a", cooldown_seconds="7d"))["cooldown_seconds"] == 604800


async def test_enabled_count_counts_enabled_policies(client: httpx.AsyncClient) -> None:
    await create(client, name="one")
    await create(client, name="two", enabled=False)
    await create(client, name="three", severity="critical")
    body = await listing(client)
    assert sorted(body["policies"]) == ["one", "three", "two"]
    assert body["total"] == 3
    assert body["enabled_count"] == 2
    assert body["policies"]["two"]["enabled"] is False


async def test_duplicate_name_is_a_conflict_and_keeps_the_first(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create(client)
    before = await table_counts(container)
    r = await client.post(BASE, json=policy(description="another one", severity="critical"))
    assert r.status_code == 409
    assert "web-cpu-high" in r.json()["detail"]
    stored = (await client.get(f"{BASE}/web-cpu-high")).json()
    assert stored["description"] == POLICY["description"]
    assert stored["severity"] == "warning"
    assert await table_counts(container) == before


async def test_concurrent_creates_of_one_name_give_one_policy(
    client: httpx.AsyncClient, container: Container
) -> None:
    responses = await asyncio.gather(
        *(client.post(BASE, json=policy(description=f"attempt {i}")) for i in range(5))
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409, 409]
    [winner] = [r.json() for r in responses if r.status_code == 201]
    assert (await client.get(f"{BASE}/web-cpu-high")).json() == winner
    assert [r["kind"] for r in await audit_rows(container)] == ["policy.created"]


INVALID_POLICIES: list[tuple[str, dict[str, Any], list[Any]]] = [
    ("upper-case name", {"name": "Web-CPU"}, ["body", "name"]),
    ("name starting with a dash", {"name": "-cpu"}, ["body", "name"]),
    ("name with a space", {"name": "web cpu"}, ["body", "name"]),
    ("name empty after trimming", {"name": "   "}, ["body", "name"]),
    ("name too long", {"name": "a" * 256}, ["body", "name"]),
    ("name not a string", {"name": 12}, ["body", "name"]),
    ("unknown severity", {"severity": "fatal"}, ["body", "severity"]),
    ("severity in capitals", {"severity": "WARNING"}, ["body", "severity"]),
    ("empty target", {"target": " "}, ["body", "target"]),
    ("enabled as a string", {"enabled": "yes"}, ["body", "enabled"]),
    ("auto_remediate as a number", {"auto_remediate": 1}, ["body", "auto_remediate"]),
    (
        "unknown condition type",
        {"condition": {"type": "metric_equals", "metric": "cpu", "threshold": 1}},
        ["body", "condition"],
    ),
    ("condition without a type", {"condition": {"metric": "cpu"}}, ["body", "condition"]),
    ("condition not an object", {"condition": "cpu > 90"}, ["body", "condition"]),
    (
        "empty all list",
        {"condition": {"type": "all", "conditions": []}},
        ["body", "condition", "all", "conditions"],
    ),
    (
        "empty any list",
        {"condition": {"type": "any", "conditions": []}},
        ["body", "condition", "any", "conditions"],
    ),
    (
        "all without conditions",
        {"condition": {"type": "all"}},
        ["body", "condition", "all", "conditions"],
    ),
    (
        "threshold as a string",
        {"condition": exceeds("cpu", "90")},
        ["body", "condition", "metric_exceeds", "threshold"],
    ),
    (
        "threshold as a bool",
        {"condition": below("cpu", True)},
        ["body", "condition", "metric_below", "threshold"],
    ),
    (
        "threshold missing",
        {"condition": {"type": "metric_exceeds", "metric": "cpu"}},
        ["body", "condition", "metric_exceeds", "threshold"],
    ),
    (
        "metric missing",
        {"condition": {"type": "metric_exceeds", "threshold": 90}},
        ["body", "condition", "metric_exceeds", "metric"],
    ),
    (
        "metric empty",
        {"condition": exceeds("  ", 90)},
        ["body", "condition", "metric_exceeds", "metric"],
    ),
    (
        "invalid condition nested in any inside all",
        {
            "condition": {
                "type": "all",
                "conditions": [
                    exceeds("cpu", 80),
                    {"type": "any", "conditions": [below("disk", 5), exceeds("mem", "x")]},
                ],
            }
        },
        [
            "body",
            "condition",
            "all",
            "conditions",
            1,
            "any",
            "conditions",
            1,
            "metric_exceeds",
            "threshold",
        ],
    ),
    ("action missing", {"action": None}, ["body", "action"]),
    ("action with capitals", {"action": "Scale-Up"}, ["body", "action"]),
    ("action with an underscore", {"action": "scale_up"}, ["body", "action"]),
    ("action with a dot", {"action": "scale.up"}, ["body", "action"]),
    ("action starting with a dash", {"action": "-restart"}, ["body", "action"]),
    ("params not an object", {"params": [1, 2]}, ["body", "params"]),
    ("negative cooldown", {"cooldown_seconds": -1}, ["body", "cooldown_seconds"]),
    ("unparseable cooldown", {"cooldown_seconds": "soon"}, ["body", "cooldown_seconds"]),
    ("negative cooldown string", {"cooldown_seconds": "-5s"}, ["body", "cooldown_seconds"]),
    ("cooldown as a bool", {"cooldown_seconds": True}, ["body", "cooldown_seconds"]),
    ("description with NUL", {"description": "a\u0000b"}, ["body", "description"]),
]


async def test_invalid_policy_is_refused_naming_the_field(
    client: httpx.AsyncClient, container: Container, subtests: pytest.Subtests
) -> None:
    before = await table_counts(container)
    for name, changes, loc in INVALID_POLICIES:
        with subtests.test(name):
            document = policy(**changes)
            if changes.get("action", "") is None:
                del document["action"]
            r = await client.post(BASE, json=document)
            assert loc in error_locs(r)
            for error in r.json()["detail"]:
                assert error["msg"]
                assert "input" not in error
    assert await table_counts(container) == before


async def test_non_finite_threshold_in_raw_json_is_a_422(
    client: httpx.AsyncClient, container: Container, subtests: pytest.Subtests
) -> None:
    for number in ("NaN", "Infinity", "-Infinity", "1e999"):
        with subtests.test(number):
            text = (
                '{"name": "nan", "action": "custom", "condition": '
                f'{{"type": "metric_exceeds", "metric": "cpu", "threshold": {number}}}}}'
            )
            r = await client.post(BASE, content=text, headers={"content-type": "application/json"})
            assert r.status_code == 422, r.text
            assert r.json()["detail"][0]["loc"][0] == "body"
    assert (await table_counts(container))["policies"] == 0


async def test_a_body_that_is_not_a_policy_object_is_a_422(
    client: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    for content, content_type in [
        ("{not json", "application/json"),
        ("[]", "application/json"),
        ("null", "application/json"),
        ('"a policy"', "application/json"),
        ("", "application/json"),
    ]:
        with subtests.test(content=content, content_type=content_type):
            r = await client.post(BASE, content=content, headers={"content-type": content_type})
            assert r.status_code == 422, r.text
            assert r.json()["detail"][0]["loc"][0] == "body"
    r = await client.post(BASE, content="name: cpu", headers={"content-type": "application/yaml"})
    assert r.status_code == 415, r.text


async def test_nested_all_and_any_conditions(client: httpx.AsyncClient) -> None:
    condition = {
        "type": "all",
        "conditions": [
            exceeds("cpu_percent", 80),
            {"type": "any", "conditions": [exceeds("memory_percent", 80), below("disk_free", 5)]},
        ],
    }
    created = await create(client, name="nested", target="all", condition=condition)
    assert created["condition"] == {
        "type": "all",
        "conditions": [
            {"type": "metric_exceeds", "metric": "cpu_percent", "threshold": 80.0},
            {
                "type": "any",
                "conditions": [
                    {"type": "metric_exceeds", "metric": "memory_percent", "threshold": 80.0},
                    {"type": "metric_below", "metric": "disk_free", "threshold": 5.0},
                ],
            },
        ],
    }

    async def fires(values: dict[str, float]) -> bool:
        r = await client.post(f"{BASE}/evaluate", json={"metrics": values, "target": "db-01"})
        assert r.status_code == 200, r.text
        return [v["policy_name"] for v in r.json()["violations"]] == ["nested"]

    assert await fires({"cpu_percent": 95, "memory_percent": 90})
    assert await fires({"cpu_percent": 95, "disk_free": 1})
    assert not await fires({"cpu_percent": 95, "memory_percent": 50, "disk_free": 50})
    assert not await fires({"cpu_percent": 50, "memory_percent": 90, "disk_free": 1})
    assert not await fires({"cpu_percent": 95})  # a metric never sent makes its condition false


async def test_conditions_nested_too_deeply_are_refused(client: httpx.AsyncClient) -> None:
    condition: dict[str, Any] = exceeds("cpu", 1)
    for _ in range(10):
        condition = {"type": "all", "conditions": [condition]}
    r = await client.post(BASE, json=policy(condition=condition))
    assert r.status_code == 422
    assert "nested too deeply" in r.text


async def test_an_unknown_policy_is_404_and_nothing_changes(
    client: httpx.AsyncClient, container: Container, subtests: pytest.Subtests
) -> None:
    await create(client, name="known")
    before = await table_counts(container)
    for method, path in [
        ("GET", f"{BASE}/ghost"),
        ("PUT", f"{BASE}/ghost"),
        ("DELETE", f"{BASE}/ghost"),
        ("PUT", f"{BASE}/ghost/enable"),
        ("PUT", f"{BASE}/ghost/disable"),
    ]:
        with subtests.test(method=method, path=path):
            kwargs: dict[str, Any] = {"json": {"severity": "info"}} if method == "PUT" else {}
            r = await client.request(method, path, **kwargs)
            assert r.status_code == 404
            assert r.json() == {"detail": "policy 'ghost' not found"}
    assert await table_counts(container) == before


async def test_an_unusable_name_in_the_path_is_a_422(
    client: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    # NUL cannot be stored (PostgreSQL refuses it outright): a 422, not a 500.
    for name in ("a%00b", "a" * 256):
        for method, suffix in [
            ("GET", ""),
            ("PUT", ""),
            ("DELETE", ""),
            ("PUT", "/enable"),
            ("PUT", "/disable"),
        ]:
            with subtests.test(method=method, path=f"{name[:8]}{suffix}"):
                kwargs: dict[str, Any] = {"json": {"severity": "info"}} if method == "PUT" else {}
                r = await client.request(method, f"{BASE}/{name}{suffix}", **kwargs)
                assert r.status_code == 422, r.text
                assert r.json()["detail"][0]["loc"] == ["path", "name"]


# --- update -----------------------------------------------------------------------------


async def test_put_changes_only_the_given_fields(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await create(client)
    clock.advance(60)
    changes = {"description": "Scale up at 80%", "condition": exceeds("cpu_percent", 80)}
    r = await client.put(f"{BASE}/web-cpu-high", json=changes)
    assert r.status_code == 200, r.text
    expected = {
        **STORED_POLICY,
        "description": "Scale up at 80%",
        "condition": {"type": "metric_exceeds", "metric": "cpu_percent", "threshold": 80.0},
        "updated_at": "2026-01-19T12:01:00Z",
    }
    assert r.json() == expected
    assert (await client.get(f"{BASE}/web-cpu-high")).json() == expected


async def test_put_each_field(client: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for i, (changes, field, value) in enumerate(
        [
            ({"severity": "critical"}, "severity", "critical"),
            ({"target": "api-01"}, "target", "api-01"),
            ({"enabled": False}, "enabled", False),
            ({"auto_remediate": False}, "auto_remediate", False),
            ({"action": "restart-service"}, "action", "restart-service"),
            ({"params": {}}, "params", {}),
            ({"cooldown_seconds": "2m"}, "cooldown_seconds", 120.0),
            ({"cooldown_seconds": 0.5}, "cooldown_seconds", 0.5),
            ({"shadow": True}, "shadow", True),
            ({"description": "  trimmed  "}, "description", "trimmed"),
            ({}, "severity", "warning"),
        ]
    ):
        with subtests.test(changes=changes):
            name = f"case-{i}"
            await create(client, name=name)
            r = await client.put(f"{BASE}/{name}", json=changes)
            assert r.status_code == 200, r.text
            assert r.json()[field] == value
            stored = (await client.get(f"{BASE}/{name}")).json()
            assert stored == r.json()
            expected = {**STORED_POLICY, "name": name, field: value}
            assert stored == expected


async def test_put_cannot_rename(client: httpx.AsyncClient, container: Container) -> None:
    await create(client)
    before = await table_counts(container)
    r = await client.put(f"{BASE}/web-cpu-high", json={"name": "renamed", "severity": "info"})
    assert ["body", "name"] in error_locs(r)
    assert (await client.get(f"{BASE}/renamed")).status_code == 404
    assert (await client.get(f"{BASE}/web-cpu-high")).json() == STORED_POLICY
    assert await table_counts(container) == before
    # Giving the policy's own name is not a rename.
    r = await client.put(
        f"{BASE}/web-cpu-high", json={"name": " web-cpu-high ", "severity": "info"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "web-cpu-high"
    assert r.json()["severity"] == "info"


INVALID_UPDATES: list[tuple[dict[str, Any], list[Any]]] = [
    ({"severity": "fatal"}, ["body", "severity"]),
    ({"enabled": "yes"}, ["body", "enabled"]),
    ({"enabled": 1}, ["body", "enabled"]),
    ({"auto_remediate": "false"}, ["body", "auto_remediate"]),
    (
        {"condition": {"type": "any", "conditions": []}},
        ["body", "condition", "any", "conditions"],
    ),
    (
        {"condition": exceeds("cpu_percent", "80")},
        ["body", "condition", "metric_exceeds", "threshold"],
    ),
    ({"action": "Restart"}, ["body", "action"]),
    ({"cooldown_seconds": -5}, ["body", "cooldown_seconds"]),
    ({"cooldown_seconds": "whenever"}, ["body", "cooldown_seconds"]),
    ({"target": ""}, ["body", "target"]),
    ({"description": None}, ["body", "description"]),
    ({"condition": None}, ["body", "condition"]),
    ({"params": [1]}, ["body", "params"]),
    ({"params": {"note": "a\u0000b"}}, ["body", "params"]),
]


async def test_put_with_an_invalid_result_changes_nothing(
    client: httpx.AsyncClient, container: Container, subtests: pytest.Subtests
) -> None:
    for i, (changes, loc) in enumerate(INVALID_UPDATES):
        with subtests.test(changes=changes):
            name = f"case-{i}"
            stored = await create(client, name=name)
            before = await table_counts(container)
            # A valid change alongside the invalid one is not applied either.
            body = {"params": {"replicas": 9}, **changes}
            r = await client.put(f"{BASE}/{name}", json=body)
            assert loc in error_locs(r)
            assert (await client.get(f"{BASE}/{name}")).json() == stored
            assert await table_counts(container) == before


# --- delete, enable, disable ------------------------------------------------------------


async def test_delete(client: httpx.AsyncClient) -> None:
    await create(client)
    await create(client, name="other")
    r = await client.delete(f"{BASE}/web-cpu-high")
    assert r.status_code == 200
    assert r.json() == {"ok": True, "message": "Policy 'web-cpu-high' deleted"}
    assert (await client.get(f"{BASE}/web-cpu-high")).status_code == 404
    assert list((await listing(client))["policies"]) == ["other"]
    again = await client.delete(f"{BASE}/web-cpu-high")
    assert again.status_code == 404
    # The name is free again.
    await create(client)


async def test_deleted_policy_no_longer_fires(client: httpx.AsyncClient) -> None:
    await create(client)
    assert (await client.delete(f"{BASE}/web-cpu-high")).status_code == 200
    body = await ingest(client, "cpu_percent", 99, "web-01")
    assert body["violations"] == []
    assert body["actions"] == []


async def test_disable_stops_firing_and_enable_restores_it(client: httpx.AsyncClient) -> None:
    await create(client)
    r = await client.put(f"{BASE}/web-cpu-high/disable")
    assert r.status_code == 200
    assert r.json()["ok"] is True
    assert "disabled" in r.json()["message"]
    stored = (await client.get(f"{BASE}/web-cpu-high")).json()
    assert stored["enabled"] is False
    assert (await listing(client))["enabled_count"] == 0

    body = await ingest(client, "cpu_percent", 99, "web-01")
    assert body["violations"] == []
    assert body["actions"] == []
    assert (await client.get("/api/v1/actions")).json()["total"] == 0

    r = await client.put(f"{BASE}/web-cpu-high/enable")
    assert r.status_code == 200
    assert "enabled" in r.json()["message"]
    assert (await client.get(f"{BASE}/web-cpu-high")).json()["enabled"] is True
    body = await ingest(client, "cpu_percent", 99, "web-01")
    assert [v["policy_name"] for v in body["violations"]] == ["web-cpu-high"]
    assert [a["status"] for a in body["actions"]] == ["pending"]


async def test_disable_keeps_the_rest_of_the_policy(client: httpx.AsyncClient) -> None:
    await create(client)
    await client.put(f"{BASE}/web-cpu-high/disable")
    await client.put(f"{BASE}/web-cpu-high/enable")
    stored = (await client.get(f"{BASE}/web-cpu-high")).json()
    assert {k: v for k, v in stored.items() if k != "updated_at"} == {
        k: v for k, v in STORED_POLICY.items() if k != "updated_at"
    }


# --- by severity ------------------------------------------------------------------------


async def test_by_severity(client: httpx.AsyncClient) -> None:
    await create(client, name="info-1", severity="info")
    await create(client, name="crit-1", severity="critical")
    await create(client, name="crit-2", severity="critical", enabled=False)
    await create(client, name="warn-1")
    r = await client.get(f"{BASE}/severity/critical")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True
    assert sorted(body["policies"]) == ["crit-1", "crit-2"]
    assert body["total"] == 2
    assert body["enabled_count"] == 1
    assert all(p["severity"] == "critical" for p in body["policies"].values())
    info = (await client.get(f"{BASE}/severity/info")).json()
    assert list(info["policies"]) == ["info-1"]
    await client.delete(f"{BASE}/warn-1")
    assert (await client.get(f"{BASE}/severity/warning")).json() == {
        "ok": True,
        "policies": {},
        "total": 0,
        "enabled_count": 0,
    }


async def test_unknown_severity_is_422(client: httpx.AsyncClient) -> None:
    for severity in ("fatal", "WARNING", "%00", "warning%20"):
        r = await client.get(f"{BASE}/severity/{severity}")
        assert r.status_code == 422, severity
        assert r.json()["detail"][0]["loc"] == ["path", "severity"]


# --- targets ----------------------------------------------------------------------------


TARGETS = [
    ("all", "anything-01", True),
    ("*", "anything-01", True),
    ("web-01", "web-01", True),
    ("web-01", "web-011", False),
    ("web-01", "WEB-01", False),
    ("web-*", "web-01", True),
    ("web-*", "web-", True),
    ("web-*", "api-01", False),
    ("web*", "webserver", True),
    ("web-0?", "web-07", True),
    ("web-0?", "web-10", False),
    ("web-[12]", "web-2", True),
    ("web-[12]", "web-3", False),
]


async def test_targets_all_exact_and_glob(
    client: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    await create(client)
    for pattern, target, matches in TARGETS:
        with subtests.test(pattern=pattern, target=target):
            r = await client.put(f"{BASE}/web-cpu-high", json={"target": pattern})
            assert r.status_code == 200, r.text
            r = await client.post(
                f"{BASE}/evaluate", json={"metrics": {"cpu_percent": 99}, "target": target}
            )
            assert r.status_code == 200, r.text
            assert bool(r.json()["violations"]) is matches


async def test_glob_target_on_ingest(client: httpx.AsyncClient) -> None:
    await create(client)
    web = await ingest(client, "cpu_percent", 95, "web-07")
    assert [(v["policy_name"], v["target"]) for v in web["violations"]] == [
        ("web-cpu-high", "web-07")
    ]
    api = await ingest(client, "cpu_percent", 95, "api-07")
    assert api["violations"] == []


# --- reload and the policy file ---------------------------------------------------------


def write_policies(path: Path, *policies: dict[str, Any]) -> None:
    write_text(path, yaml.safe_dump({"policies": list(policies)}))


def write_text(path: Path, text: str) -> None:
    path.write_text(text)


def remove(path: Path) -> None:
    path.unlink()


FILE_POLICY = policy(
    name="file-disk", severity="critical", target="all", condition=below("disk_free", 5)
)


async def test_reload_upserts_from_the_file_and_keeps_api_policies(
    client: httpx.AsyncClient, policies_file: Path
) -> None:
    await create(client, name="from-api")
    write_policies(policies_file, FILE_POLICY)
    r = await client.post(f"{BASE}/reload")
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True
    assert "1 policies" in r.json()["message"]
    body = await listing(client)
    assert sorted(body["policies"]) == ["file-disk", "from-api"]
    assert body["policies"]["file-disk"]["source"] == "file"
    assert body["policies"]["file-disk"]["condition"]["type"] == "metric_below"
    assert body["policies"]["from-api"]["source"] == "api"

    # A second reload of the same file changes nothing.
    r = await client.post(f"{BASE}/reload")
    assert r.status_code == 200
    assert await listing(client) == body


async def test_reload_applies_an_edit_of_the_file(
    client: httpx.AsyncClient, policies_file: Path, clock: FakeClock
) -> None:
    write_policies(policies_file, FILE_POLICY)
    assert (await client.post(f"{BASE}/reload")).status_code == 200
    clock.advance(10)
    edited = {**FILE_POLICY, "condition": below("disk_free", 10), "description": "edited"}
    second = policy(name="file-mem", condition=exceeds("memory_percent", 95))
    write_policies(policies_file, edited, second)
    r = await client.post(f"{BASE}/reload")
    assert r.status_code == 200
    assert "2 policies" in r.json()["message"]
    stored = (await client.get(f"{BASE}/file-disk")).json()
    assert stored["condition"]["threshold"] == 10.0
    assert stored["description"] == "edited"
    assert stored["created_at"] == "2026-01-19T12:00:00Z"
    assert stored["updated_at"] == "2026-01-19T12:00:10Z"
    assert (await client.get(f"{BASE}/file-mem")).status_code == 200


async def test_reload_keeps_policies_removed_from_the_file(
    client: httpx.AsyncClient, policies_file: Path
) -> None:
    write_policies(policies_file, FILE_POLICY)
    await client.post(f"{BASE}/reload")
    write_policies(policies_file)
    assert (await client.post(f"{BASE}/reload")).status_code == 200
    assert (await client.get(f"{BASE}/file-disk")).status_code == 200


async def test_reload_leaves_api_changes_alone_until_the_file_changes(
    client: httpx.AsyncClient, policies_file: Path
) -> None:
    write_policies(policies_file, FILE_POLICY)
    await client.post(f"{BASE}/reload")
    await client.put(f"{BASE}/file-disk/disable")
    await client.post(f"{BASE}/reload")
    assert (await client.get(f"{BASE}/file-disk")).json()["enabled"] is False


async def test_reload_of_a_large_file_creates_updates_and_audits_in_file_order(
    client: httpx.AsyncClient, container: Container, policies_file: Path
) -> None:
    kept = policy(name="file-kept", condition=exceeds("cpu_percent", 90))
    write_policies(policies_file, FILE_POLICY, kept)
    await client.post(f"{BASE}/reload")
    await client.put(f"{BASE}/file-kept/disable")
    # More policies than one read of stored names takes, the edited one among the new.
    new = [policy(name=f"file-{n:04d}", condition=exceeds(f"m{n}", n)) for n in range(1200)]
    edited = {**FILE_POLICY, "description": "edited"}
    write_policies(policies_file, *new[:600], edited, kept, *new[600:])
    audited = len(await audit_rows(container))

    r = await client.post(f"{BASE}/reload")

    assert r.status_code == 200, r.text
    assert "(1200 created, 1 updated, 1 unchanged)" in r.json()["message"]
    body = await listing(client)
    assert body["total"] == 1202
    assert body["policies"]["file-0599"]["condition"]["threshold"] == 599
    assert body["policies"]["file-disk"]["description"] == "edited"
    assert body["policies"]["file-kept"]["enabled"] is False
    rows = (await audit_rows(container))[audited:]
    assert [(r["kind"], r["subject"]) for r in rows] == [
        *(("policy.created", f"policy:file-{n:04d}") for n in range(600)),
        ("policy.reloaded", "policy:file-disk"),
        *(("policy.created", f"policy:file-{n:04d}") for n in range(600, 1200)),
    ]
    assert rows[600]["before"]["description"] != "edited"
    assert rows[600]["after"]["description"] == "edited"
    # The cache follows the new revision: ingest evaluates the new policies.
    assert (await ingest(client, "m7", 8, "web-01"))["violations"][0]["policy_name"] == "file-0007"


INVALID_FILES = [
    pytest.param("policies: [\n", id="not YAML"),
    pytest.param("- name: x\n", id="no policies key"),
    pytest.param("policies: 3\n", id="policies not a list"),
    pytest.param(
        yaml.safe_dump(
            {
                "policies": [
                    {**FILE_POLICY, "condition": below("disk_free", 1)},
                    {**FILE_POLICY, "name": "bad", "severity": "fatal"},
                ]
            }
        ),
        id="one invalid policy",
    ),
    pytest.param(
        yaml.safe_dump(
            {
                "policies": [
                    {**FILE_POLICY, "condition": below("disk_free", 1)},
                    {**FILE_POLICY, "condition": below("disk_free", 2)},
                ]
            }
        ),
        id="duplicate names",
    ),
]


async def test_reload_of_an_invalid_file_is_a_422_and_changes_nothing(
    client: httpx.AsyncClient,
    container: Container,
    policies_file: Path,
    subtests: pytest.Subtests,
) -> None:
    write_policies(policies_file, FILE_POLICY)
    await client.post(f"{BASE}/reload")
    before = await listing(client)
    counts = await table_counts(container)
    for case in INVALID_FILES:
        [text] = case.values
        with subtests.test(str(case.id)):
            write_text(policies_file, str(text))
            r = await client.post(f"{BASE}/reload")
            assert r.status_code == 422, r.text
            assert r.json()["detail"]
            assert await listing(client) == before
            assert await table_counts(container) == counts


async def test_reload_error_names_the_field(client: httpx.AsyncClient, policies_file: Path) -> None:
    write_policies(policies_file, FILE_POLICY, {**FILE_POLICY, "name": "bad", "severity": "fatal"})
    r = await client.post(f"{BASE}/reload")
    assert r.status_code == 422
    assert "policies[1].severity" in str(r.json()["detail"])


async def test_reload_of_a_missing_file_is_a_422(
    client: httpx.AsyncClient, policies_file: Path
) -> None:
    remove(policies_file)
    r = await client.post(f"{BASE}/reload")
    assert r.status_code == 422
    assert str(policies_file) in r.json()["detail"]


async def test_the_policy_file_is_loaded_at_start(
    settings: Settings, policies_file: Path, clock: FakeClock
) -> None:
    write_policies(policies_file, FILE_POLICY)
    async with started_client(settings, clock=clock) as (client, _):
        stored = (await client.get(f"{BASE}/file-disk")).json()
    assert stored["source"] == "file"
    assert stored["severity"] == "critical"


EXAMPLES = {
    "high-cpu-alert": {
        "target": "web*",
        "severity": "warning",
        "condition": {"type": "metric_exceeds", "metric": "cpu_usage", "threshold": 90.0},
        "action": "scale-up",
        "params": {"replicas": 2},
        "auto_remediate": True,
        "enabled": True,
    },
    "high-memory-alert": {
        "target": "all",
        "severity": "warning",
        "condition": {"type": "metric_exceeds", "metric": "memory_percent", "threshold": 85.0},
        "action": "custom",
        "auto_remediate": False,
        "enabled": True,
    },
    "low-disk-space": {
        "target": "all",
        "severity": "critical",
        "condition": {"type": "metric_below", "metric": "disk_free_percent", "threshold": 5.0},
        "action": "custom",
        "auto_remediate": False,
        "enabled": True,
    },
    "service-health-critical": {
        "target": "api-*",
        "severity": "critical",
        "condition": {
            "type": "metric_exceeds",
            "metric": "health_check_failures",
            "threshold": 3.0,
        },
        "action": "restart-service",
        "auto_remediate": True,
        "enabled": True,
    },
    "resource-exhaustion": {
        "target": "all",
        "severity": "critical",
        "condition": {
            "type": "all",
            "conditions": [
                {"type": "metric_exceeds", "metric": "cpu_usage", "threshold": 80.0},
                {"type": "metric_exceeds", "metric": "memory_percent", "threshold": 80.0},
            ],
        },
        "action": "scale-up",
        "auto_remediate": True,
        "enabled": True,
    },
    "pod-drain-required": {
        "severity": "warning",
        "condition": {
            "type": "any",
            "conditions": [
                {"type": "metric_exceeds", "metric": "node_not_ready", "threshold": 0.0},
                {"type": "metric_exceeds", "metric": "disk_pressure", "threshold": 0.0},
            ],
        },
        "action": "drain-pod",
        "enabled": False,
    },
}


async def test_packaged_examples_load_without_a_policy_file(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    # A policies.yaml in the working directory must not be what gets loaded.
    monkeypatch.chdir(tmp_path)
    write_policies(tmp_path / "policies.yaml", policy(name="from-the-cwd"))
    no_file = settings.model_copy(update={"policies_file": None})
    async with started_client(no_file, clock=clock) as (client, _):
        body = await listing(client)
        reloaded = await client.post(f"{BASE}/reload")
    assert sorted(body["policies"]) == sorted(EXAMPLES)
    assert body["total"] == 6
    assert body["enabled_count"] == 5
    for name, expected in EXAMPLES.items():
        stored = body["policies"][name]
        assert {k: stored[k] for k in expected} == expected, name
        assert stored["source"] == "file"
    assert reloaded.status_code == 200
    assert "6 policies" in reloaded.json()["message"]


# --- evaluate (dry run) -----------------------------------------------------------------


async def test_evaluate_is_a_dry_run(client: httpx.AsyncClient, container: Container) -> None:
    await create(client)
    await create(
        client,
        name="memory-high",
        severity="critical",
        target="all",
        auto_remediate=False,
        description="Memory",
        condition=exceeds("memory_percent", 85),
        action="custom",
    )
    await create(client, name="disk-low", target="all", condition=below("disk_free", 5))
    before = await table_counts(container)
    r = await client.post(
        f"{BASE}/evaluate",
        json={
            "metrics": {"cpu_percent": 95, "memory_percent": 90, "disk_free": 50},
            "target": "web-01",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True
    assert body["timestamp"] == "2026-01-19T12:00:00Z"
    assert sorted(body["violations"], key=lambda v: v["policy_name"]) == [
        {
            "policy_name": "memory-high",
            "severity": "critical",
            "description": "Memory",
            "target": "web-01",
            "action": "custom",
            "triggered_at": "2026-01-19T12:00:00Z",
        },
        {
            "policy_name": "web-cpu-high",
            "severity": "warning",
            "description": POLICY["description"],
            "target": "web-01",
            "action": "scale-up",
            "triggered_at": "2026-01-19T12:00:00Z",
        },
    ]
    assert sorted(body["actions_triggered"], key=lambda a: a["policy_name"]) == [
        {
            "action_id": None,
            "policy_name": "memory-high",
            "target": "web-01",
            "action": "custom",
            "status": "suppressed: not auto-remediated",
        },
        {
            "action_id": None,
            "policy_name": "web-cpu-high",
            "target": "web-01",
            "action": "scale-up",
            "status": "would_trigger",
        },
    ]
    assert await table_counts(container) == before
    # Evaluating again gives the same answer: the first run left nothing open behind it.
    again = await client.post(
        f"{BASE}/evaluate", json={"metrics": {"cpu_percent": 95}, "target": "web-01"}
    )
    assert [a["status"] for a in again.json()["actions_triggered"]] == ["would_trigger"]


async def test_evaluate_shows_what_the_guards_would_do(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(client, cooldown_seconds=300)

    async def status() -> str:
        r = await client.post(
            f"{BASE}/evaluate", json={"metrics": {"cpu_percent": 95}, "target": "web-01"}
        )
        assert r.status_code == 200, r.text
        [triggered] = r.json()["actions_triggered"]
        assert triggered["action_id"] is None
        result: str = triggered["status"]
        return result

    assert await status() == "would_trigger"
    [action] = (await ingest(client, "cpu_percent", 95, "web-01"))["actions"]
    before = await table_counts(container)
    assert await status() == "suppressed: action already open"
    assert await table_counts(container) == before
    cancelled = await client.put(f"/api/v1/actions/{action['action_id']}/cancel")
    assert cancelled.status_code == 200
    assert await status() == "suppressed: cooldown"
    clock.advance(301)
    assert await status() == "would_trigger"


async def test_evaluate_ignores_disabled_policies(client: httpx.AsyncClient) -> None:
    await create(client, enabled=False)
    r = await client.post(
        f"{BASE}/evaluate", json={"metrics": {"cpu_percent": 95}, "target": "web-01"}
    )
    assert r.json()["violations"] == []
    assert r.json()["actions_triggered"] == []


BAD_EVALUATIONS: list[tuple[str, list[Any] | None]] = [
    ('{"metrics": {}, "target": "web-01"}', ["body", "metrics"]),
    ('{"metrics": {"cpu": "95"}, "target": "web-01"}', ["body", "metrics", "cpu"]),
    ('{"metrics": {"cpu": true}, "target": "web-01"}', ["body", "metrics", "cpu"]),
    ('{"metrics": {"cpu": 95}}', ["body", "target"]),
    ('{"metrics": {"cpu": 95}, "target": "  "}', ["body", "target"]),
    ('{"metrics": [95], "target": "web-01"}', ["body", "metrics"]),
    ('{"target": "web-01"}', ["body", "metrics"]),
    ('{"metrics": {"cpu": NaN}, "target": "web-01"}', None),
    ('{"metrics": {"cpu": Infinity}, "target": "web-01"}', None),
    ('{"metrics": {"": 1}, "target": "web-01"}', None),
    ('{"metrics": {"cpu": 1}, "target": "a\\u0000b"}', ["body", "target"]),
]


async def test_evaluate_refuses_bad_input(
    client: httpx.AsyncClient, container: Container, subtests: pytest.Subtests
) -> None:
    await create(client)
    before = await table_counts(container)
    for content, loc in BAD_EVALUATIONS:
        with subtests.test(content):
            r = await client.post(
                f"{BASE}/evaluate", content=content, headers={"content-type": "application/json"}
            )
            locs = error_locs(r)
            if loc is not None:
                assert loc in locs
    assert await table_counts(container) == before


# --- runner status ----------------------------------------------------------------------


async def test_runner_status(client: httpx.AsyncClient, container: Container) -> None:
    r = await client.get(f"{BASE}/runner/status")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True
    runner = body["runner"]
    assert runner["leader"] is False  # nobody has taken the lease yet
    assert runner["leader_name"] is None
    assert await container.runner.lead()
    runner = (await client.get(f"{BASE}/runner/status")).json()["runner"]
    assert runner["leader"] is True
    assert runner["leader_name"] == container.runner.name
    assert runner["enabled"] is True
    assert runner["running"] is False  # the test app does not start it
    assert runner["interval_seconds"] == 0.2
    assert runner["last_run_at"] is None
    assert runner["last_duration_ms"] is None


async def test_runner_status_of_a_running_runner(settings: Settings, clock: FakeClock) -> None:
    async with started_client(settings, clock=clock, run_runner=True) as (client, container):
        await wait_for_a_runner_pass(container)
        r = await client.get(f"{BASE}/runner/status")
    runner = r.json()["runner"]
    assert runner["running"] is True
    assert runner["leader"] is True
    assert runner["last_run_at"] == "2026-01-19T12:00:00Z"
    assert isinstance(runner["last_duration_ms"], float)
    assert runner["last_duration_ms"] >= 0


async def wait_for_a_runner_pass(container: Container) -> None:
    """Wait (at most ten seconds) until the runner has finished a pass."""

    async def ran() -> bool:
        return container.runner.last_run_at is not None

    await wait_for_async(ran, what="a runner pass", interval=0.01)


# --- audit and timestamps ---------------------------------------------------------------


async def test_every_policy_mutation_is_audited(
    client: httpx.AsyncClient, container: Container, policies_file: Path
) -> None:
    headers = {"x-request-id": "req-42"}
    await client.post(BASE, json=POLICY, headers=headers)
    await client.put(f"{BASE}/web-cpu-high", json={"severity": "critical"})
    await client.put(f"{BASE}/web-cpu-high/disable")
    await client.put(f"{BASE}/web-cpu-high/enable")
    await client.delete(f"{BASE}/web-cpu-high")
    write_policies(policies_file, FILE_POLICY)
    await client.post(f"{BASE}/reload")
    write_policies(policies_file, {**FILE_POLICY, "description": "edited"})
    await client.post(f"{BASE}/reload")
    # Refused requests leave no trace.
    await client.post(BASE, json=policy(severity="fatal"))
    await client.put(f"{BASE}/file-disk", json={"name": "x"})
    await client.delete(f"{BASE}/web-cpu-high")
    await client.post(f"{BASE}/evaluate", json={"metrics": {"disk_free": 1}, "target": "x"})

    rows = await audit_rows(container)
    assert [(r["actor"], r["kind"], r["subject"]) for r in rows] == [
        ("anonymous", "policy.created", "policy:web-cpu-high"),
        ("anonymous", "policy.updated", "policy:web-cpu-high"),
        ("anonymous", "policy.disabled", "policy:web-cpu-high"),
        ("anonymous", "policy.enabled", "policy:web-cpu-high"),
        ("anonymous", "policy.deleted", "policy:web-cpu-high"),
        ("anonymous", "policy.created", "policy:file-disk"),
        ("anonymous", "policy.reloaded", "policy:file-disk"),
    ]
    assert rows[0]["request_id"] == "req-42"
    assert rows[0]["before"] is None
    assert rows[0]["after"]["name"] == "web-cpu-high"
    assert rows[1]["before"]["severity"] == "warning"
    assert rows[1]["after"]["severity"] == "critical"
    assert rows[4]["after"] is None
    assert rows[6]["after"]["description"] == "edited"


async def test_response_timestamps_are_utc_with_an_offset(
    client: httpx.AsyncClient, policies_file: Path
) -> None:
    await create(client)
    write_policies(policies_file, FILE_POLICY)
    responses = [
        await client.get(BASE),
        await client.get(f"{BASE}/web-cpu-high"),
        await client.put(f"{BASE}/web-cpu-high", json={"severity": "info"}),
        await client.get(f"{BASE}/severity/info"),
        await client.post(
            f"{BASE}/evaluate", json={"metrics": {"cpu_percent": 99}, "target": "web-1"}
        ),
        await client.get(f"{BASE}/runner/status"),
    ]
    for r in responses:
        assert r.status_code == 200, r.text
    assert sum(assert_utc_timestamps(r.json()) for r in responses) >= 8
