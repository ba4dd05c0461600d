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


class DeliveryStatus(StrEnum):
    """Where a notification is in its delivery to the configured webhooks."""

    PENDING = "pending"
    """Not yet sent to every webhook; the next try is due at ``next_attempt_at``."""
    DELIVERED = "delivered"
    """Every webhook answered 2xx. Final."""
    FAILED = "failed"
    """Some webhook still refused it after the last attempt. Final."""
    NONE = "none"
    """No webhook was configured when it came up for sending. Final."""
