"""promql policies through the API and the runner, on SQLite and PostgreSQL, against a
stand-in query API: ``for`` then firing, a series gone resolving, a TSDB away resolving
nothing and holding verification, queries checked when stored, backtests over ranges."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import yaml
from typer.testing import CliRunner

from tests.api.support import table_counts
from tests.api.test_episodes import complete, decisions, target_state
from tests.prometheus_standin import StandIn, running_standin
from vigil.cli import app
from vigil.cli.files import check_policies_file
from vigil.clock import FakeClock
from vigil.container import Container
from vigil.settings import Settings

QUERY = 'up{job="node"} == 0'
DOWN = [({"__name__": "up", "instance": "web-1:9100", "job": "node"}, 0.0)]
POLICY: dict[str, Any] = {
    "name": "node-down",
    "auto_remediate": True,
    "condition": {"type": "promql", "query": QUERY, "for": "30s"},
    "action": "scale-up",
    "cooldown_seconds": 0,
}


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with running_standin() as running:
        yield running


@pytest.fixture
def settings_overrides(standin: StandIn) -> dict[str, Any]:
    return {"prometheus_url": standin.url}


async def _create(client: httpx.AsyncClient, **fields: Any) -> None:
    response = await client.post("/api/v1/policies", json={**POLICY, **fields})
    assert response.status_code == 201, response.text


async def _phase(client: httpx.AsyncClient) -> str | None:
    found = await target_state(client, "web-1", "node-down")
    return None if found is None else str(found["state"])


async def _actions(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    body = (await client.get("/api/v1/actions", params={"policy": "node-down"})).json()
    items: list[dict[str, Any]] = body["actions"]
    return items


async def test_a_series_returned_for_its_for_fires_and_resolves_when_it_goes(
    client: httpx.AsyncClient, container: Container, clock: FakeClock, standin: StandIn
) -> None:
    await _create(client)
    standin.series[QUERY] = DOWN
    await container.runner.run_once()
    assert await _phase(client) == "pending"
    assert await _actions(client) == []
    clock.advance(30)
    await container.runner.run_once()
    assert await _phase(client) == "firing"
    [action] = await _actions(client)
    assert (action["target"], action["action"]) == ("web-1", "scale-up")
    assert action["tags"] == {"instance": "web-1:9100", "job": "node"}  # for {tags.NAME}
    [decision] = await decisions(client, policy="node-down")
    assert decision["outcome"] == "acted"
    standin.series[QUERY] = []
    await container.runner.run_once()
    assert await _phase(client) == "resolved"
    asked = [a for a in standin.asked if a["path"] == "/api/v1/query" and "time" in a]
    assert float(asked[-1]["time"]) == pytest.approx(clock.now().timestamp(), abs=0.001)


async def test_a_series_gone_before_its_for_goes_back_to_ok(
    client: httpx.AsyncClient, container: Container, clock: FakeClock, standin: StandIn
) -> None:
    await _create(client)
    standin.series[QUERY] = DOWN
    await container.runner.run_once()
    standin.series[QUERY] = []
    clock.advance(20)
    await container.runner.run_once()
    standin.series[QUERY] = DOWN
    clock.advance(20)
    await container.runner.run_once()
    assert await _phase(client) == "pending", "the series must be returned continuously"
    assert await _actions(client) == []


async def test_while_the_tsdb_is_away_nothing_resolves_and_verification_waits(
    client: httpx.AsyncClient, container: Container, clock: FakeClock, standin: StandIn
) -> None:
    await _create(
        client, condition={"type": "promql", "query": QUERY}, verify={"within_seconds": 60}
    )
    standin.series[QUERY] = DOWN
    await container.runner.run_once()
    [action] = await _actions(client)
    await complete(container, action["id"])
    standin.down = True
    standin.series[QUERY] = []
    clock.advance(300)  # well past the verification window
    await container.runner.run_once()
    assert await _phase(client) == "firing", "a TSDB away resolves nothing"
    detail = (await client.get(f"/api/v1/actions/{action['id']}")).json()
    assert detail["verification"] is None, "verification waits for an answer"
    status = (await client.get("/api/v1/policies/runner/status")).json()["runner"]
    assert status["promql"]["unavailable"] == ["node-down"]
    assert "503" in status["promql"]["last_error"]
    metrics = (await client.get("/metrics")).text
    assert 'vigil_promql_queries_total{result="unavailable"} 1.0' in metrics
    assert "vigil_runner_promql_unavailable 1.0" in metrics

    standin.down = False  # back, and the series is gone: the fix worked
    clock.advance(10)
    await container.runner.run_once()
    assert await _phase(client) == "resolved"
    detail = (await client.get(f"/api/v1/actions/{action['id']}")).json()
    assert detail["verification"]["result"] == "verified", "the outage does not count"
    status = (await client.get("/api/v1/policies/runner/status")).json()["runner"]
    assert status["promql"]["unavailable"] == []


async def test_a_refused_query_in_one_pass_records_nothing_of_that_policy(
    client: httpx.AsyncClient, container: Container, standin: StandIn
) -> None:
    clear = "up == 1"
    await _create(
        client,
        condition={"type": "promql", "query": QUERY},
        clear={"type": "promql", "query": clear},
    )
    standin.series[QUERY] = DOWN
    await container.runner.run_once()
    assert await _phase(client) == "firing"
    standin.series[clear] = [({"instance": "web-1:9100"}, 1.0)]
    standin.refused[clear] = "parse error"  # as if the clear query alone failed
    await container.runner.run_once()
    assert await _phase(client) == "firing", "no decision from a partial answer"
    assert 'result="error"' in (await client.get("/metrics")).text
    del standin.refused[clear]
    await container.runner.run_once()
    assert await _phase(client) == "resolved"


async def test_series_without_a_target_label_are_skipped_and_reported(
    client: httpx.AsyncClient, container: Container, standin: StandIn
) -> None:
    await _create(client, condition={"type": "promql", "query": QUERY})
    standin.series[QUERY] = [({"__name__": "up"}, 0.0), *DOWN]
    await container.runner.run_once()
    assert await _phase(client) == "firing"
    status = (await client.get("/api/v1/policies/runner/status")).json()["runner"]
    assert status["promql"]["unlabelled"] == {"node-down": 1}


async def test_a_bad_query_is_refused_with_prometheus_s_error_and_nothing_is_stored(
    client: httpx.AsyncClient, container: Container, standin: StandIn
) -> None:
    standin.refused["up =="] = "1:5: parse error: unexpected end of input"
    before = await table_counts(container)
    bad = {**POLICY, "condition": {"type": "promql", "query": "up =="}}
    response = await client.post("/api/v1/policies", json=bad)
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "condition", "query"]
    assert "unexpected end of input" in problem["msg"]
    assert await table_counts(container) == before

    await _create(client)
    response = await client.put("/api/v1/policies/node-down", json={"condition": bad["condition"]})
    assert response.status_code == 422, response.text
    standin.down = True
    response = await client.put("/api/v1/policies/node-down", json={"enabled": False})
    assert response.status_code == 200, "an unchanged query is not asked again"
    response = await client.put(
        "/api/v1/policies/node-down", json={"condition": {"type": "promql", "query": "up"}}
    )
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"]
    stored = (await client.get("/api/v1/policies/node-down")).json()
    assert stored["condition"]["query"] == QUERY, "not stored"


@pytest.mark.parametrize("settings_overrides", [{}])
async def test_without_a_prometheus_url_a_promql_policy_is_refused(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/v1/policies", json=POLICY)
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "condition", "query"]
    assert "VIGIL_PROMETHEUS_URL is not set" in problem["msg"]


@pytest.mark.parametrize("settings_overrides", [{}])
async def test_without_a_prometheus_url_the_runner_reports_the_policy_unavailable(
    container: Container,
) -> None:
    """A policy stored with the URL, read by a runner without it (another process)."""
    from vigil.observability.audit import Actor
    from vigil.policy import store
    from vigil.policy.models import PolicySpec

    await container.start(run_runner=False, run_ingest=False)
    try:
        async with container.database.write() as conn:
            spec = PolicySpec.model_validate(POLICY)
            await store.create_policy(conn, spec=spec, now=container.clock.now(), actor=Actor())
        await container.runner.run_once()
        status = container.runner.status()["promql"]
        assert status["unavailable"] == ["node-down"]
        assert "VIGIL_PROMETHEUS_URL" in status["last_error"]
    finally:
        await container.stop()


@pytest.mark.parametrize("aligned", [False, True], ids=["as asked", "aligned to the step"])
async def test_a_backtest_replays_range_queries_with_for(
    client: httpx.AsyncClient, clock: FakeClock, standin: StandIn, aligned: bool
) -> None:
    """Some TSDBs (VictoriaMetrics, Mimir) answer at multiples of the step, before the
    times asked: each sample counts for the tick it precedes."""
    await _create(client)
    end = clock.now() - timedelta(milliseconds=130)  # a span not on multiples of the step
    start = end - timedelta(minutes=2)
    step = 0.2  # the runner interval of the tests' settings
    # Down from 30 s in to 90 s in: pending from 30 s, firing at 60 s, resolved at 90 s.
    first, last = start.timestamp() + 30, start.timestamp() + 90
    ticks = [start.timestamp() + step * i for i in range(1, int(120 / step) + 1)]

    def at(t: float) -> float:
        ms = round(t * 1000)
        return (ms - ms % 200 if aligned else ms) / 1000

    standin.matrix[QUERY] = [
        ({"instance": "web-1:9100"}, [(at(t), 0.0) for t in ticks if first <= t < last])
    ]
    body = {"from": start.isoformat(), "to": end.isoformat()}
    response = await client.post("/api/v1/policies/node-down/backtest", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    decision, *later = result["decisions"]
    assert decision["target"] == "web-1"
    assert decision["outcome"] == "acted"
    assert decision["at"].startswith((start + timedelta(seconds=60)).isoformat()[:19])
    assert {d["reason"] for d in later} == {"action already open"}, "while it still fires"
    assert result["summary"]["acted"] == 1
    assert result["samples"] == 300
    [asked] = [a for a in standin.asked if a["path"] == "/api/v1/query_range"]
    assert asked["step"] == "0.200"


def test_policies_validate_asks_prometheus_about_each_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin: StandIn
) -> None:
    path = tmp_path / "policies.yaml"
    policy = {**POLICY, "condition": {"type": "promql", "query": "up =="}}
    path.write_text(yaml.safe_dump({"policies": [policy]}))
    monkeypatch.delenv("VIGIL_PROMETHEUS_URL", raising=False)
    result = CliRunner().invoke(app, ["policies", "validate", str(path)])
    assert result.exit_code == 1
    assert "policies.node-down.condition.query: VIGIL_PROMETHEUS_URL is not set" in result.output

    monkeypatch.setenv("VIGIL_PROMETHEUS_URL", standin.url)
    standin.refused["up =="] = "1:5: parse error: unexpected end of input"
    result = CliRunner().invoke(app, ["policies", "validate", str(path)])
    assert result.exit_code == 1
    assert "condition.query: Prometheus refused the query (bad_data)" in result.output
    del standin.refused["up =="]
    result = CliRunner().invoke(app, ["policies", "validate", str(path)])
    assert result.exit_code == 0, result.output


async def test_a_backtest_names_a_refused_query_and_waits_for_an_absent_prometheus(
    client: httpx.AsyncClient, clock: FakeClock, standin: StandIn
) -> None:
    span = {"from": (clock.now() - timedelta(minutes=5)).isoformat(), "to": clock.now().isoformat()}
    standin.refused["up =="] = "parse error"
    policy = {**POLICY, "condition": {"type": "promql", "query": "up =="}}
    response = await client.post("/api/v1/policies/backtest", json={"policy": policy, **span})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "policy", "condition", "query"]
    standin.down = True
    response = await client.post("/api/v1/policies/backtest", json={"policy": POLICY, **span})
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"]


def test_serve_refuses_a_policy_file_whose_query_cannot_be_asked(
    tmp_path: Path, standin: StandIn
) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump({"policies": [POLICY]}))
    base: dict[str, Any] = {"policies_file": path, "database_url": f"sqlite:///{tmp_path / 'v.db'}"}
    with pytest.raises(typer.Exit) as refused:
        check_policies_file(Settings(**base))
    assert refused.value.exit_code == 2
    check_policies_file(Settings(**base, prometheus_url=standin.url))
    standin.down = True  # Prometheus away at start-up: Vigil starts all the same
    check_policies_file(Settings(**base, prometheus_url=standin.url))
