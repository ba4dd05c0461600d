"""Idempotency keys on the ingest routes, on SQLite and on PostgreSQL: a retry of a request
that was stored is answered as the first time and stores nothing, on any replica; the same
key for another request is refused; keys expire and are pruned."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager

from tests.api.test_ingest import (
    BATCH,
    CPU_HOT,
    HOT_SAMPLE,
    INGEST,
    SINGLE_ROUTES,
    count,
    create_policy,
    written,
)
from tests.helpers import connection_lost
from vigil.api.app import create_app
from vigil.clock import FakeClock
from vigil.container import Container, build_container
from vigil.db.tables import actions, ingest_keys, metrics
from vigil.http.errors import RETRY_AFTER_SECONDS
from vigil.settings import Settings

TTL = 3600.0


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"idempotency_ttl_seconds": TTL}


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


@pytest.mark.parametrize("path", SINGLE_ROUTES)
async def test_a_retried_single_metric_is_stored_once_and_answered_the_same(
    client: httpx.AsyncClient, container: Container, path: str
) -> None:
    await create_policy(client, CPU_HOT)
    first = await client.post(path, json=HOT_SAMPLE, headers=keyed("k-1"))
    assert first.status_code == 201, first.text
    assert len(first.json()["actions"]) == 1
    stored = await written(container)
    again = await client.post(path, json=HOT_SAMPLE, headers=keyed("k-1"))
    assert again.status_code == 201
    assert again.headers["content-type"] == "application/json"
    assert again.content == first.content
    assert await written(container) == stored
    # Without a key the same body is a new sample, as before.
    assert (await client.post(path, json=HOT_SAMPLE)).status_code == 201
    assert await count(container, metrics) == 2


async def test_a_retried_batch_is_stored_once(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create_policy(client, CPU_HOT)
    body = {"metrics": [HOT_SAMPLE, {"name": "mem", "value": 1.0, "target": "web-02"}]}
    first = await client.post(BATCH, json=body, headers=keyed("batch-1"))
    assert first.status_code == 201, first.text
    assert first.json()["stored"] == 2
    again = await client.post(BATCH, json=body, headers=keyed("batch-1"))
    assert (again.status_code, again.content) == (201, first.content)
    assert await count(container, metrics) == 2
    assert await count(container, actions) == 1


async def test_a_body_the_slow_path_parses_is_remembered_too(
    client: httpx.AsyncClient, container: Container
) -> None:
    # A value beyond 2**53 and unknown fields take the slow path (orjson + pydantic).
    body = orjson.dumps({"name": "big", "value": 2**60, "target": "a", "extra": 1})
    headers = {**keyed("slow-1"), "content-type": "application/json"}
    first = await client.post(INGEST, content=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post(INGEST, content=body, headers=headers)
    assert again.content == first.content
    assert await count(container, metrics) == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (INGEST, {**HOT_SAMPLE, "value": 96}),  # another body
        (BATCH, {"metrics": [HOT_SAMPLE]}),  # another route
    ],
)
async def test_the_same_key_for_another_request_is_422_and_stores_nothing(
    client: httpx.AsyncClient, container: Container, path: str, body: dict[str, Any]
) -> None:
    assert (await client.post(INGEST, json=HOT_SAMPLE, headers=keyed("k-2"))).status_code == 201
    stored = await written(container)
    r = await client.post(path, json=body, headers=keyed("k-2"))
    assert r.status_code == 422
    assert r.json() == {
        "detail": "Idempotency-Key 'k-2' was already used for another request (another body "
        "or route); a new request needs a new key"
    }
    assert await written(container) == stored


@pytest.mark.parametrize("key", [b"", b"a b", "é".encode(), b"x" * 256, b"tab\there"])
async def test_a_malformed_key_is_422_and_stores_nothing(
    client: httpx.AsyncClient, container: Container, key: bytes
) -> None:
    r = await client.post(
        INGEST,
        content=orjson.dumps(HOT_SAMPLE),
        headers=[(b"content-type", b"application/json"), (b"idempotency-key", key)],
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert await count(container, metrics) == 0


async def test_an_invalid_body_is_not_remembered(
    client: httpx.AsyncClient, container: Container
) -> None:
    r = await client.post(INGEST, json={"name": "x"}, headers=keyed("k-3"))
    assert r.status_code == 422
    r = await client.post(INGEST, json=HOT_SAMPLE, headers=keyed("k-3"))
    assert r.status_code == 201
    assert await count(container, ingest_keys) == 1


async def test_concurrent_requests_with_one_key_store_once(
    client: httpx.AsyncClient, container: Container
) -> None:
    answers = await asyncio.gather(
        *(client.post(INGEST, json=HOT_SAMPLE, headers=keyed("k-4")) for _ in range(5)),
        *(
            client.post(INGEST, json={**HOT_SAMPLE, "value": i}, headers=keyed(f"o-{i}"))
            for i in range(5)
        ),
    )
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    assert len({a.content for a in answers[:5]}) == 1
    assert await count(container, metrics) == 6


@pytest.fixture
async def replica(settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """A second Vigil app with its own components, on the same database as ``client``'s."""
    application = create_app(settings, build_container(settings, clock=clock), run_runner=False)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica.test") as c:
            yield c


async def test_a_retry_sent_to_another_replica_is_answered_from_the_first(
    client: httpx.AsyncClient, replica: httpx.AsyncClient, container: Container
) -> None:
    first = await client.post(INGEST, json=HOT_SAMPLE, headers=keyed("k-5"))
    again = await replica.post(INGEST, json=HOT_SAMPLE, headers=keyed("k-5"))
    assert (again.status_code, again.content) == (201, first.content)
    assert await count(container, metrics) == 1


async def test_a_key_is_forgotten_after_its_time_and_pruned(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    assert (await client.post(INGEST, json=HOT_SAMPLE, headers=keyed("k-6"))).status_code == 201
    clock.advance(TTL + 1)
    # Expired: the same key stores again (and is remembered afresh)...
    assert (await client.post(INGEST, json=HOT_SAMPLE, headers=keyed("k-6"))).status_code == 201
    assert await count(container, metrics) == 2
    assert (await client.post(INGEST, json=HOT_SAMPLE, headers=keyed("k-7"))).status_code == 201
    clock.advance(TTL + 1)
    # ... and the runner deletes keys older than their time.
    await container.runner.run_once()
    assert await count(container, ingest_keys) == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("path", [INGEST, BATCH])
async def test_a_request_whose_answer_was_lost_is_stored_once_on_retry(
    client: httpx.AsyncClient, container: Container, path: str
) -> None:
    """The COMMIT reached the database but its answer did not come back: the client gets
    503 and cannot know whether the request was stored. Retried with its key, it is not
    stored again, and gets the answer the stored request would have got."""
    await create_policy(client, CPU_HOT)
    body = HOT_SAMPLE if path == INGEST else {"metrics": [HOT_SAMPLE]}
    engine = container.database.engine
    with connection_lost(engine, after="INSERT INTO metrics ", landed=True) as lost:
        r = await client.post(path, json=body, headers=keyed("k-8"))
    assert lost
    assert r.status_code == 503
    assert r.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert await count(container, metrics) == 1, "the first request was stored"
    again = await client.post(path, json=body, headers=keyed("k-8"))
    assert again.status_code == 201, again.text
    assert await count(container, metrics) == 1
    assert await count(container, actions) == 1
    assert len(again.json()["actions"]) == 1
