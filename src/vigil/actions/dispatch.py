"""Hand newly recorded actions to the queue, once the transaction that recorded them commits."""

from __future__ import annotations

from collections.abc import Iterable

from vigil.actions.status import Status
from vigil.actions.store import Action
from vigil.errors import Unavailable
from vigil.observability.logging import bound, get_logger
from vigil.queue.task import Task, TaskQueue

log = get_logger(__name__)


class Dispatcher:
    """Enqueues one task per pending action (others, such as those awaiting approval, are
    not for the queue yet and are passed over). Best effort: the database is the truth.

    If the queue cannot take a task (Redis down), the action stays ``pending`` with its
    dispatch time, and the reconciler sends it again once that is older than the
    visibility timeout (docs/design.md invariant 1), so a failed enqueue never fails the request.
    """

    def __init__(self, queue: TaskQueue) -> None:
        self._queue = queue

    async def dispatch(self, records: Iterable[Action]) -> None:
        for record in records:
            if record.status != Status.PENDING:
                continue
            task = Task(
                action_id=record.id,
                attempt=record.next_attempt,
                target=record.target,
                request_id=record.request_id,
            )
            try:
                await self._queue.enqueue(task)
                with bound(request_id=task.request_id):
                    log.info(
                        "task.enqueued",
                        action_id=task.action_id,
                        attempt=task.attempt,
                        task_id=task.task_id,
                    )
            except Unavailable as exc:
                log.warning(
                    "task.enqueue_failed",
                    action_id=task.action_id,
                    error=exc.message,
                    note="the reconciler re-dispatches it",
                )
            except Exception:
                # Whatever the queue says, the action is recorded: never let a queue error
                # reach the caller (the ingest writer must live on).
                log.exception(
                    "task.enqueue_failed",
                    action_id=task.action_id,
                    note="the reconciler re-dispatches it",
                )
