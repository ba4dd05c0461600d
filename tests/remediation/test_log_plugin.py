"""The ``log`` plugin: a dry run that records what would happen."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import replace

import pytest
import structlog

from vigil.observability.logging import configure_logging
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


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """Every log line of the process, rendered for a console, in a string."""
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("info", "console", out)
    yield out
    structlog.reset_defaults()
    root.handlers, root.level = saved[0], saved[1]


async def test_it_logs_one_line_and_reports_a_dry_run(console: io.StringIO) -> None:
    result = await LogPlugin().run(call())
    assert result.details == {
        "dry_run": True,
        "action": "scale-up",
        "target": "web-1",
        "params": {"replicas": 3},
        "would": "would run scale-up on web-1",
    }
    assert result.message == "dry run: would run scale-up on web-1"
    [line] = console.getvalue().splitlines()
    assert "remediation.dry_run" in line
    assert "action=scale-up action_id=7 attempt=1 params={'replicas': 3} target=web-1" in line


async def test_a_target_with_a_newline_cannot_forge_a_log_line(console: io.StringIO) -> None:
    forged = "web-1\n2026-01-19T12:00:00Z [info     ] remediation.dry_run forged=1"
    await LogPlugin().run(replace(call(), target=forged))
    [line] = console.getvalue().splitlines()  # one line: the newline is escaped
    assert line.endswith(
        "would='would run scale-up on web-1\\n2026-01-19T12:00:00Z [info     ]"
        " remediation.dry_run forged=1'"
    )


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
