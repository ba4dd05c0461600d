"""The ``log`` plugin: a dry run that records what would happen."""

from __future__ import annotations

import logging

import pytest

from vigil.remediation.plugins.base import PluginCall, PluginConfigError
from vigil.remediation.plugins.log import LogPlugin


def call(**options: object) -> PluginCall:
    return PluginCall(
        action_id=7,
        attempt=1,
        action="scale-up",
        target="web-1",
        params={"replicas": 3},
        options=dict(options),
        timeout=5.0,
    )


async def test_it_logs_one_line_and_reports_a_dry_run(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="vigil.remediation.plugins.log"):
        result = await LogPlugin().run(call())
    assert result.details == {
        "dry_run": True,
        "action": "scale-up",
        "target": "web-1",
        "params": {"replicas": 3},
        "would": "would run scale-up on web-1",
    }
    assert result.message == "dry run: would run scale-up on web-1"
    [record] = caplog.records
    line = record.getMessage()
    assert line.startswith("remediation.dry_run action=scale-up target=web-1 action_id=7")
    assert "params={'replicas': 3}" in line
    assert record.__dict__["target"] == "web-1"


async def test_the_message_option_says_what_would_happen() -> None:
    result = await LogPlugin().run(call(message="would add 3 replicas to web-1"))
    assert result.details["would"] == "would add 3 replicas to web-1"


def test_check() -> None:
    plugin = LogPlugin()
    plugin.check({})
    plugin.check({"message": "would restart {target}"})
    with pytest.raises(PluginConfigError, match="unknown option"):
        plugin.check({"argv": ["x"]})
    with pytest.raises(PluginConfigError, match="must be a string"):
        plugin.check({"message": 3})
