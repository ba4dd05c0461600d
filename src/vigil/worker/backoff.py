"""Retry policy: how many attempts an action gets and how long to wait between them. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_attempts`` tries in all; the wait before try n+1 grows as base * 2**(n-1), capped."""

    max_attempts: int
    base_seconds: float
    max_seconds: float

    def exhausted(self, attempts_used: int) -> bool:
        """Whether ``attempts_used`` tries (counted since the last redrive) spend the budget."""
        return attempts_used >= self.max_attempts

    def delay(self, attempts_used: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts_used``-th failed try, with "equal jitter".

        Half of the exponential delay is fixed and half is random, so retries of actions that
        failed together spread out (no thundering herd) and never come sooner than half the
        nominal delay.
        """
        exponent = min(max(attempts_used - 1, 0), 62)
        nominal = min(self.max_seconds, self.base_seconds * 2.0**exponent)
        return nominal / 2 + (rng or random).uniform(0, nominal / 2)
