"""The query client tells a bad query from a TSDB that does not answer, and refuses results
that are not instant vectors. Error shapes come from a stand-in answering as Prometheus
does; refused connections and timeouts from real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from vigil.local import free_port
from vigil.policy.prometheus import PrometheusClient, PrometheusUnavailable, QueryInvalid

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _answering(status: int, body: Any) -> PrometheusClient:
    def handler(request: httpx.Request) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content)

    return PrometheusClient(
        "http://prometheus.test", timeout=1, transport=httpx.MockTransport(handler)
    )


def _vector(*items: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": list(items)}}


async def test_an_instant_vector_becomes_labels_and_values() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json=_vector(
                {"metric": {"instance": "a:1"}, "value": [1.5, "0.93"]},
                {"metric": {"instance": "b:1"}, "value": [1.5, "NaN"]},
            ),
        )

    client = PrometheusClient("http://p.test/", timeout=3, transport=httpx.MockTransport(handler))
    assert await client.query("up == 0", NOW) == [
        ({"instance": "a:1"}, 0.93),
        ({"instance": "b:1"}, None),
    ]
    form = dict(httpx.QueryParams(seen[0].content.decode()))
    assert form == {"query": "up == 0", "time": f"{NOW.timestamp():.3f}", "timeout": "3s"}
    assert seen[0].url.path == "/api/v1/query"


@pytest.mark.parametrize("status", [400, 422])
async def test_a_refused_query_is_invalid_with_prometheus_s_error(status: int) -> None:
    body = {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected ")"'}
    with pytest.raises(QueryInvalid, match=r'bad_data.*unexpected "\)"'):
        await _answering(status, body).query("up)", NOW)


async def test_a_query_that_fails_on_today_s_data_is_unavailable_not_invalid() -> None:
    body = {
        "status": "error",
        "errorType": "execution",
        "error": "found duplicate series for the match group",
    }
    with pytest.raises(PrometheusUnavailable, match=r"could not run the query now.*duplicate"):
        await _answering(422, body).query("a * on(job) b", NOW)


@pytest.mark.parametrize("kind", ["scalar", "string", "matrix"])
async def test_a_result_that_is_not_a_vector_is_invalid_naming_it(kind: str) -> None:
    body = {"status": "success", "data": {"resultType": kind, "result": [1, "1"]}}
    with pytest.raises(QueryInvalid, match=f"evaluates to a {kind}, not an instant vector"):
        await _answering(200, body).query("1", NOW)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (503, {"status": "error", "errorType": "timeout", "error": "query timed out"}),
        (500, {"status": "error", "errorType": "internal", "error": "boom"}),
        (502, b"<html>Bad Gateway</html>"),
        (200, b"not json"),
        (200, {"status": "success"}),
    ],
)
async def test_no_usable_answer_is_unavailable(status: int, body: Any) -> None:
    with pytest.raises(PrometheusUnavailable):
        await _answering(status, body).query("up", NOW)


async def test_a_refused_connection_is_unavailable() -> None:
    client = PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(PrometheusUnavailable, match="unreachable"):
        await client.query("up", NOW)
    await client.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A server that accepts connections and never answers."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()


async def test_a_timeout_is_unavailable_within_the_setting(silent_server: str) -> None:
    client = PrometheusClient(silent_server, timeout=0.3)
    started = asyncio.get_running_loop().time()
    with pytest.raises(PrometheusUnavailable, match=r"did not answer within 0\.3s"):
        await client.query("up", NOW)
    assert asyncio.get_running_loop().time() - started < 2
    await client.close()


async def test_a_range_query_becomes_a_matrix() -> None:
    body = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [{"metric": {"job": "x"}, "values": [[10, "1"], [11.5, "2"]]}],
        },
    }
    [(labels, points)] = await _answering(200, body).query_range("up", NOW, NOW, 1.5)
    assert labels == {"job": "x"}
    assert [(ts.timestamp(), v) for ts, v in points] == [(10.0, 1.0), (11.5, 2.0)]
