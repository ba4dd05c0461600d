"""The queue's contract: what a task is, and the :class:`TaskQueue` every transport honours.

A task is only transport. It names an action and the attempt to run; the database says what
that action is and whether the attempt is still wanted (docs/design.md invariants 1 and 7). A
queue may deliver a task more than once: whoever reserves one must tolerate duplicates.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


def new_task_id() -> str:
    """A fresh, unique task id (``task_<hex>``)."""
    return f"task_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class Task:
    """One request to run ``attempt`` of action ``action_id``. JSON on the wire, never pickle."""

    action_id: int
    attempt: int
    target: str
    task_id: str = field(default_factory=new_task_id)
    request_id: str | None = None
    """The request that led to the action: the worker and the remediator log under it."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task_id": self.task_id,
            "action_id": self.action_id,
            "attempt": self.attempt,
            "target": self.target,
        }
        if self.request_id is not None:
            data["request_id"] = self.request_id
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        request_id = data.get("request_id")
        return cls(
            action_id=int(data["action_id"]),
            attempt=int(data["attempt"]),
            target=str(data["target"]),
            task_id=str(data["task_id"]),
            request_id=str(request_id) if request_id is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Reserved:
    """A task handed to one consumer, until it is acked, retried or dead-lettered.

    ``receipt`` identifies this delivery to the queue (a stream entry id for Redis);
    ``deliveries`` counts how many times the task has been handed out, this one included.
    """

    task: Task
    receipt: str
    deliveries: int


class Outcome(StrEnum):
    """How a reserved task ended, for the queue's counters."""

    COMPLETED = "completed"
    """The action reached a final state (or was already there)."""
    FAILED = "failed"
    """The action failed for good; the task also goes to the dead letter."""
    DISCARDED = "discarded"
    """The task was stale or a duplicate: the database no longer wants this attempt."""


@dataclass(frozen=True, slots=True)
class DeadTask:
    """A task in the dead letter, with why it is there."""

    task: Task
    error: str
    dead_at: datetime
    attempts: int

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task.task_id,
            "action_id": self.task.action_id,
            "attempts": self.attempts,
            "target": self.task.target,
            "error": self.error,
            "dead_at": self.dead_at,
        }


@dataclass(frozen=True, slots=True)
class LastProcessed:
    task_id: str
    action_id: int
    target: str
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class QueueStats:
    """The counters of docs/api.md's ``/api/v1/queue/stats``, shared by every process.

    Every implementation counts the same way:

    - ``tasks_enqueued``: +1 per task put in the queue proper: each :meth:`TaskQueue.enqueue`,
      and each delayed retry when it falls due and is moved in.
    - ``tasks_dequeued``: +1 per delivery handed out by ``reserve``, redeliveries included.
    - ``tasks_completed``: +1 per ``ack(outcome=COMPLETED)`` that settled a delivery still
      outstanding (a second settle of the same delivery counts nothing).
    - ``tasks_failed``: +1 per ``ack(outcome=FAILED)`` that settled an outstanding delivery,
      and +1 per task newly put in the dead letter. A final failure is one
      ``dead_letter(reserved, ...)`` call (not an ack as well), counted once.
    - ``tasks_retried``: +1 per ``retry_at`` that scheduled a task not already scheduled.
    - ``ack(outcome=DISCARDED)`` settles without counting.
    - ``last_processed_task``: the task of the latest settle of an outstanding delivery
      (any ack, ``retry_at``, ``dead_letter`` with a reservation), stamped by the queue's clock.

    ``queue_length`` is tasks ready or handed out and not settled (what ``depth`` returns),
    ``delayed_length`` the retries not yet due, ``dead_letter_length`` the dead letter's size.
    """

    queue_length: int
    tasks_enqueued: int
    tasks_dequeued: int
    tasks_failed: int
    tasks_completed: int
    tasks_retried: int
    dead_letter_length: int
    delayed_length: int
    last_processed_task: LastProcessed | None

    def to_json(self) -> dict[str, Any]:
        last = self.last_processed_task
        return {
            "queue_length": self.queue_length,
            "tasks_enqueued": self.tasks_enqueued,
            "tasks_dequeued": self.tasks_dequeued,
            "tasks_failed": self.tasks_failed,
            "tasks_completed": self.tasks_completed,
            "tasks_retried": self.tasks_retried,
            "dead_letter_length": self.dead_letter_length,
            "delayed_length": self.delayed_length,
            "last_processed_task": None
            if last is None
            else {
                "task_id": last.task_id,
                "action_id": last.action_id,
                "target": last.target,
                "timestamp": last.timestamp,
            },
        }


class TaskQueue(Protocol):
    """At-least-once task transport with delayed retries and a dead letter.

    ``queue_length`` counts tasks ready or handed out but not yet acked; delayed retries
    are counted apart until they are due.
    """

    async def enqueue(self, task: Task) -> None:
        """Make ``task`` available to consumers now."""

    async def reserve(self, consumer: str, *, count: int, block: float) -> list[Reserved]:
        """Up to ``count`` tasks for ``consumer``, waiting at most ``block`` seconds for one.

        Also hands out again tasks that another consumer reserved and did not settle within
        the visibility timeout, and moves delayed retries that are due into the queue.
        """

    async def ack(self, reserved: Reserved, *, outcome: Outcome) -> None:
        """Settle a delivery: the task is gone from the queue."""

    async def touch(self, reserved: Reserved, *, consumer: str) -> None:
        """Restart the visibility timeout of a delivery ``consumer`` is still working on, so
        it is not handed out again meanwhile. Nothing happens for a settled delivery."""

    async def retry_at(self, reserved: Reserved, task: Task, when: datetime) -> None:
        """Settle ``reserved`` and schedule ``task`` (the next attempt) for ``when``."""

    async def dead_letter(self, reserved: Reserved | None, task: Task, *, error: str) -> None:
        """Settle ``reserved`` (if any) and keep ``task`` in the dead letter with ``error``."""

    async def dead_letters(self, *, limit: int) -> list[DeadTask]:
        """The dead letter, oldest first."""

    async def take_dead(self, task_ids: list[str] | None) -> list[DeadTask]:
        """Remove and return the given dead tasks (all of them for ``None``), for a redrive."""

    async def stats(self) -> QueueStats:
        """The shared counters and current lengths."""

    async def depth(self) -> int:
        """Tasks waiting or in flight (not counting delayed ones), read now."""

    async def close(self) -> None:
        """Release connections; the queue's contents stay (for Redis)."""
