"""Action use cases from the API: manual actions, cancellation, dead-letter redrive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vigil.actions import lifecycle
from vigil.actions.dispatch import Dispatcher
from vigil.actions.status import Status
from vigil.actions.store import create_action, manual_key, transition
from vigil.clock import Clock
from vigil.db.engine import Database
from vigil.errors import Conflict, InvalidInput, NotFound
from vigil.observability.audit import Actor
from vigil.observability.metrics import VigilMetrics
from vigil.queue.task import TaskQueue


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
    ) -> dict[str, Any]:
        """A pending manual action, dispatched to the queue.

        :class:`InvalidInput` if no remediation handles ``action``;
        :class:`ActionAlreadyOpen` if one is open for the same action and target.
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
                reason=f"manual action requested by {actor.name}",
            )
        self._metrics.actions_total.labels(action=action, status=Status.PENDING.value).inc()
        await self._dispatcher.dispatch([record])
        return record

    async def cancel(self, action_id: int, *, reason: str | None, actor: Actor) -> dict[str, Any]:
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
            action=record["action"], status=Status.CANCELLED.value
        ).inc()
        return record

    async def redrive(
        self, task_ids: list[str] | None, *, actor: Actor
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Put dead-lettered tasks' actions back to ``pending`` with a fresh attempt budget.

        ``None`` re-drives the whole dead letter. Returns the re-driven actions and the
        tasks skipped, each with why (not in the dead letter, the action did not fail,
        another action is open for the same pair).
        """
        dead = await self._queue.take_dead(task_ids)
        found = {d.task.task_id for d in dead}
        skipped: list[dict[str, Any]] = [
            {"task_id": task_id, "action_id": None, "reason": "not in the dead letter"}
            for task_id in (task_ids or [])
            if task_id not in found
        ]
        redriven: list[dict[str, Any]] = []
        seen: set[int] = set()
        for item in dead:
            action_id = item.task.action_id
            if action_id in seen:
                continue
            seen.add(action_id)
            try:
                async with self._db.write() as conn:
                    record = await lifecycle.redrive(
                        conn, action_id=action_id, actor=actor, now=self._clock.now()
                    )
            except (Conflict, NotFound) as exc:
                skipped.append(
                    {"task_id": item.task.task_id, "action_id": action_id, "reason": exc.message}
                )
                continue
            redriven.append(record)
            self._metrics.actions_total.labels(
                action=record["action"], status=Status.PENDING.value
            ).inc()
        await self._dispatcher.dispatch(redriven)
        return redriven, skipped
