"""Running one attempt of a remediation: resolve → render → run the plugin under a deadline.

The one code path for both the remediator service and in-process workers, so an action
behaves the same whichever runs it. It never raises for an outcome: every failure, expected
or not, becomes a ``failed`` :class:`RemediateResult` saying whether a retry could help.
(Cancellation still propagates: a shutting-down caller must be able to stop it.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from vigil.clock import Clock
from vigil.observability.logging import get_logger
from vigil.remediation.config import Remediations
from vigil.remediation.placeholders import Context, render
from vigil.remediation.plugins.base import Plugin, PluginCall, PluginFailed, PluginResult
from vigil.remediation.wire import RemediateRequest, RemediateResult

log = get_logger(__name__)
# Structured fields, never values formatted into the event: a target or message holding a
# newline must not forge a log line (the renderers escape field values).


async def run_remediation(
    request: RemediateRequest,
    *,
    remediations: Remediations,
    plugins: Mapping[str, Plugin],
    clock: Clock,
) -> RemediateResult:
    """Run ``request`` with the remediation it resolves to and report the outcome."""
    started = time.monotonic()
    started_at = clock.now()

    def finish(outcome: PluginResult | PluginFailed) -> RemediateResult:
        duration_ms = round((time.monotonic() - started) * 1000, 3)
        if isinstance(outcome, PluginResult):
            result = RemediateResult(
                status="success",
                message=outcome.message,
                details=outcome.details,
                duration_ms=duration_ms,
                retryable=False,
            )
        else:
            result = RemediateResult(
                status="failed",
                message=outcome.message,
                details=outcome.details,
                duration_ms=duration_ms,
                retryable=outcome.retryable,
            )
        log.info(
            "remediation.finished",
            action_id=request.action_id,
            attempt=request.attempt,
            action=request.action,
            target=request.target,
            status=result.status,
            retryable=result.retryable,
            duration_ms=duration_ms,
            started_at=started_at.isoformat(),
            message=result.message,
        )
        return result

    remediation = remediations.resolve(request.action, request.target)
    if remediation is None:
        return finish(
            PluginFailed(
                f"no remediation matches action {request.action!r} on target "
                f"{request.target!r} in {remediations.source}",
                retryable=False,
            )
        )
    plugin = plugins.get(remediation.plugin)
    if plugin is None:
        return finish(
            PluginFailed(f"plugin {remediation.plugin!r} is not installed", retryable=False)
        )

    try:
        options = render(
            remediation.options,
            Context(
                action_id=request.action_id,
                attempt=request.attempt,
                action=request.action,
                target=request.target,
                params=request.params,
                tags=request.tags,
            ),
        )
        call = PluginCall(
            action_id=request.action_id,
            attempt=request.attempt,
            action=request.action,
            target=request.target,
            params=request.params,
            options=options,
            timeout=remediation.timeout,
        )
        async with asyncio.timeout(remediation.timeout):
            return finish(await plugin.run(call))
    except PluginFailed as failure:
        return finish(failure)
    except TimeoutError:
        return finish(
            PluginFailed(
                f"{remediation.plugin} timed out after {remediation.timeout:g}s",
                details={"timeout_seconds": remediation.timeout},
            )
        )
    except Exception as exc:
        # A plugin bug, not an outcome: log it with its traceback, and let a retry try again.
        log.exception(
            "remediation.plugin_error",
            action_id=request.action_id,
            attempt=request.attempt,
            plugin=remediation.plugin,
        )
        return finish(
            PluginFailed(f"{remediation.plugin} plugin error: {type(exc).__name__}: {exc}")
        )


def runner_for(
    remediations: Remediations,
    plugins: Mapping[str, Plugin],
    clock: Clock,
    *,
    default_timeout: float,
) -> tuple[
    Callable[[RemediateRequest], Awaitable[RemediateResult]], Callable[[RemediateRequest], float]
]:
    """The run function behind ``remediations`` and each request's timeout from it (the
    entry's, or ``default_timeout`` when none matches): what the remediator service and the
    in-process executor both wrap."""

    def timeout_for(request: RemediateRequest) -> float:
        found = remediations.resolve(request.action, request.target)
        return found.timeout if found is not None else default_timeout

    async def run(request: RemediateRequest) -> RemediateResult:
        return await run_remediation(
            request, remediations=remediations, plugins=plugins, clock=clock
        )

    return run, timeout_for
