"""The decision core: what one evaluation of a (policy, target) pair does.

Pure: the pair's state, the condition's verdict (and its ``clear`` condition's), the guard
inputs and ``now`` in; the pair's next state and the decision out. Every source of
violations -- ingest, the runner's sweep, verification's escalations, the backtest, the
evaluate dry run -- calls :func:`decide`; none decides on its own. The callers load the
inputs and write the results.

The rules, each decided here and nowhere else:

- The pair walks ``ok`` → ``pending`` → ``firing`` → ``resolved`` (:func:`vigil.decide.state.step`).
- The policy's own action is attempted once per firing episode, on the move into ``firing``.
- While the episode fires, a later violation tries again if the last attempt was held back
  by something that ends (a silence, the pause, shadow mode, ``auto_remediate: false``, the
  blast radius, an open action); one held back by the cooldown or the circuit breaker
  (:data:`STICKY`) repeats that reason for the rest of the episode. Once the episode acted,
  a violation while its action is open is ``action already open``; after the action ended,
  nothing is attempted (verification and escalation take over).
- An escalation (the episode's action failed its verification while the pair still fires)
  is an attempt of the next action within the same episode: the guards apply, except the
  cooldown, which is between episodes.
- The same suppression repeated within an episode is one decision that counts again
  (:attr:`Decision.repeat`).
- The guards, in order: disabled, not auto-remediated, an open action, the cooldown, a
  silence, the pause, shadow mode, then the circuit breaker and the blast radius. A silence,
  the pause or shadow mode is named only when it is what stops the action.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from vigil.decide.reasons import STICKY, Suppressed, outcome_of
from vigil.decide.state import Change, PairPhase, Phase, step
from vigil.policy.history import Verdict

HOUR = timedelta(hours=1)


class Trigger(StrEnum):
    """What asks for a decision."""

    EVALUATION = "evaluation"
    """A condition was judged (ingest, the runner, the backtest)."""
    ESCALATION = "escalation"
    """The episode's last action failed its verification and the pair still fires."""


@dataclass(frozen=True, slots=True)
class PairState:
    """What the core needs to know of one (policy, target): its phase and what its current
    episode has done."""

    phase: PairPhase = field(default_factory=PairPhase)
    acted: bool = False
    """Whether the episode's own action was created."""
    reason: Suppressed | None = None
    """The reason of the episode's last suppression (None once it acted)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The policy's circuit breaker and blast radius, with the counts read for them."""

    max_actions_per_hour: int | None = None
    actions_last_hour: int = 0
    """Actions the policy created within the hour (since its breaker's last reset)."""
    max_concurrent_targets: int | None = None
    open_targets: int = 0
    """Targets with an open action of the policy."""

    @property
    def limited(self) -> bool:
        return self.max_actions_per_hour is not None or self.max_concurrent_targets is not None

    def after_acting(self) -> Limits:
        """The counts once one more action is created."""
        return replace(
            self,
            actions_last_hour=self.actions_last_hour + 1,
            open_targets=self.open_targets + 1,
        )


NO_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Guards:
    """The guard inputs of one decision, read by the caller."""

    enabled: bool = True
    auto_remediate: bool = True
    shadow: bool = False
    cooldown_seconds: float = 0.0
    open_action: bool = False
    """An action of the pair is open (awaiting approval, pending or running)."""
    last_ended_at: datetime | None = None
    """When the pair's last action ended, for the cooldown."""
    silenced: bool = False
    paused: bool = False
    limits: Limits = NO_LIMITS


@dataclass(frozen=True, slots=True)
class Decision:
    """What became of one violation that asked for a decision."""

    reason: Suppressed | None
    """None: act (create the action); else why not."""
    repeat: bool = False
    """The episode's last decision had the same reason: count it again on that row."""
    guarded: bool = False
    """The guards were judged for it (False: the reason repeats the episode's)."""

    @property
    def acts(self) -> bool:
        return self.reason is None

    @property
    def outcome(self) -> str:
        return outcome_of(self.reason)

    @property
    def held(self) -> bool:
        """Held back by something that ends: the episode tries again later."""
        return self.reason is not None and self.reason not in STICKY


