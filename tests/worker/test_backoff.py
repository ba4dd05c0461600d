"""Retry policy: budget and exponential backoff with jitter, table-driven."""

from __future__ import annotations

import random

import pytest

from vigil.worker.backoff import RetryPolicy

POLICY = RetryPolicy(max_attempts=3, base_seconds=2, max_seconds=20)


@pytest.mark.parametrize(
    ("used", "nominal"),
    [(1, 2), (2, 4), (3, 8), (4, 16), (5, 20), (60, 20), (10_000, 20)],
)
def test_delay_doubles_from_the_base_up_to_the_cap_with_equal_jitter(
    used: int, nominal: float
) -> None:
    rng = random.Random(7)
    delays = [POLICY.delay(used, rng) for _ in range(200)]
    assert all(nominal / 2 <= d <= nominal for d in delays)
    assert max(delays) - min(delays) > nominal / 4, "the jitter spreads retries out"


@pytest.mark.parametrize(("used", "exhausted"), [(0, False), (1, False), (2, False), (3, True)])
def test_the_budget_counts_attempts_used(used: int, exhausted: bool) -> None:
    assert POLICY.exhausted(used) is exhausted
