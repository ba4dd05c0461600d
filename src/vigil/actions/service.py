"""Action use cases from the API: manual actions, cancellation, dead-letter redrive."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vigil.actions import approval, lifecycle
from vigil.actions.dispatch import Dispatcher
from vigil.actions.status import Status
from vigil.actions.store import Action, create_action, manual_key, transition
from vigil.clock import Clock
from vigil.db.engine import Database
from vigil.decide import pause as automation
from vigil.decide.pause import AutomationState
from vigil.errors import ActionAlreadyOpen, Conflict, InvalidInput, NotFound
from vigil.observability.audit import Actor
from vigil.observability.metrics import VigilMetrics
from vigil.queue.task import TaskQueue


@dataclass(frozen=True, slots=True)
class Skipped:
    """A dead-letter task or failed action a redrive left alone, and why."""

    task_id: str | None
    action_id: int | None
    reason: str


class ActionService:
    """Creates manual actions, cancels open ones and re-drives dead-lettered ones."""

    def __init__(
        self,
        *,
        database: Database,
        clock: Clock,
        metrics: VigilMetrics,
        queue: TaskQueue,
        knows_action: Callable[[str], bool] = lambda _action: True,
    ) -> None:
        self._db = database
        self._clock = clock
        self._metrics = metrics
        self._queue = queue
        self._dispatcher = Dispatcher(queue)
        self._knows = knows_action

    async def create_manual(
        self,
        *,
        target: str,
        action: str,
        params: dict[str, Any],
        details: str | None,
        actor: Actor,
        tags: Mapping[str, str] | None = None,
    ) -> Action:
        """A pending manual action, dispatched to the queue.

        :class:`InvalidInput` if no remediation handles ``action``; :class:`Conflict` while
        automation is paused; :class:`ActionAlreadyOpen` if one is open for the same action
        and target.
        """
        if not self._knows(action):
            message = (
                f"no remediation handles action {action!r}; add one to the remediations "
                "file (VIGIL_REMEDIATIONS_FILE) or use a known action"
            )
            raise InvalidInput(
                message,
                detail=[{"loc": ["body", "action"], "msg": message, "type": "value_error"}],
            )
        async with self._db.write() as conn:
            switch = await automation.get_state(conn)
            if switch.paused:
                raise Conflict(
                    f"automation is paused (since {switch.since:%Y-%m-%dT%H:%M:%SZ} by "
                    f"{switch.by}: {switch.reason}); resume it to create actions"
                )
            record = await create_action(
                conn,
                now=self._clock.now(),
                actor=actor,
                dedup_key=manual_key(action),
                policy_name=None,
                target=target,
                action=action,
                params=params,
                details=details,
                tags=tags,
                reason=f"manual action requested by {actor.name}",
            )
        self._metrics.actions_total.labels(action=action, status=Status.PENDING.value).inc()
        await self._dispatcher.dispatch([record])
        return record

    async def automation_state(self) -> AutomationState:
        """The global automation switch."""
        async with self._db.read() as conn:
            return await automation.get_state(conn)

    async def set_paused(
        self, paused: bool, *, reason: str | None, actor: Actor
    ) -> AutomationState:
        """Pause (no new action is created, by policy or by hand) or resume automation."""
        async with self._db.write() as conn:
            return await automation.set_paused(
                conn, paused=paused, reason=reason, actor=actor, now=self._clock.now()
            )

    async def cancel(self, action_id: int, *, reason: str | None, actor: Actor) -> Action:
        """Cancel an open action; :class:`IllegalTransition` if it already ended.

        A worker running it finds out when it reports: its result goes into the history and
        the action stays ``cancelled``.
        """
        async with self._db.write() as conn:
            record = await transition(
                conn,
                action_id=action_id,
                to=Status.CANCELLED,
                now=self._clock.now(),
                actor=actor,
                reason=reason or f"cancelled by {actor.name}",
                lease_owner=None,
                lease_expires_at=None,
            )
        self._metrics.actions_total.labels(
            action=record.action, status=Status.CANCELLED.value
        ).inc()
        return record

    async def approve(self, action_id: int, *, comment: str | None, actor: Actor) -> Action:
        """Approve an action awaiting approval: it becomes ``pending`` and is dispatched."""
        async with self._db.write() as conn:
            record = await approval.approve(
                conn, action_id=action_id, now=self._clock.now(), actor=actor, comment=comment
            )
        self._metrics.actions_total.labels(action=record.action, status="pending").inc()
        await self._dispatcher.dispatch([record])
        return record

    async def reject(self, action_id: int, *, comment: str | None, actor: Actor) -> Action:
        """Reject an action awaiting approval: it is ``cancelled``."""
        async with self._db.write() as conn:
            record = await approval.reject(
                conn, action_id=action_id, now=self._clock.now(), actor=actor, comment=comment
            )
        self._metrics.actions_total.labels(action=record.action, status="cancelled").inc()
        return record

    async def redrive(
        self,
        task_ids: list[str] | None = None,
        *,
        action_ids: list[int] | None = None,
        actor: Actor,
    ) -> tuple[list[Action], list[Skipped]]:
        """Put failed actions back to ``pending`` with a fresh attempt budget, and queue them.

        By dead-letter task (``task_ids``; neither argument: the whole dead letter), or by
        action id (``action_ids``: also a failed action whose dead-letter entry was lost, as
        the in-process dead letter is at a restart). An entry leaves the dead letter only
        once its action is re-driven (or can never be: gone, or no longer failed); one whose
        pair has another action open stays. Returns the re-driven actions and the skipped
        ones, each with why.
        """
        wanted_actions = set(action_ids or ())
        dead = [
            d
            for d in await self._queue.dead_letters(limit=_REDRIVE_LIMIT)
            if (action_ids is None and (task_ids is None or d.task.task_id in task_ids))
            or d.task.action_id in wanted_actions
        ]
        skipped: list[Skipped] = []
        if task_ids is not None:
            found = {d.task.task_id for d in dead}
            skipped += [
                Skipped(task_id=t, action_id=None, reason="not in the dead letter")
                for t in dict.fromkeys(task_ids)
                if t not in found
            ]
        entries: dict[int, list[str]] = {}
        for d in dead:
            entries.setdefault(d.task.action_id, []).append(d.task.task_id)
        for action_id in action_ids or ():
            entries.setdefault(action_id, [])
        redriven: list[Action] = []
        for action_id, tasks in entries.items():
            task_id = tasks[0] if tasks else None
            try:
                async with self._db.write() as conn:
                    record = await lifecycle.redrive(
                        conn, action_id=action_id, actor=actor, now=self._clock.now()
                    )
            except ActionAlreadyOpen as exc:
                skipped.append(Skipped(task_id=task_id, action_id=action_id, reason=exc.message))
                continue  # it stays in the dead letter, to re-drive once the other ends
            except (Conflict, NotFound) as exc:
                skipped.append(Skipped(task_id=task_id, action_id=action_id, reason=exc.message))
                if tasks:  # the action will never be re-driven from here
                    await self._queue.take_dead(tasks)
                continue
            if tasks:
                await self._queue.take_dead(tasks)
            redriven.append(record)
            self._metrics.actions_total.labels(
                action=record.action, status=Status.PENDING.value
            ).inc()
        await self._dispatcher.dispatch(redriven)
        return redriven, skipped


_REDRIVE_LIMIT = 100_000
"""Most dead-letter entries one redrive looks at."""
