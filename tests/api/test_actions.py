"""The actions API (docs/api.md "Actions"), on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.api.support import assert_utc_timestamps, audit_rows, table_counts
from vigil.actions.status import Status
from vigil.actions.store import transition
from vigil.clock import FakeClock
from vigil.container import Container
from vigil.observability.audit import Actor

BASE = "/api/v1/actions"

ACTION_FIELDS = {
    "id",
    "policy_name",
    "target",
    "action",
    "params",
    "status",
    "attempts",
    "details",
    "result",
    "error_message",
    "created_at",
    "started_at",
    "completed_at",
    "updated_at",
    "next_attempt_at",
    "verification",
    "tags",
}

POLICY = {
    "name": "web-cpu-high",
    "target": "web-*",
    "auto_remediate": True,
    "condition": {"type": "metric_exceeds", "metric": "cpu_percent", "threshold": 90},
    "action": "scale-up",
    "params": {"replicas": 2},
}


async def manual(
    client: httpx.AsyncClient, target: str = "web-01", action: str = "restart-service", **extra: Any
) -> int:
    r = await client.post(BASE, json={"target": target, "action": action, **extra})
    assert r.status_code == 201, r.text
    action_id: int = r.json()["action_id"]
    return action_id


async def move(container: Container, action_id: int, *statuses: Status) -> None:
    """Take an action through ``statuses`` as a worker would."""
    for status in statuses:
        async with container.database.write() as conn:
            await transition(
                conn,
                action_id=action_id,
                to=status,
                now=container.clock.now(),
                actor=Actor("worker-1"),
                reason=f"test: {status.value}",
            )


def ids(body: dict[str, Any]) -> list[int]:
    return [a["id"] for a in body["actions"]]


# --- manual actions ---------------------------------------------------------------------


async def test_manual_action_is_recorded_pending(client: httpx.AsyncClient) -> None:
    r = await client.post(
        BASE,
        json={
            "target": "web-01",
            "action": "restart-service",
            "params": {"graceful": True, "timeout": 30},
            "details": "restart after deploy",
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["ok"] is True
    assert body["status"] == "pending"
    assert isinstance(body["action_id"], int)
    assert "restart-service" in body["message"]
    assert "web-01" in body["message"]

    detail = await client.get(f"{BASE}/{body['action_id']}")
    assert detail.status_code == 200
    action = detail.json()
    assert set(action) >= ACTION_FIELDS
    assert {k: action[k] for k in ACTION_FIELDS} == {
        "id": body["action_id"],
        "policy_name": None,
        "target": "web-01",
        "action": "restart-service",
        "params": {"graceful": True, "timeout": 30},
        "status": "pending",
        "attempts": 0,
        "details": "restart after deploy",
        "result": None,
        "error_message": None,
        "created_at": "2026-01-19T12:00:00Z",
        "started_at": None,
        "completed_at": None,
        "updated_at": "2026-01-19T12:00:00Z",
        "next_attempt_at": None,
        "verification": None,
        "tags": {},
    }


async def test_manual_action_strings_are_trimmed(client: httpx.AsyncClient) -> None:
    action_id = await manual(client, target="  web-01 ", action=" restart ")
    action = (await client.get(f"{BASE}/{action_id}")).json()
    assert action["target"] == "web-01"
    assert action["action"] == "restart"
    assert action["params"] == {}
    assert action["details"] is None


async def test_manual_action_unknown_fields_are_refused(
    client: httpx.AsyncClient, container: Container
) -> None:
    before = await table_counts(container)
    r = await client.post(BASE, json={"target": "web-01", "action": "restart", "param": {}})
    assert r.status_code == 422
    assert r.json()["detail"] == [
        {
            "loc": ["body", "param"],
            "msg": "unknown field 'param' (did you mean 'params'?)",
            "type": "extra_forbidden",
        }
    ]
    assert await table_counts(container) == before


async def test_one_open_manual_action_per_action_and_target(
    client: httpx.AsyncClient, container: Container
) -> None:
    first = await manual(client)
    before = await table_counts(container)
    r = await client.post(BASE, json={"target": "web-01", "action": "restart-service"})
    assert r.status_code == 409
    assert "already open" in r.json()["detail"]
    assert await table_counts(container) == before
    # Another target or another action is a different pair.
    await manual(client, target="web-02")
    await manual(client, action="scale-up")
    listing = (await client.get(BASE)).json()
    assert listing["total"] == 3
    assert first in ids(listing)


async def test_concurrent_manual_actions_for_one_pair_give_one_action(
    client: httpx.AsyncClient, container: Container
) -> None:
    body = {"target": "web-01", "action": "restart-service"}
    responses = await asyncio.gather(*(client.post(BASE, json=body) for _ in range(5)))
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409, 409]
    [winner] = [r.json()["action_id"] for r in responses if r.status_code == 201]
    assert ids((await client.get(BASE)).json()) == [winner]
    assert [r["kind"] for r in await audit_rows(container)] == ["action.created"]


async def test_manual_actions_ignore_policy_actions_on_the_same_target(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post("/api/v1/policies", json=POLICY)).status_code == 201
    r = await client.post(
        "/api/v1/ingest", json={"name": "cpu_percent", "value": 99, "target": "web-01"}
    )
    assert [a["action"] for a in r.json()["actions"]] == ["scale-up"]
    await manual(client, target="web-01", action="scale-up")


async def test_after_cancel_a_new_manual_action_is_allowed(client: httpx.AsyncClient) -> None:
    first = await manual(client)
    assert (await client.put(f"{BASE}/{first}/cancel")).status_code == 200
    second = await manual(client)
    assert second != first
    assert (await client.get(f"{BASE}/{second}")).json()["status"] == "pending"


async def test_after_an_action_ends_a_new_manual_one_needs_no_cooldown(
    client: httpx.AsyncClient, container: Container
) -> None:
    first = await manual(client)
    await move(container, first, Status.RUNNING, Status.COMPLETED)
    second = await manual(client)
    assert second != first
    # While one is running, it is still open.
    await move(container, second, Status.RUNNING)
    r = await client.post(BASE, json={"target": "web-01", "action": "restart-service"})
    assert r.status_code == 409


INVALID_MANUAL: list[tuple[str, dict[str, Any], list[Any]]] = [
    ("no target", {"action": "restart"}, ["body", "target"]),
    ("empty target", {"target": "", "action": "restart"}, ["body", "target"]),
    ("blank target", {"target": "   ", "action": "restart"}, ["body", "target"]),
    ("long target", {"target": "x" * 256, "action": "restart"}, ["body", "target"]),
    ("NUL in target", {"target": "a\u0000b", "action": "restart"}, ["body", "target"]),
    ("target not a string", {"target": 7, "action": "restart"}, ["body", "target"]),
    ("no action", {"target": "web-01"}, ["body", "action"]),
    ("action with capitals", {"target": "web-01", "action": "Restart"}, ["body", "action"]),
    ("action with a space", {"target": "web-01", "action": "re start"}, ["body", "action"]),
    ("action with a dot", {"target": "web-01", "action": "re.start"}, ["body", "action"]),
    ("params a list", {"target": "web-01", "action": "restart", "params": [1]}, ["body", "params"]),
    (
        "params a string",
        {"target": "web-01", "action": "restart", "params": "x"},
        ["body", "params"],
    ),
    (
        "long details",
        {"target": "web-01", "action": "restart", "details": "d" * 5000},
        ["body", "details"],
    ),
    (
        "tags a list",
        {"target": "web-01", "action": "restart", "tags": ["a"]},
        ["body", "tags"],
    ),
    (
        "a tag value not a string",
        {"target": "web-01", "action": "restart", "tags": {"n": 1}},
        ["body", "tags", "n"],
    ),
    (
        "a newline in a tag",
        {"target": "web-01", "action": "restart", "tags": {"service": "a\nb"}},
        ["body", "tags", "service"],
    ),
    (
        "NUL in params",
        {"target": "web-01", "action": "restart", "params": {"k": "a\u0000"}},
        ["body", "params"],
    ),
]


async def test_invalid_manual_action_is_a_422_naming_the_field(
    client: httpx.AsyncClient, container: Container, subtests: pytest.Subtests
) -> None:
    before = await table_counts(container)
    for name, body, loc in INVALID_MANUAL:
        with subtests.test(name):
            r = await client.post(BASE, json=body)
            assert r.status_code == 422, r.text
            assert loc in [e["loc"] for e in r.json()["detail"]]
    for text in (
        '{"target": "web-01", "action": "restart", "params": {"n": NaN}}',
        '{"target": "web-01", "action": "restart", "params": {"n": -Infinity}}',
        '{"target": "web-01", "action": "restart"',
        "[]",
    ):
        with subtests.test(text):
            r = await client.post(BASE, content=text, headers={"content-type": "application/json"})
            assert r.status_code == 422, r.text
    assert await table_counts(container) == before


# --- list, detail, by status --------------------------------------------------------------


async def make_actions(client: httpx.AsyncClient, clock: FakeClock, count: int) -> list[int]:
    """``count`` manual actions on targets t-0, t-1, ..., one minute apart."""
    created = []
    for i in range(count):
        created.append(await manual(client, target=f"t-{i}"))
        clock.advance(60)
    return created


async def test_list_newest_first_with_pagination(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    created = await make_actions(client, clock, 5)
    newest_first = list(reversed(created))

    body = (await client.get(BASE)).json()
    assert {k: body[k] for k in ("count", "total", "page", "page_size")} == {
        "count": 5,
        "total": 5,
        "page": 1,
        "page_size": 50,
    }
    assert ids(body) == newest_first
    assert all(set(a) >= ACTION_FIELDS for a in body["actions"])

    pages = [(await client.get(BASE, params={"page": p, "limit": 2})).json() for p in (1, 2, 3, 4)]
    assert [ids(p) for p in pages] == [newest_first[0:2], newest_first[2:4], newest_first[4:], []]
    assert [p["count"] for p in pages] == [2, 2, 1, 0]
    assert {p["total"] for p in pages} == {5}
    assert [p["page"] for p in pages] == [1, 2, 3, 4]
    assert {p["page_size"] for p in pages} == {2}
    assert (await client.get(BASE, params={"limit": 500})).json()["count"] == 5
    assert (await client.get(BASE, params={"limit": 1})).json()["count"] == 1


async def test_list_of_nothing(client: httpx.AsyncClient) -> None:
    assert (await client.get(BASE)).json() == {
        "count": 0,
        "total": 0,
        "page": 1,
        "page_size": 50,
        "actions": [],
    }


BAD_QUERIES: list[tuple[dict[str, Any], list[Any]]] = [
    ({"page": 0}, ["query", "page"]),
    ({"page": -1}, ["query", "page"]),
    ({"page": "two"}, ["query", "page"]),
    ({"limit": 0}, ["query", "limit"]),
    ({"limit": 501}, ["query", "limit"]),
    ({"limit": 1.5}, ["query", "limit"]),
    ({"status": "done"}, ["query", "status"]),
    ({"start_time": "yesterday"}, ["query", "start_time"]),
    ({"end_time": "2026-13-01T00:00:00Z"}, ["query", "end_time"]),
    # Found by the fuzz test: numbers were taken as Unix seconds (2026 meant 1970) and a bare
    # date as midnight, while the contract and /openapi.json say ISO 8601 date-times.
    ({"start_time": "0.5"}, ["query", "start_time"]),
    ({"start_time": "2026"}, ["query", "start_time"]),
    ({"end_time": "1768824000"}, ["query", "end_time"]),
    ({"end_time": "2026-01-19"}, ["query", "end_time"]),
    # No UTC form (before year 1 once converted): a 422, not a 500.
    ({"start_time": "0001-01-01T00:00:00+05:00"}, ["query", "start_time"]),
    ({"end_time": "9999-12-31T23:59:59-05:00"}, ["query", "end_time"]),
    ({"target": "a\u0000b"}, ["query", "target"]),
    ({"policy": "a\u0000b"}, ["query", "policy"]),
    ({"target": "t" * 256}, ["query", "target"]),
]


async def test_list_refuses_bad_query_parameters(
    client: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    await manual(client)
    for query, loc in BAD_QUERIES:
        with subtests.test(query=query):
            r = await client.get(BASE, params=query)
            assert r.status_code == 422, r.text
            assert loc in [e["loc"] for e in r.json()["detail"]]


async def test_list_filters(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    assert (await client.post("/api/v1/policies", json=POLICY)).status_code == 201
    # 12:00 a manual action on web-01, 12:01 a policy action on web-01,
    # 12:02 a manual action on web-02 (then cancelled), 12:03 a policy action on web-02.
    m1 = await manual(client, target="web-01")
    clock.advance(60)
    r = await client.post(
        "/api/v1/ingest", json={"name": "cpu_percent", "value": 99, "target": "web-01"}
    )
    [p1] = [a["action_id"] for a in r.json()["actions"]]
    clock.advance(60)
    m2 = await manual(client, target="web-02")
    await client.put(f"{BASE}/{m2}/cancel")
    clock.advance(60)
    r = await client.post(
        "/api/v1/ingest", json={"name": "cpu_percent", "value": 99, "target": "web-02"}
    )
    [p2] = [a["action_id"] for a in r.json()["actions"]]

    async def query(**params: Any) -> list[int]:
        r = await client.get(BASE, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["count"] == body["total"] == len(body["actions"])
        return ids(body)

    assert await query() == [p2, m2, p1, m1]
    assert await query(target="web-01") == [p1, m1]
    assert await query(target="web-0") == []
    assert await query(policy="web-cpu-high") == [p2, p1]
    assert await query(policy="nope") == []
    assert await query(status="cancelled") == [m2]
    assert await query(status="pending") == [p2, p1, m1]
    assert await query(status="completed") == []
    assert await query(start_time="2026-01-19T12:01:00Z") == [p2, m2, p1]
    assert await query(end_time="2026-01-19T12:01:00Z") == [p1, m1]
    assert await query(start_time="2026-01-19T12:01:00Z", end_time="2026-01-19T12:02:00Z") == [
        m2,
        p1,
    ]
    # The same instants written with another offset, and naive (taken as UTC).
    assert await query(start_time="2026-01-19T14:01:00+02:00") == [p2, m2, p1]
    assert await query(end_time="2026-01-19T07:01:00-05:00") == [p1, m1]
    assert await query(start_time="2026-01-19T12:02:00") == [p2, m2]
    assert await query(start_time="2026-01-19T12:05:00Z") == []
    assert await query(status="pending", target="web-02", policy="web-cpu-high") == [p2]
    assert await query(status="pending", target="web-02", start_time="2026-01-19T12:03:30Z") == []


async def test_an_unknown_action_is_404_and_nothing_changes(
    client: httpx.AsyncClient, container: Container, subtests: pytest.Subtests
) -> None:
    await manual(client)
    before = await table_counts(container)
    for method, path in [
        ("GET", f"{BASE}/12345"),
        ("GET", f"{BASE}/12345/history"),
        ("PUT", f"{BASE}/12345/cancel"),
    ]:
        with subtests.test(method=method, path=path):
            r = await client.request(method, path)
            assert r.status_code == 404
            assert r.json() == {"detail": "action 12345 not found"}
    assert await table_counts(container) == before


async def test_an_action_id_that_cannot_exist_is_a_422(
    client: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    for bad in ("0", "-1", "abc", "1.5", str(2**63)):
        for method, path in (
            ("GET", f"{BASE}/{bad}"),
            ("GET", f"{BASE}/{bad}/history"),
            ("PUT", f"{BASE}/{bad}/cancel"),
        ):
            with subtests.test(method=method, path=path):
                r = await client.request(method, path)
                assert r.status_code == 422, r.text
                assert r.json()["detail"][0]["loc"] == ["path", "action_id"]


async def test_by_status(client: httpx.AsyncClient, container: Container, clock: FakeClock) -> None:
    a, b, c, d = await make_actions(client, clock, 4)
    await client.put(f"{BASE}/{b}/cancel")
    await move(container, c, Status.RUNNING)
    await move(container, d, Status.RUNNING, Status.FAILED)

    async def by(status: str, **params: Any) -> dict[str, Any]:
        r = await client.get(f"{BASE}/status/{status}", params=params)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    assert ids(await by("pending")) == [a]
    assert ids(await by("cancelled")) == [b]
    assert ids(await by("running")) == [c]
    assert ids(await by("failed")) == [d]
    assert ids(await by("completed")) == []
    body = await by("pending", page=2, limit=1)
    assert {k: body[k] for k in ("count", "total", "page", "page_size")} == {
        "count": 0,
        "total": 1,
        "page": 2,
        "page_size": 1,
    }
    assert all(x["status"] == "running" for x in (await by("running"))["actions"])


async def test_by_unknown_status_is_a_422(client: httpx.AsyncClient) -> None:
    for status in ("done", "PENDING", "open"):
        r = await client.get(f"{BASE}/status/{status}")
        assert r.status_code == 422, status
        assert r.json()["detail"][0]["loc"] == ["path", "status"]
    r = await client.get(f"{BASE}/status/pending", params={"limit": 0})
    assert r.status_code == 422


# --- history and cancel -------------------------------------------------------------------


async def test_history_oldest_first(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    action_id = await manual(client)
    clock.advance(5)
    async with container.database.write() as conn:
        await transition(
            conn,
            action_id=action_id,
            to=Status.RUNNING,
            now=clock.now(),
            actor=Actor("worker-1"),
            reason="dispatched",
            attempts=1,
        )
    clock.advance(5)
    r = await client.put(f"{BASE}/{action_id}/cancel", json={"reason": "  wrong host  "})
    assert r.status_code == 200, r.text
    history = await client.get(f"{BASE}/{action_id}/history")
    assert history.status_code == 200
    assert history.json() == [
        {
            "from": None,
            "to": "pending",
            "at": "2026-01-19T12:00:00Z",
            "reason": "manual action requested by anonymous",
            "attempt": 0,
            "actor": "anonymous",
        },
        {
            "from": "pending",
            "to": "running",
            "at": "2026-01-19T12:00:05Z",
            "reason": "dispatched",
            "attempt": 1,
            "actor": "worker-1",
        },
        {
            "from": "running",
            "to": "cancelled",
            "at": "2026-01-19T12:00:10Z",
            "reason": "wrong host",
            "attempt": 1,
            "actor": "anonymous",
        },
    ]


async def test_history_of_a_policy_action(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/v1/policies", json=POLICY)).status_code == 201
    r = await client.post(
        "/api/v1/ingest", json={"name": "cpu_percent", "value": 99, "target": "web-01"}
    )
    [action] = r.json()["actions"]
    history = (await client.get(f"{BASE}/{action['action_id']}/history")).json()
    assert [(h["from"], h["to"], h["actor"], h["attempt"]) for h in history] == [
        (None, "pending", "system", 0)
    ]
    assert "web-cpu-high" in history[0]["reason"]
    detail = (await client.get(f"{BASE}/{action['action_id']}")).json()
    assert detail["policy_name"] == "web-cpu-high"
    assert detail["params"] == {"replicas": 2}
    assert detail["tags"] == {}


async def test_a_policy_action_keeps_the_tags_of_the_sample_that_fired_it(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post("/api/v1/policies", json=POLICY)).status_code == 201
    tags = {"service": "nginx", "service.name": "checkout"}
    r = await client.post(
        "/api/v1/ingest",
        json={"name": "cpu_percent", "value": 99, "target": "web-01", "tags": tags},
    )
    [action] = r.json()["actions"]
    detail = (await client.get(f"{BASE}/{action['action_id']}")).json()
    assert detail["tags"] == tags
    listed = (await client.get(BASE, params={"policy": "web-cpu-high"})).json()["actions"]
    assert [a["tags"] for a in listed] == [tags]


async def test_a_manual_action_may_carry_tags(client: httpx.AsyncClient) -> None:
    tags = {"service": "nginx", "k8s.namespace": "shop"}
    r = await client.post(BASE, json={"target": "web-01", "action": "restart", "tags": tags})
    assert r.status_code == 201, r.text
    assert r.json()["action"]["tags"] == tags
    detail = (await client.get(f"{BASE}/{r.json()['action_id']}")).json()
    assert detail["tags"] == tags


async def test_cancel_a_pending_action(client: httpx.AsyncClient, clock: FakeClock) -> None:
    action_id = await manual(client)
    clock.advance(30)
    r = await client.put(f"{BASE}/{action_id}/cancel")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == action_id
    assert body["status"] == "cancelled"
    assert body["completed_at"] == "2026-01-19T12:00:30Z"
    assert body["updated_at"] == "2026-01-19T12:00:30Z"
    assert (await client.get(f"{BASE}/{action_id}")).json() == body
    [_, last] = (await client.get(f"{BASE}/{action_id}/history")).json()
    assert last["reason"] == "cancelled by anonymous"


async def test_cancel_accepts_an_empty_or_reasonless_body(client: httpx.AsyncClient) -> None:
    for body in ({}, {"reason": None}, {"reason": "   "}):
        action_id = await manual(client)
        r = await client.put(f"{BASE}/{action_id}/cancel", json=body)
        assert r.status_code == 200, (body, r.text)
        history = (await client.get(f"{BASE}/{action_id}/history")).json()
        assert history[-1]["reason"] == "cancelled by anonymous"
    r = await client.put(f"{BASE}/{action_id}/cancel", json={"reson": "typo"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["msg"] == "unknown field 'reson' (did you mean 'reason'?)"


async def test_cancel_a_running_action(client: httpx.AsyncClient, container: Container) -> None:
    action_id = await manual(client)
    await move(container, action_id, Status.RUNNING)
    r = await client.put(f"{BASE}/{action_id}/cancel", json={"reason": "stuck"})
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"


async def test_cancel_of_an_ended_action_is_a_conflict(
    client: httpx.AsyncClient, container: Container, subtests: pytest.Subtests
) -> None:
    for path in (
        [Status.CANCELLED],
        [Status.RUNNING, Status.COMPLETED],
        [Status.RUNNING, Status.FAILED],
        [Status.FAILED],
    ):
        with subtests.test(path="-".join(s.value for s in path)):
            action_id = await manual(client, target=f"ended-{len(path)}-{path[-1].value}")
            await move(container, action_id, *path)
            before_detail = (await client.get(f"{BASE}/{action_id}")).json()
            before = await table_counts(container)
            r = await client.put(f"{BASE}/{action_id}/cancel", json={"reason": "too late"})
            assert r.status_code == 409
            assert path[-1].value in r.json()["detail"]
            assert (await client.get(f"{BASE}/{action_id}")).json() == before_detail
            assert await table_counts(container) == before


async def test_cancel_refuses_a_bad_body(client: httpx.AsyncClient) -> None:
    action_id = await manual(client)
    for body in ({"reason": 5}, {"reason": "r" * 5000}, {"reason": "a\u0000b"}, [1]):
        r = await client.put(f"{BASE}/{action_id}/cancel", json=body)
        assert r.status_code == 422, (body, r.text)
    assert (await client.get(f"{BASE}/{action_id}")).json()["status"] == "pending"


# --- audit and timestamps -----------------------------------------------------------------


async def test_action_mutations_are_audited(
    client: httpx.AsyncClient, container: Container
) -> None:
    action_id = await manual(client, params={"n": 1})
    await client.put(
        f"{BASE}/{action_id}/cancel", json={"reason": "oops"}, headers={"x-request-id": "r-9"}
    )
    # Refused requests leave no trace.
    await client.put(f"{BASE}/{action_id}/cancel")
    await client.post(BASE, json={"target": "", "action": "restart"})
    second = await manual(client)
    await client.post(BASE, json={"target": "web-01", "action": "restart-service"})

    rows = await audit_rows(container)
    assert [(r["actor"], r["kind"], r["subject"]) for r in rows] == [
        ("anonymous", "action.created", f"action:{action_id}"),
        ("anonymous", "action.cancelled", f"action:{action_id}"),
        ("anonymous", "action.created", f"action:{second}"),
    ]
    assert rows[0]["after"]["params"] == {"n": 1}
    assert rows[0]["after"]["status"] == "pending"
    assert rows[1]["before"] == {"status": "pending"}
    assert rows[1]["after"] == {"status": "cancelled", "reason": "oops"}
    assert rows[1]["request_id"] == "r-9"


async def test_response_timestamps_are_utc_with_an_offset(
    client: httpx.AsyncClient, container: Container
) -> None:
    created = await client.post(BASE, json={"target": "web-01", "action": "restart"})
    action_id = created.json()["action_id"]
    await move(container, action_id, Status.RUNNING)
    responses = [
        created,
        await client.get(BASE),
        await client.get(f"{BASE}/{action_id}"),
        await client.get(f"{BASE}/status/running"),
        await client.put(f"{BASE}/{action_id}/cancel"),
        await client.get(f"{BASE}/{action_id}/history"),
    ]
    for r in responses:
        assert r.status_code in (200, 201), r.text
    assert sum(assert_utc_timestamps(r.json()) for r in responses) >= 12
