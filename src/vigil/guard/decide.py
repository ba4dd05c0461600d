"""Decide whether a violation becomes an action, from state read by the caller."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from vigil.guard.reasons import Suppressed


@dataclass(frozen=True, slots=True)
class PairState:
    """What the store knows about one (policy, target) pair."""

    open_action_id: int | None = None
    last_ended_at: datetime | None = None


def decide(
    *,
    auto_remediate: bool,
    enabled: bool,
    cooldown_seconds: float,
    state: PairState,
    now: datetime,
    silenced: bool = False,
    paused: bool = False,
    shadow: bool = False,
) -> Suppressed | None:
    """None when an action may be created, else the reason it may not.

    A silence, a pause or a shadow policy is named only when it is what stops the action: a
    violation that would not have acted anyway keeps its own reason."""
    if not enabled:
        return Suppressed.DISABLED
    if not auto_remediate:
        return Suppressed.NOT_AUTO_REMEDIATED
    if state.open_action_id is not None:
        return Suppressed.ALREADY_OPEN
    if state.last_ended_at is not None and now - state.last_ended_at < timedelta(
        seconds=cooldown_seconds
    ):
        return Suppressed.COOLDOWN
    if silenced:
        return Suppressed.SILENCED
    if paused:
        return Suppressed.PAUSED
    if shadow:
        return Suppressed.SHADOW
    return None


def limit_reason(
    *,
    max_actions_per_hour: int | None,
    actions_last_hour: int,
    max_concurrent_targets: int | None,
    open_targets: int,
) -> Suppressed | None:
    """None when one more action fits the policy's circuit breaker and blast radius (counts
    read under the policy's guard-row lock), else the reason it does not."""
    if max_actions_per_hour is not None and actions_last_hour >= max_actions_per_hour:
        return Suppressed.CIRCUIT_OPEN
    if max_concurrent_targets is not None and open_targets >= max_concurrent_targets:
        return Suppressed.MAX_CONCURRENT_TARGETS
    return None