@dataclass(frozen=True, slots=True)
class Step:
    """The result of :func:`decide`."""

    state: PairState
    change: Change | None = None
    decision: Decision | None = None
    """None when nothing was decided."""
    acted_before: bool = False
    """A violation of an episode that already acted and whose action has ended: nothing is
    attempted (verification and escalation take over)."""


def guard(guards: Guards, now: datetime, *, cooldown: bool = True) -> Suppressed | None:
    """None when an action may be created, else the first guard that stops it."""
    if not guards.enabled:
        return Suppressed.DISABLED
    if not guards.auto_remediate:
        return Suppressed.NOT_AUTO_REMEDIATED
    if guards.open_action:
        return Suppressed.ALREADY_OPEN
    if (
        cooldown
        and guards.last_ended_at is not None
        and now - guards.last_ended_at < timedelta(seconds=guards.cooldown_seconds)
    ):
        return Suppressed.COOLDOWN
    if guards.silenced:
        return Suppressed.SILENCED
    if guards.paused:
        return Suppressed.PAUSED
    if guards.shadow:
        return Suppressed.SHADOW
    limits = guards.limits
    if (
        limits.max_actions_per_hour is not None
        and limits.actions_last_hour >= limits.max_actions_per_hour
    ):
        return Suppressed.CIRCUIT_OPEN
    if (
        limits.max_concurrent_targets is not None
        and limits.open_targets >= limits.max_concurrent_targets
    ):
        return Suppressed.MAX_CONCURRENT_TARGETS
    return None


GuardsIn = Guards | Callable[[], Guards]
"""The guard inputs, or a pure function that gives them: called only when a guard is
judged, so a violation that needs none (most of a firing episode's) costs nothing more."""


def decide(
    state: PairState,
    verdict: Verdict,
    guards: GuardsIn,
    now: datetime,
    *,
    cleared: Verdict | None = None,
    trigger: Trigger = Trigger.EVALUATION,
) -> Step:
    """The pair's next state and the decision on this evaluation.

    ``verdict`` is the condition's; ``cleared`` the ``clear`` condition's (None when the
    policy has none, or it was not judged). An escalation passes ``Verdict.TRUE``.
    """
    if trigger is Trigger.ESCALATION:
        return _attempt(state, _given(guards), now, cooldown=False)
    if verdict is not Verdict.TRUE:
        phase, change = step(state.phase, verdict, cleared, now)
        return Step(replace(state, phase=phase), change)
    if state.phase.phase is not Phase.FIRING:
        phase, change = step(state.phase, verdict, None, now)
        fired = _attempt(PairState(phase=phase), _given(guards), now)
        return replace(fired, change=change)
    if state.acted:
        if not _given(guards).open_action:
            return Step(state, acted_before=True)
        return _suppress(state, Suppressed.ALREADY_OPEN, guarded=False)
    if state.reason is not None and state.reason in STICKY:
        return _suppress(state, state.reason, guarded=False)
    return _attempt(state, _given(guards), now)


def _given(guards: GuardsIn) -> Guards:
    return guards if isinstance(guards, Guards) else guards()


def _attempt(state: PairState, guards: Guards, now: datetime, *, cooldown: bool = True) -> Step:
    reason = guard(guards, now, cooldown=cooldown)
    if reason is None:
        return Step(replace(state, acted=True, reason=None), decision=Decision(None, guarded=True))
    return _suppress(state, reason, guarded=True)


def _suppress(state: PairState, reason: Suppressed, *, guarded: bool) -> Step:
    return Step(
        replace(state, reason=reason),
        decision=Decision(reason, repeat=state.reason is reason, guarded=guarded),
    )
