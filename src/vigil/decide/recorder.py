"""Record what evaluations found: load each pair's state and the guard inputs, ask the
decision core (:func:`vigil.decide.core.decide`) about each observation in order, then
create the actions it decided on and write the pairs' states and the decisions
(:mod:`vigil.decide.outcomes`) -- in the caller's transaction.

Each call makes two passes over the observations with the same pure core: a first one that
assumes no silence, pause or limit, to learn which policies' breakers and blast radius can
matter (their guard rows are then locked in name order, and counted), and the real one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.actions.store import Action, PairActions, pair_states, policy_key
from vigil.decide import core, episodes
from vigil.decide.breaker import Guard, breaker_opened, is_limited, locked_limits
from vigil.decide.core import NO_LIMITS, Guards, Limits, PairState, Step
from vigil.decide.episodes import Episode, Pair
from vigil.decide.observations import Observation, Settled, verdicts
from vigil.decide.outcomes import DecisionBook, create_actions_for
from vigil.decide.pause import get_state
from vigil.decide.reasons import Suppressed, outcome_of
from vigil.decide.silence_rules import SilenceRule, silencing
from vigil.decide.silences import active_rules
from vigil.decide.state import Change
from vigil.notify.events import NotificationEvent
from vigil.notify.store import record_notification
from vigil.observability.audit import Actor
from vigil.observability.metrics import VigilMetrics
from vigil.policy.evaluator import Violation
from vigil.policy.models import PolicySpec


@dataclass(frozen=True, slots=True)
class Decision:
    """What became of one violation."""

    violation: Violation
    suppressed: Suppressed | None
    action: Action | None
    episode_action_id: int | None = None
    """Set when the violation belongs to an episode that already acted (and whose action
    has ended): nothing was attempted."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """What :func:`record_observations` did."""

    decisions: list[Decision]
    firing_changed: bool
    """Whether a pair started or stopped firing: the caller calls
    :func:`vigil.decide.episodes.bump_firing` before it commits (last, so that no lock is
    taken after that row's)."""


@dataclass(slots=True)
class _Pass:
    """One walk of the observations through the core, with the guard inputs it reads and
    the counts and open actions it changes as it decides."""

    states: dict[Pair, PairState]
    opened: dict[Pair, PairActions]
    counted: dict[str, Limits] | None
    """The counts of each limited policy; None in a trial pass (no limit assumed)."""
    paused: bool = False
    rules: Sequence[SilenceRule] = ()
    guard_rows: dict[str, Guard] = field(default_factory=dict)
    steps: list[Step | None] = field(default_factory=list)

    def run(self, observations: Sequence[Observation], now: datetime) -> None:
        for observation in observations:
            pair = (observation.policy.name, observation.target)
            state = self.states.get(pair, PairState())
            if (
                isinstance(observation, Settled)
                and observation.episode is not None
                and observation.episode != state.phase.episode
            ):
                self.steps.append(None)  # another episode began since the caller looked
                continue
            verdict, cleared = verdicts(observation)
            step = core.decide(
                state, verdict, partial(self._guards, observation, now), now, cleared=cleared
            )
            self.states[pair] = step.state
            if step.decision is not None and step.decision.acts:
                self.opened[pair] = PairActions(open_action_id=-1)  # opened by this decision
                name = observation.policy.name
                if self.counted is not None and name in self.counted:
                    self.counted[name] = self.counted[name].after_acting()
            self.steps.append(step)

    def _guards(self, observation: Observation, now: datetime) -> Guards:
        policy, target = observation.policy, observation.target
        actions = self.opened.get((policy.name, target), PairActions())
        tags = observation.tags if isinstance(observation, Violation) else {}
        return Guards(
            enabled=policy.enabled,
            auto_remediate=policy.auto_remediate,
            shadow=policy.shadow,
            cooldown_seconds=policy.cooldown_seconds,
            open_action=actions.open_action_id is not None,
            last_ended_at=actions.last_ended_at,
            silenced=bool(self.rules)
            and silencing(self.rules, policy=policy.name, target=target, tags=tags, now=now)
            is not None,
            paused=self.paused,
            limits=self._limits(policy),
        )

    def _limits(self, policy: PolicySpec) -> Limits:
        if self.counted is None:
            return NO_LIMITS
        # The trial passes found every limited policy whose limits can matter: they were
        # counted. No other acts in this pass (checked after it).
        return self.counted.get(policy.name, NO_LIMITS)

    async def breaker_opened(
        self, conn: AsyncConnection, observation: Violation, episode: Episode, now: datetime
    ) -> None:
        """The breaker held back an attempt of the observation's policy (in ``episode``)."""
        name = observation.policy.name
        assert self.counted is not None
        self.guard_rows[name] = await breaker_opened(
            conn,
            guard=self.guard_rows[name],
            policy=observation.policy,
            target=observation.target,
            limits=self.counted[name],
            now=now,
            tags=episode.tags,
            episode=episode.phase.episode,
        )


async def record_observations(
    conn: AsyncConnection,
    *,
    observations: Sequence[Observation],
    now: datetime,
    actor: Actor,
    wanted: Collection[NotificationEvent] = frozenset(),
) -> Recorded:
    """Apply ``observations`` in order to their pairs' states; the decision on each violation.

    The actions decided on are created together; should another process have opened one of
    them meanwhile, they are created one by one instead, and that one is suppressed as
    ``action already open``. An episode that ends is told as an ``episode_resolved``
    notification when ``wanted`` (the events the notifications file records) holds it.
    """
    stored = await episodes.load(conn, pairs=[(o.policy.name, o.target) for o in observations])
    before = {pair: episodes.snapshot(e) for pair, e in stored.items()}
    decided = await _decide(conn, observations, stored, now)
    created = await create_actions_for(conn, observations, decided.steps, now, actor)
    results = await _apply(conn, observations, decided, created, stored, now, wanted)
    dirty = [
        e
        for pair, e in stored.items()
        if before.get(pair, episodes.snapshot(Episode(*pair))) != episodes.snapshot(e)
    ]
    await episodes.save(conn, episodes=dirty, now=now)
    firing_changed = any(
        s is not None and s.change in (Change.FIRED, Change.RESOLVED) for s in decided.steps
    )
    return Recorded(results, firing_changed)


def _decided(
    observations: Sequence[Observation], steps: Sequence[Step | None]
) -> list[tuple[Observation, core.Decision]]:
    """Each observation that got a decision, with it."""
    return [
        (o, s.decision)
        for o, s in zip(observations, steps, strict=True)
        if s is not None and s.decision is not None
    ]


async def _decide(
    conn: AsyncConnection,
    observations: Sequence[Observation],
    stored: dict[Pair, Episode],
    now: datetime,
) -> _Pass:
    """Walk the observations through the core: first assuming no silence, pause or limit
    (do any attempt to act?), then, if a limited policy would act, with the silences and
    the pause (which of them still act, so their guard rows are locked and counted), and
    last with every guard input."""
    opened = await _opened(conn, observations)
    states = {pair: e.state for pair, e in stored.items()}
    trial = _Pass(dict(states), dict(opened), None)
    trial.run(observations, now)
    tried = _decided(observations, trial.steps)
    counted: dict[str, Limits] = {}
    real = _Pass(states, opened, counted)
    if any(o.policy.auto_remediate and o.policy.enabled and d.guarded for o, d in tried):
        real.paused = (await get_state(conn)).paused
        real.rules = await active_rules(conn, now=now)
        if any(d.acts and is_limited(o.policy) for o, d in tried):
            # Which limited policies still act once the silences and the pause are known:
            # only their guard rows are locked (each lock holds up every other writer).
            again = _Pass(dict(states), dict(opened), None, real.paused, real.rules)
            again.run(observations, now)
            acting = _decided(observations, again.steps)
            acted = [o.policy for o, d in acting if d.acts and is_limited(o.policy)]
            for name, (row, limits) in (await locked_limits(conn, policies=acted, now=now)).items():
                real.guard_rows[name], counted[name] = row, limits
    real.run(observations, now)
    unchecked = {
        o.policy.name
        for o, d in _decided(observations, real.steps)
        if d.acts and is_limited(o.policy) and o.policy.name not in counted
    }
    if unchecked:
        raise AssertionError(f"limits not counted for {sorted(unchecked)}")
    return real


async def _apply(
    conn: AsyncConnection,
    observations: Sequence[Observation],
    decided: _Pass,
    created: dict[int, Action],
    stored: dict[Pair, Episode],
    now: datetime,
    wanted: Collection[NotificationEvent],
) -> list[Decision]:
    """Adopt each pair's new state, note a breaker that opened and an episode that ended,
    and write the decisions."""
    book = DecisionBook()
    results: list[Decision] = []
    lost: set[tuple[Pair, int]] = set()
    for index, (observation, step) in enumerate(zip(observations, decided.steps, strict=True)):
        if step is None:
            continue
        pair = (observation.policy.name, observation.target)
        episode = stored.setdefault(pair, Episode(*pair))
        prior = None if step.change is Change.FIRED else episode.reason
        episode.take(step.state)
        await _resolved(conn, step, observation.policy, episode, now, wanted)
        if not isinstance(observation, Violation):
            continue
        if step.change is Change.FIRED:
            episode.tags = dict(observation.tags) or None  # a new episode: its first tags
        if step.decision is None:  # the episode acted already and its action ended
            results.append(Decision(observation, None, None, episode.action_id))
            continue
        key = (pair, step.state.phase.episode)
        decision = _raced(step.decision, key, index in created, lost, prior)
        action = created.get(index)
        if action is not None:
            episode.action_id = action.id
        elif decision.reason is Suppressed.CIRCUIT_OPEN and decision.guarded:
            await decided.breaker_opened(conn, observation, episode, now)
        book.add(observation, episode, decision, action)
        results.append(Decision(observation, decision.reason, action))
    for pair, episode in stored.items():
        if (pair, episode.phase.episode) in lost:
            episode.acted, episode.reason = False, Suppressed.ALREADY_OPEN.value
    await book.write(conn, now)
    return results


async def _resolved(
    conn: AsyncConnection,
    step: Step,
    policy: PolicySpec,
    episode: Episode,
    now: datetime,
    wanted: Collection[NotificationEvent],
) -> None:
    """The ``episode_resolved`` notification when ``step`` ended the pair's episode and it
    is wanted."""
    if step.change is not Change.RESOLVED or NotificationEvent.EPISODE_RESOLVED not in wanted:
        return
    number, fired = episode.phase.episode, episode.phase.fired_at
    lasted = None if fired is None else (now - fired).total_seconds()
    await record_notification(
        conn,
        now=now,
        event=NotificationEvent.EPISODE_RESOLVED,
        policy_name=policy.name,
        target=episode.target,
        action_id=episode.action_id,
        reason=f"policy {policy.name} no longer fires for {episode.target}: episode {number}"
        " resolved",
        details={
            "episode": number,
            "fired_at": None if fired is None else fired.isoformat(),
            "duration_seconds": lasted,
        },
        severity=policy.severity,
        tags=episode.tags,
        episode=number,
    )


def _raced(
    decision: core.Decision,
    key: tuple[Pair, int],
    created: bool,
    lost: set[tuple[Pair, int]],
    prior: str | None,
) -> core.Decision:
    """The decision once the actions are created: one that lost a race with another
    process (which opened the pair's action first) is ``action already open`` (a repeat if
    the episode's last decision said so), and so are the violations of its episode after
    it."""
    if decision.acts and not created:
        lost.add(key)
        repeat = prior == Suppressed.ALREADY_OPEN.value
        return core.Decision(Suppressed.ALREADY_OPEN, repeat=repeat, guarded=True)
    if key in lost and decision.reason is Suppressed.ALREADY_OPEN:
        return replace(decision, repeat=True)
    return decision


async def _opened(
    conn: AsyncConnection, observations: Sequence[Observation]
) -> dict[Pair, PairActions]:
    """The open action and last end of each pair whose policy may act, by (policy, target)."""
    acting = {
        (o.policy.name, o.target)
        for o in observations
        if isinstance(o, Violation) and o.policy.auto_remediate
    }
    found = await pair_states(conn, pairs=[(policy_key(name), t) for name, t in acting])
    return {(name, t): found.get((policy_key(name), t), PairActions()) for name, t in acting}


def count_decisions(metrics: VigilMetrics, decisions: Sequence[Decision]) -> None:
    """Count violations, decisions and created actions in the Prometheus metrics."""
    for d in decisions:
        policy = d.violation.policy
        metrics.policy_violations_total.labels(
            policy_name=policy.name, severity=policy.severity
        ).inc()
        if d.episode_action_id is not None:
            continue  # the episode acted already: nothing was decided
        metrics.decisions_total.labels(
            outcome=outcome_of(d.suppressed),
            reason="" if d.suppressed is None else d.suppressed.value,
        ).inc()
        if d.action is not None:
            metrics.actions_total.labels(action=d.action.action, status=d.action.status).inc()
