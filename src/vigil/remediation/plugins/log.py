"""The ``log`` plugin: records what a remediation would do and changes nothing (dry runs).

Options: ``message`` (optional), a line saying what would happen, usually with placeholders
(``"would restart {target}"``). Without it the line reads ``would run ACTION on TARGET``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from vigil.observability.logging import get_logger
from vigil.remediation.plugins.base import (
    PluginCall,
    PluginConfigError,
    PluginResult,
    refuse_unknown_options,
)

log = get_logger(__name__)

OPTIONS = frozenset({"message"})


def _message(options: dict[str, Any]) -> str | None:
    refuse_unknown_options("log", options, OPTIONS)
    message = options.get("message")
    if message is not None and not isinstance(message, str):
        raise PluginConfigError("log: `message` must be a string")
    return message


class LogPlugin:
    """Logs one structured line per remediation and reports success as a dry run."""

    name: ClassVar[str] = "log"

    def check(self, options: dict[str, Any]) -> None:
        """Raise PluginConfigError unless ``options`` is empty or only a string ``message``."""
        _message(options)

    async def run(self, call: PluginCall) -> PluginResult:
        """Log what would be done and return it in the details (``dry_run: true``)."""
        # Checked at load; a message that is one placeholder may have rendered to a number.
        message = call.options.get("message")
        would = f"would run {call.action} on {call.target}" if message is None else str(message)
        # Fields, not a formatted line: a target holding a newline cannot forge a log line.
        log.info(
            "remediation.dry_run",
            action=call.action,
            target=call.target,
            action_id=call.action_id,
            attempt=call.attempt,
            params=call.params,
            would=would,
        )
        return PluginResult(
            message=f"dry run: {would}",
            details={
                "dry_run": True,
                "action": call.action,
                "target": call.target,
                "params": call.params,
                "would": would,
            },
        )
