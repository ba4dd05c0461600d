"""run_remediation: resolve → render → run under a deadline, every outcome a result."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import pytest
import structlog

from vigil.clock import FakeClock
from vigil.remediation.config import Remediations, load_remediations, parse_remediations
from vigil.remediation.execute import run_remediation
from vigil.remediation.plugins.base import Plugin, PluginCall, PluginFailed, PluginResult
from vigil.remediation.plugins.log import LogPlugin
from vigil.remediation.wire import RemediateRequest


class ScriptedPlugin:
    """Records each call and behaves as ``behaviour`` says."""

    name: ClassVar[str] = "scripted"

    def __init__(self, behaviour: Callable[[PluginCall], Awaitable[PluginResult]]) -> None:
        self.behaviour = behaviour
        self.calls: list[PluginCall] = []

    def check(self, options: dict[str, Any]) -> None:
        pass

    async def run(self, call: PluginCall) -> PluginResult:
        self.calls.append(call)
        return await self.behaviour(call)


FILE = """
remediations:
  - action: restart-service
    targets: "web-*"
    plugin: scripted
    timeout: 0.2
    with:
      argv: ["systemctl", "restart", "{target}"]
      replicas: "{params.replicas}"
      note: "attempt {attempt} of action {action_id} ({action})"
  - action: scale-up
    plugin: log
"""


def request(action: str = "restart-service", target: str = "web-1", **params: Any) -> Any:
    return RemediateRequest(
        action_id=9, attempt=2, action=action, target=target, params=params or {"replicas": 4}
    )


async def run(plugin: ScriptedPlugin, req: RemediateRequest) -> Any:
    plugins: dict[str, Plugin] = {"scripted": plugin, "log": LogPlugin()}
    remediations = parse_remediations(FILE, source="test.yaml", plugins=plugins)
    return await run_remediation(req, remediations=remediations, plugins=plugins, clock=FakeClock())


async def succeed(call: PluginCall) -> PluginResult:
    return PluginResult("done", {"target": call.target})


async def test_success_renders_the_options_and_passes_the_timeout() -> None:
    plugin = ScriptedPlugin(succeed)
    result = await run(plugin, request())
    assert result.status == "success"
    assert result.message == "done"
    assert result.details == {"target": "web-1"}
    assert result.duration_ms >= 0
    [call] = plugin.calls
    assert call.options == {
        "argv": ["systemctl", "restart", "web-1"],
        "replicas": 4,
        "note": "attempt 2 of action 9 (restart-service)",
    }
    assert (call.action_id, call.attempt, call.timeout) == (9, 2, 0.2)
    assert call.params == {"replicas": 4}


async def test_no_matching_remediation_is_a_permanent_failure_saying_so() -> None:
    plugin = ScriptedPlugin(succeed)
    for req in (request(target="db-1"), request(action="drain-pod")):
        result = await run(plugin, req)
        assert result.status == "failed"
        assert result.retryable is False
        assert result.message == (
            f"no remediation matches action {req.action!r} on target {req.target!r} in test.yaml"
        )
    assert plugin.calls == []


async def test_an_unsafe_target_or_missing_param_fails_permanently_without_running() -> None:
    plugin = ScriptedPlugin(succeed)
    result = await run(plugin, request(target="web-1;reboot"))
    assert (result.status, result.retryable) == ("failed", False)
    assert "placeholder {target}: refused value 'web-1;reboot'" in result.message

    result = await run(plugin, request(other=1))
    assert (result.status, result.retryable) == ("failed", False)
    assert "no param 'replicas'" in result.message
    assert plugin.calls == []


async def test_a_plugin_past_the_timeout_is_a_retryable_failure() -> None:
    cancelled = asyncio.Event()

    async def hang(call: PluginCall) -> PluginResult:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("not reached")

    result = await run(ScriptedPlugin(hang), request())
    assert (result.status, result.retryable) == ("failed", True)
    assert result.message == "scripted timed out after 0.2s"
    assert result.details == {"timeout_seconds": 0.2}
    assert cancelled.is_set()
    # It ran until its deadline, and ended there, not when the plugin's 30 s sleep would
    # have (the upper bound leaves a busy machine all the room it needs).
    assert 150 <= result.duration_ms < 15_000


@pytest.mark.parametrize("retryable", [True, False])
async def test_plugin_failed_keeps_its_retryable_flag_and_details(retryable: bool) -> None:
    async def fail(call: PluginCall) -> PluginResult:
        raise PluginFailed("exit 3", retryable=retryable, details={"exit_code": 3})

    result = await run(ScriptedPlugin(fail), request())
    assert result.status == "failed"
    assert result.retryable is retryable
    assert result.message == "exit 3"
    assert result.details == {"exit_code": 3}


async def test_an_unexpected_exception_is_a_retryable_failure_and_logged() -> None:
    async def crash(call: PluginCall) -> PluginResult:
        raise KeyError("boom")

    with structlog.testing.capture_logs() as logs:
        result = await run(ScriptedPlugin(crash), request())
    assert (result.status, result.retryable) == ("failed", True)
    assert result.message == "scripted plugin error: KeyError: 'boom'"
    [error] = [line for line in logs if line["log_level"] == "error"]
    assert error["event"] == "remediation.plugin_error"
    assert (error["action_id"], error["plugin"], error["exc_info"]) == (9, "scripted", True)


async def test_cancellation_propagates() -> None:
    started = asyncio.Event()

    async def hang(call: PluginCall) -> PluginResult:
        started.set()
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    task = asyncio.create_task(run(ScriptedPlugin(hang), request()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_plugin_missing_at_run_time_is_permanent() -> None:
    plugins: dict[str, Plugin] = {"scripted": ScriptedPlugin(succeed), "log": LogPlugin()}
    remediations = parse_remediations(FILE, source="test.yaml", plugins=plugins)
    result = await run_remediation(
        request(), remediations=remediations, plugins={"log": LogPlugin()}, clock=FakeClock()
    )
    assert (result.status, result.retryable) == ("failed", False)
    assert result.message == "plugin 'scripted' is not installed"


async def test_every_seed_action_is_a_dry_run_with_the_packaged_default() -> None:
    remediations: Remediations = load_remediations(None)
    for action in ("scale-up", "scale-down", "restart-service", "restart", "drain-pod", "custom"):
        result = await run_remediation(
            RemediateRequest(action_id=1, attempt=1, action=action, target="web-1"),
            remediations=remediations,
            plugins={"log": LogPlugin()},
            clock=FakeClock(),
        )
        assert result.status == "success", result.message
        assert result.details["dry_run"] is True
        assert result.details["target"] == "web-1"
        assert "web-1" in result.details["would"]
