"""Notification events and delivery statuses. Their values live here only."""

from __future__ import annotations

from enum import StrEnum


class NotificationEvent(StrEnum):
    """What a notification tells about. A closed set: receivers switch on it."""

    BREAKER_OPENED = "breaker_opened"
    """A policy's circuit breaker opened: it stops acting until it closes or is reset."""
    ESCALATION_EXHAUSTED = "escalation_exhausted"
    """A policy tried every action of its escalation and the violation remains."""
    ACTION_FAILED = "action_failed"
    """An action failed for good: its last attempt failed, or the error was permanent. Its
    task is in the dead letter, to be re-driven once the cause is fixed."""
    ACTION_DEAD_LETTERED = "action_dead_lettered"
    """An action's task was delivered too often without being settled (workers crashing on
    it): the action failed without running and its task went to the dead letter."""
    APPROVAL_WAITING = "approval_waiting"
    """An action awaits an operator's approval."""
    ACTION_COMPLETED = "action_completed"
    """An action's remediation ran and succeeded (its verification, if any, comes later)."""
    ACTION_VERIFIED = "action_verified"
    """The violation an action answered resolved within the policy's verification window."""
    ACTION_UNVERIFIED = "action_unverified"
    """The violation an action answered outlived the verification window: it did not help."""
    EPISODE_RESOLVED = "episode_resolved"
    """A (policy, target) pair's violation episode ended: the condition holds no more. Pages
    opened for the episode are resolved with it."""
    AUTOMATION_PAUSED = "automation_paused"
    """An operator paused automation: no new action is created until it is resumed."""
    AUTOMATION_RESUMED = "automation_resumed"
    """Automation was resumed."""


NEEDS_A_PERSON = frozenset(
    {
        NotificationEvent.BREAKER_OPENED,
        NotificationEvent.ESCALATION_EXHAUSTED,
        NotificationEvent.ACTION_FAILED,
        NotificationEvent.ACTION_DEAD_LETTERED,
        NotificationEvent.APPROVAL_WAITING,
    }
)
"""The events that need a person: always recorded, and sent by a route that names no events."""

ALWAYS_RECORDED = NEEDS_A_PERSON | {
    NotificationEvent.AUTOMATION_PAUSED,
    NotificationEvent.AUTOMATION_RESUMED,
}
"""The events recorded whatever the routes say: those that need a person, and an operator's
pause or resume of automation (rare, and everyone acting on Vigil's messages should know).
The others are recorded only when a route names them
(:meth:`vigil.notify.config.Notifications.wants`)."""


class DeliveryStatus(StrEnum):
    """Where a notification is in its delivery to the channels its routes send it to."""

    PENDING = "pending"
    """Not yet taken by every channel; the next try is due at ``next_attempt_at`` (a
    retry, or the end of a route's ``group_wait``)."""
    DELIVERED = "delivered"
    """Every channel took it (or held it back as a repeat within ``repeat_interval``). Final."""
    FAILED = "failed"
    """Some channel still refused it after the last attempt. Final."""
    NONE = "none"
    """No route sent it to any channel when it came up for sending. Final."""
