"""Action use cases from the API: manual actions and cancellation."""

from __future__ import annotations

from typing import Any

from vigil.actions.status import Status
from vigil.actions.store import create_action, manual_key, transition
from vigil.clock import Clock
from vigil.db.engine import Database
from vigil.observability.audit import Actor
from vigil.observability.metrics import VigilMetrics


class ActionService:
    """Creates manual actions and cancels open ones."""

    def __init__(self, *, database: Database, clock: Clock, metrics: VigilMetrics) -> None:
        self._db = database
        self._clock = clock
        self._metrics = metrics

    async def create_manual(
        self,
        *,
        target: str,
        action: str,
        params: dict[str, Any],
        details: str | None,
        actor: Actor,
    ) -> dict[str, Any]:
        """A pending manual action; :class:`ActionAlreadyOpen` if one is open for the pair."""
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
        return record

    async def cancel(self, action_id: int, *, reason: str | None, actor: Actor) -> dict[str, Any]:
        """Cancel an open action; :class:`IllegalTransition` if it already ended."""
        async with self._db.write() as conn:
            record = await transition(
                conn,
                action_id=action_id,
                to=Status.CANCELLED,
                now=self._clock.now(),
                actor=actor,
                reason=reason or f"cancelled by {actor.name}",
            )
        self._metrics.actions_total.labels(
            action=record["action"], status=Status.CANCELLED.value
        ).inc()
        return record
