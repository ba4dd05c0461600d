"""A re-run of an attempt (its worker died) may already be running at the remediator, so a
request that never reached the remediator keeps that attempt until its deadline.

Both databases: what tells a re-run is the action's history of claims, which outlives any
worker.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from tests.worker.support import ScriptedExecutor, World, success, world
from tests.worker.test_reconciler import reconciler
from vigil.remediation.service import EXPIRY_GRACE_SECONDS, UNREACHABLE, failure
from vigil.remediation.wire import RemediateRequest, RemediateResult
from vigil.worker.reruns import CLOCK_MARGIN_SECONDS

# The test remediations' "restart-service" runs the log plugin with the default timeout.
TIMEOUT = 30.0
DEADLINE = TIMEOUT + EXPIRY_GRACE_SECONDS + CLOCK_MARGIN_SECONDS


def unreachable() -> RemediateResult:
    return failure("remediator unreachable: ConnectError: connection refused", reason=UNREACHABLE)


@dataclass
class Remediator:
    """An executor that cannot reach its remediator until ``back`` is set, then succeeds."""

    back: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[RemediateRequest] = field(default_factory=list)
    asked: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def execute(self, request: RemediateRequest) -> RemediateResult:
        async with self.asked:
            self.calls.append(request)
            self.asked.notify_all()
        return success("restarted") if self.back.is_set() else unreachable()

    async def asked_at_least(self, times: int) -> None:
        async with self.asked:
            await asyncio.wait_for(self.asked.wait_for(lambda: len(self.calls) >= times), 10)


async def reclaimed(w: World) -> int:
    """An action whose first worker claimed attempt 1 and died; now pending again, attempt 1."""
    action_id = await w.manual()
    first = ScriptedExecutor(gate=asyncio.Event())
    dead = asyncio.create_task(
        w.worker(first, "worker-dead").handle((await w.queue.reserve("t", count=1, block=0))[0])
    )
    await first.entered.wait()
    dead.cancel()  # killed mid-attempt: whether its request reached the remediator is unknown
    w.clock.advance(61)
    assert await reconciler(w).run_once() == 1
    action = await w.action(action_id)
    assert (action.status, action.next_attempt) == ("pending", 1)
    return action_id


async def test_a_rerun_that_cannot_reach_the_remediator_keeps_its_attempt_until_the_deadline(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        action_id = await reclaimed(w)
        remote = Remediator()
        worker = w.worker(remote, "worker-2", resend_pause=0.01)
        claimed_at = w.clock.now()
        handling = asyncio.create_task(
            worker.handle((await w.queue.reserve("t", count=1, block=0))[0])
        )

        await remote.asked_at_least(3)
        w.clock.advance(DEADLINE - 1)
        await remote.asked_at_least(len(remote.calls) + 2)
        assert not handling.done(), "one second before the deadline it still waits"
        action = await w.action(action_id)
        assert (action.status, action.attempts) == ("running", 1)

        w.clock.advance(1)
        await asyncio.wait_for(handling, 10)
        assert {call.attempt for call in remote.calls} == {1}
        action = await w.action(action_id)
        assert (action.status, action.next_attempt) == ("pending", 2)
        assert action.next_attempt_at is not None
        assert action.next_attempt_at >= claimed_at + timedelta(seconds=DEADLINE)
        last = (await w.history(action_id))[-1]
        assert (last.from_status, last.to_status, last.attempt) == ("running", "pending", 1)
        assert "kept until its deadline" in str(last.reason)


async def test_a_rerun_whose_remediator_comes_back_completes_the_same_attempt(
    database_url: str,
) -> None:
    async with world(database_url) as w:
        action_id = await reclaimed(w)
        remote = Remediator()
        worker = w.worker(remote, "worker-2", resend_pause=0.01)
        handling = asyncio.create_task(
            worker.handle((await w.queue.reserve("t", count=1, block=0))[0])
        )
        await remote.asked_at_least(2)
        remote.back.set()
        await asyncio.wait_for(handling, 10)

        action = await w.action(action_id)
        assert (action.status, action.attempts) == ("completed", 1)
        assert {call.attempt for call in remote.calls} == {1}
        assert [(h.from_status, h.to_status, h.attempt) for h in await w.history(action_id)] == [
            (None, "pending", 0),
            ("pending", "running", 1),
            ("running", "pending", 1),
            ("pending", "running", 1),
            ("running", "completed", 1),
        ]


async def test_a_first_claim_that_cannot_reach_the_remediator_moves_on_at_once(
    database_url: str,
) -> None:
    """Nothing of attempt 1 was ever sent: attempt 2 may come after the usual backoff."""
    async with world(database_url) as w:
        action_id = await w.manual()
        remote = Remediator()
        await w.worker(remote, resend_pause=0.01).handle(
            (await w.queue.reserve("t", count=1, block=0))[0]
        )

        assert [call.attempt for call in remote.calls] == [1]
        action = await w.action(action_id)
        assert (action.status, action.next_attempt) == ("pending", 2)
        assert "kept until" not in str(action.error_message)
