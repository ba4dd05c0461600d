"""Every Redis key Vigil uses, built from the configured prefix. No other module names a key."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The Redis names of one queue, all under ``prefix`` (setting ``VIGIL_QUEUE_PREFIX``).

    Two Vigil installations sharing a Redis stay apart by using different prefixes; every
    key of a prefix matches the pattern :attr:`pattern`.
    """

    prefix: str = "vigil"

    def __post_init__(self) -> None:
        if not self.prefix:
            raise ValueError("the queue prefix must not be empty")

    @property
    def stream(self) -> str:
        """The work stream: one entry per task ready or handed out and not yet settled."""
        return f"{self.prefix}:queue:tasks"

    @property
    def group(self) -> str:
        """The consumer group every worker reads :attr:`stream` through (a name, not a key)."""
        return f"{self.prefix}:workers"

    @property
    def delayed(self) -> str:
        """Sorted set of delayed retries: member = task JSON, score = due unix time."""
        return f"{self.prefix}:queue:delayed"

    @property
    def dead(self) -> str:
        """The dead-letter stream: task JSON, error, dead_at, attempts per entry."""
        return f"{self.prefix}:queue:dead"

    @property
    def dead_index(self) -> str:
        """Hash task_id → dead-letter entry id, so a task is dead-lettered at most once."""
        return f"{self.prefix}:queue:dead:index"

    @property
    def stats(self) -> str:
        """Hash of the shared counters and the last processed task."""
        return f"{self.prefix}:queue:stats"

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of this prefix."""
        return f"{self.prefix}:*"

    def all(self) -> tuple[str, ...]:
        """Every key of the queue, e.g. to delete them all."""
        return (self.stream, self.delayed, self.dead, self.dead_index, self.stats)
