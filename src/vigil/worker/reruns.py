"""Re-runs: an attempt claimed again after its worker's lease expired.

The worker that claimed it before may have sent it to the remediator, where it may still be
running -- the remediator may have died too, leaving the change running on the host --
whatever the new worker's first request meets. So until that attempt's deadline (its
timeout, the remediator's expiry grace and a margin for clocks, counted from the new claim,
which comes after every request the earlier holder sent while it held the lease), a
request that certainly never reached the remediator is sent again with the same attempt
instead of moving on to the next one: two attempts of one action never run at once, and
attempts still only grow. Whether an attempt is a re-run is read from the action's
history of claims (:func:`vigil.actions.lifecycle.times_claimed`), so it survives any
worker's restart. Within one call, the remote executor keeps to the same rule
(:mod:`vigil.remediation.client`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from vigil.clock import Clock
from vigil.observability.logging import get_logger
from vigil.remediation.service import EXPIRY_GRACE_SECONDS, Executor, never_sent
from vigil.remediation.wire import RemediateRequest, RemediateResult

log = get_logger(__name__)

CLOCK_MARGIN_SECONDS = 5.0
"""Added to a re-run's deadline for the remediator's clock running behind the worker's."""


def deadline(claimed_at: datetime, timeout: float) -> datetime:
    """Until when a re-run claimed at ``claimed_at`` may still be running at the remediator
    on an earlier holder's account, for a remediation of ``timeout`` seconds."""
    return claimed_at + timedelta(seconds=timeout + EXPIRY_GRACE_SECONDS + CLOCK_MARGIN_SECONDS)


async def ask(
    executor: Executor,
    request: RemediateRequest,
    *,
    clock: Clock,
    until: datetime | None,
    pause: float,
) -> RemediateResult:
    """The executor's result for ``request``; for a re-run (``until`` given), a request that
    never reached the remediator is sent again, same attempt, every ``pause`` seconds until
    ``until`` has passed."""
    result = await executor.execute(request)
    if until is None or not never_sent(result):
        return result
    log.warning(
        "task.rerun_unconfirmed",
        attempt=request.attempt,
        error=result.message,
        until=until.isoformat(),
        note="an earlier claim may have sent this attempt: keeping it until its deadline",
    )
    while never_sent(result) and clock.now() < until:
        await asyncio.sleep(pause)
        result = await executor.execute(request)
    if never_sent(result):
        note = f"; attempt {request.attempt} was kept until its deadline had passed"
        result = result.model_copy(update={"message": result.message + note})
    return result
