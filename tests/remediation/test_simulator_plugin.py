"""The ``simulator`` plugin: scales and restarts the simulated fleet, in-process or through
the fleet API of another Vigil process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.api.support import audit_rows
from vigil.access.keys import create_key
from vigil.access.roles import Role
from vigil.container import Container
from vigil.observability.audit import Actor
from vigil.remediation.plugins.base import PluginCall, PluginConfigError, PluginFailed
from vigil.remediation.plugins.simulator import SimulatorPlugin
from vigil.simulator.fleet import Fleet


def call(action: str, target: str, **options: Any) -> PluginCall:
    params = options.pop("params", {})
    return PluginCall(
        action_id=1,
        attempt=1,
        action=action,
        target=target,
        params=params,
        options=options,
        timeout=5.0,
    )


@pytest.fixture
def fleet() -> Fleet:
    return Fleet(seed=1)


@pytest.fixture
def local(fleet: Fleet) -> SimulatorPlugin:
    plugin = SimulatorPlugin()
    plugin.attach(lambda: fleet)
    return plugin


async def test_scale_up_adds_the_policy_s_replicas(local: SimulatorPlugin, fleet: Fleet) -> None:
    result = await local.run(call("scale-up", "web", params={"replicas": 2}))
    assert fleet.services["web"].replicas == 4
    assert result.details == {"service": "web", "replicas_before": 2, "replicas": 4, "via": "local"}
    assert "from 2 to 4" in result.message


async def test_scale_down_never_goes_below_one(local: SimulatorPlugin, fleet: Fleet) -> None:
    await local.run(call("scale-down", "web"))
    assert fleet.services["web"].replicas == 1
    await local.run(call("scale-down", "web", replicas=5))
    assert fleet.services["web"].replicas == 1


async def test_a_host_target_restarts_its_service(local: SimulatorPlugin, fleet: Fleet) -> None:
    fleet.services["web"].memory["web-02"] = 97.0
    fleet.services["web"].silent_until = 1e9
    assert not fleet.heartbeating("web")
    result = await local.run(call("restart-service", "web-02"))
    assert result.details["service"] == "web"
    assert fleet.services["web"].memory["web-02"] == 40.0
    assert fleet.heartbeating("web")
    assert fleet.services["web"].restarts == 1
    # `operation` makes any action name mean a restart.
    await local.run(call("custom", "api", operation="restart"))
    assert fleet.services["api"].restarts == 1


@pytest.mark.parametrize(
    ("action", "target", "options", "says"),
    [
        ("scale-up", "cache-01", {}, "no service or host 'cache-01'"),
        ("drain-pod", "web", {}, "no `operation` given"),
        ("scale-up", "web", {"params": {"replicas": 0}}, "`replicas` must be"),
        ("scale-up", "web", {"params": {"replicas": "two"}}, "`replicas` must be"),
    ],
)
async def test_what_cannot_work_fails_for_good(
    local: SimulatorPlugin, fleet: Fleet, action: str, target: str, options: Any, says: str
) -> None:
    with pytest.raises(PluginFailed) as failed:
        await local.run(call(action, target, **options))
    assert says in failed.value.message
    assert failed.value.retryable is False
    assert fleet.services["web"].replicas == 2


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"colour": "red"}, "unknown option 'colour'"),
        ({"operation": "explode"}, "`operation` must be one of"),
        ({"replicas": 0}, "`replicas` must be"),
        ({"url": "ftp://vigil"}, "`url` must be an http"),
        ({"api_key": 5}, "`api_key` must be a non-empty string"),
    ],
)
def test_check_refuses_bad_options(options: dict[str, Any], says: str) -> None:
    with pytest.raises(PluginConfigError, match="simulator: ") as refused:
        SimulatorPlugin().check(options)
    assert says in str(refused.value)


def test_check_lets_placeholders_through() -> None:
    SimulatorPlugin().check({"replicas": "{params.replicas}", "service": "{target}"})


async def test_without_a_fleet_or_url_it_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VIGIL_API_URL", raising=False)
    with pytest.raises(PluginFailed, match="VIGIL_API_URL") as failed:
        await SimulatorPlugin().run(call("scale-up", "web"))
    assert failed.value.retryable is False


async def test_over_the_fleet_api(
    app: FastAPI, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = SimulatorPlugin(transport=httpx.ASGITransport(app=app))
    monkeypatch.setenv("VIGIL_API_URL", "http://vigil.test/")
    result = await plugin.run(call("scale-up", "web-03", params={"replicas": 2}))
    assert container.fleet.services["web"].replicas == 4
    assert result.details == {
        "service": "web",
        "replicas_before": 2,
        "replicas": 4,
        "via": "http://vigil.test",
    }
    await plugin.run(call("restart", "db"))
    assert container.fleet.services["db"].restarts == 1
    kinds = [r["kind"] for r in await audit_rows(container)]
    assert kinds.count("simulator.scaled") == 1
    assert kinds.count("simulator.restarted") == 1


@pytest.mark.parametrize("settings_overrides", [{"auth": "required"}])
async def test_over_the_fleet_api_with_a_key(
    app: FastAPI, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with container.database.write() as conn:
        _, key = await create_key(
            conn, name="remediator", role=Role.OPERATOR, now=container.clock.now(), actor=Actor()
        )
    plugin = SimulatorPlugin(transport=httpx.ASGITransport(app=app))
    monkeypatch.delenv("VIGIL_API_KEY", raising=False)
    with pytest.raises(PluginFailed, match="answered 401") as refused:
        await plugin.run(call("scale-up", "web", url="http://vigil.test"))
    assert refused.value.retryable is False
    monkeypatch.setenv("VIGIL_API_KEY", key)
    await plugin.run(call("scale-up", "web", url="http://vigil.test"))
    assert container.fleet.services["web"].replicas == 3
    # The option wins over the environment.
    monkeypatch.setenv("VIGIL_API_KEY", "vk_wrong")
    await plugin.run(call("scale-down", "web", url="http://vigil.test", api_key=key))
    assert container.fleet.services["web"].replicas == 2


async def test_an_unreachable_api_is_a_retryable_failure() -> None:
    with pytest.raises(PluginFailed) as failed:
        await SimulatorPlugin().run(call("scale-up", "web", url="http://127.0.0.1:9"))
    assert failed.value.retryable is True


async def test_the_api_url_and_key_come_from_dot_env_too(
    app: FastAPI,
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("VIGIL_API_URL", raising=False)
    monkeypatch.delenv("VIGIL_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("VIGIL_API_URL=http://vigil.test\n")
    plugin = SimulatorPlugin(transport=httpx.ASGITransport(app=app))
    result = await plugin.run(call("scale-up", "api"))
    assert result.details["via"] == "http://vigil.test"
    assert container.fleet.services["api"].replicas == 3
