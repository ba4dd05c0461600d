"""The state machine of one (policy, target): ``ok`` → ``pending`` → ``firing`` → ``resolved``.

Pure: the previous state, the condition's verdict (and the ``clear`` condition's, if the
policy has one) and ``now`` in; the next state and what happened out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from vigil.policy.history import Verdict


class Phase(StrEnum):
    OK = "ok"
    PENDING = "pending"
    """The condition holds, but not yet for as long as its ``for`` asks."""
    FIRING = "firing"
    RESOLVED = "resolved"


class Change(StrEnum):
    """What a step did."""

    PENDING = "pending"
    """The condition started to hold; its ``for`` is not met yet."""
    FIRED = "fired"
    """A new firing episode began: the moment the policy's own action is created."""
    RESOLVED = "resolved"
    """The episode ended (``clear`` holds, or without one the condition no longer does)."""
    CLEARED = "cleared"
    """A pending condition stopped holding before it fired."""


@dataclass(frozen=True, slots=True)
class PairPhase:
    """The persisted state of one (policy, target)."""

    phase: Phase = Phase.OK
    episode: int = 0
    """How many firing episodes the pair has had; the current one while firing."""
    since: datetime | None = None
    """When the pair entered ``phase``."""
    pending_since: datetime | None = None
    fired_at: datetime | None = None
    resolved_at: datetime | None = None


def step(
    state: PairPhase, verdict: Verdict, cleared: Verdict | None, now: datetime
) -> tuple[PairPhase, Change | None]:
    """The state after an evaluation.

    ``verdict`` is the condition's; ``cleared`` the ``clear`` condition's (None when the
    policy has none). Only :attr:`Change.FIRED` starts an episode; while firing, a policy
    without ``clear`` resolves when its condition no longer holds (pending counts as
    holding), one with ``clear`` only when ``clear`` holds.
    """
    if state.phase is Phase.FIRING:
        done = cleared is Verdict.TRUE if cleared is not None else verdict is Verdict.FALSE
        if done:
            return (
                replace(state, phase=Phase.RESOLVED, since=now, resolved_at=now),
                Change.RESOLVED,
            )
        return state, None
    if verdict is Verdict.TRUE:
        return (
            PairPhase(
                phase=Phase.FIRING,
                episode=state.episode + 1,
                since=now,
                pending_since=state.pending_since if state.phase is Phase.PENDING else None,
                fired_at=now,
                resolved_at=state.resolved_at,
            ),
            Change.FIRED,
        )
    if verdict is Verdict.PENDING:
        if state.phase is Phase.PENDING:
            return state, None
        return (
            replace(state, phase=Phase.PENDING, since=now, pending_since=now),
            Change.PENDING,
        )
    if state.phase is Phase.PENDING:
        return replace(state, phase=Phase.OK, since=now, pending_since=None), Change.CLEARED
    return state, None
