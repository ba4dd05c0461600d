"""Action statuses and the allowed transitions between them. Status values live here only."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Where an action is in its life."""

    PENDING = "pending"
    """Recorded and waiting to be dispatched (or, between attempts, to be retried)."""
    RUNNING = "running"
    """A worker holds it and is asking the remediator to act."""
    COMPLETED = "completed"
    """The remediator reported success. Terminal."""
    FAILED = "failed"
    """The last attempt failed, or the error was permanent. Final, except that an operator may
    re-drive it from the dead letter (back to ``pending``, with a fresh attempt budget)."""
    CANCELLED = "cancelled"
    """An operator cancelled it while open, or its approval was refused or timed out.
    Terminal."""
    AWAITING_APPROVAL = "awaiting_approval"
    """Created by a policy with ``approval_required``: waits (open, never dispatched) until
    an operator approves it (``pending``) or rejects it, or its approval times out
    (``cancelled``)."""


OPEN = frozenset({Status.PENDING, Status.RUNNING, Status.AWAITING_APPROVAL})
TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

ALLOWED: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.RUNNING, Status.CANCELLED, Status.FAILED}),
    Status.RUNNING: frozenset({Status.COMPLETED, Status.FAILED, Status.PENDING, Status.CANCELLED}),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset({Status.PENDING}),
    Status.CANCELLED: frozenset(),
    Status.AWAITING_APPROVAL: frozenset({Status.PENDING, Status.CANCELLED}),
}


def can_transition(current: Status, new: Status) -> bool:
    """Whether ``current`` → ``new`` is in the allowed graph."""
    return new in ALLOWED[current]
