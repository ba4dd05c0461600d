"""Table-driven tests of the decision core: every (pair state x verdict x guard) case that
ingest, the runner, verification and the backtest rely on."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vigil.decide.core import Decision, Guards, Limits, PairState, Trigger, decide, guard
from vigil.decide.reasons import Suppressed
from vigil.decide.state import Change, PairPhase, Phase
from vigil.policy.history import Verdict

NOW = datetime(2026, 1, 19, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=5)

OPEN = Guards(open_action=True)
S = Suppressed

# The guards, one at a time, and what each is named as.
BLOCKING: list[tuple[str, Guards, Suppressed | None]] = [
    ("none", Guards(), None),
    ("disabled", Guards(enabled=False), S.DISABLED),
    ("not auto", Guards(auto_remediate=False), S.NOT_AUTO_REMEDIATED),
    ("open action", OPEN, S.ALREADY_OPEN),
    ("cooldown", Guards(cooldown_seconds=600, last_ended_at=EARLIER), S.COOLDOWN),
    ("cooldown over", Guards(cooldown_seconds=60, last_ended_at=EARLIER), None),
    ("silenced", Guards(silenced=True), S.SILENCED),
    ("paused", Guards(paused=True), S.PAUSED),
    ("shadow", Guards(shadow=True), S.SHADOW),
    ("breaker", Guards(limits=Limits(max_actions_per_hour=2, actions_last_hour=2)), S.CIRCUIT_OPEN),
    ("breaker room", Guards(limits=Limits(max_actions_per_hour=2, actions_last_hour=1)), None),
    (
        "blast radius",
        Guards(limits=Limits(max_concurrent_targets=1, open_targets=1)),
        S.MAX_CONCURRENT_TARGETS,
    ),
]


def firing(episode: int = 3, *, acted: bool = False, reason: Suppressed | None = None) -> PairState:
    return PairState(
        phase=PairPhase(phase=Phase.FIRING, episode=episode, since=EARLIER, fired_at=EARLIER),
        acted=acted,
        reason=reason,
    )


OK = PairState()
PENDING = PairState(phase=PairPhase(phase=Phase.PENDING, since=EARLIER, pending_since=EARLIER))
RESOLVED = PairState(
    phase=PairPhase(phase=Phase.RESOLVED, episode=2, since=EARLIER, resolved_at=EARLIER),
    acted=True,
)


@pytest.mark.parametrize(("name", "guards", "reason"), BLOCKING, ids=[b[0] for b in BLOCKING])
@pytest.mark.parametrize("start", [OK, PENDING, RESOLVED], ids=["ok", "pending", "resolved"])
def test_a_violation_starts_an_episode_and_attempts_its_action(
    name: str, guards: Guards, reason: Suppressed | None, start: PairState
) -> None:
    step = decide(start, Verdict.TRUE, guards, NOW)
    assert step.change is Change.FIRED
    assert step.state.phase.phase is Phase.FIRING
    assert step.state.phase.episode == start.phase.episode + 1
    assert step.decision == Decision(reason, repeat=False, guarded=True)
    assert step.state.acted is (reason is None)
    assert step.state.reason is reason


@pytest.mark.parametrize(("name", "guards", "reason"), BLOCKING, ids=[b[0] for b in BLOCKING])
@pytest.mark.parametrize(
    "held_by",
    [None, S.SILENCED, S.PAUSED, S.SHADOW, S.NOT_AUTO_REMEDIATED, S.ALREADY_OPEN],
    ids=["never tried", "silenced", "paused", "shadow", "not auto", "open"],
)
def test_a_firing_episode_held_back_by_what_ends_tries_again(
    name: str, guards: Guards, reason: Suppressed | None, held_by: Suppressed | None
) -> None:
    state = firing(reason=held_by)
    step = decide(state, Verdict.TRUE, guards, NOW)
    assert step.change is None
    assert step.state.phase == state.phase
    assert step.decision == Decision(
        reason, repeat=reason is not None and reason is held_by, guarded=True
    )


@pytest.mark.parametrize(("name", "guards", "reason"), BLOCKING, ids=[b[0] for b in BLOCKING])
@pytest.mark.parametrize("sticky", [S.COOLDOWN, S.CIRCUIT_OPEN])
def test_a_cooldown_or_breaker_holds_for_the_rest_of_the_episode(
    name: str, guards: Guards, reason: Suppressed | None, sticky: Suppressed
) -> None:
    step = decide(firing(reason=sticky), Verdict.TRUE, guards, NOW)
    assert step.decision == Decision(sticky, repeat=True, guarded=False)
    assert step.state.reason is sticky
    assert not step.state.acted


@pytest.mark.parametrize(("name", "guards", "reason"), BLOCKING, ids=[b[0] for b in BLOCKING])
def test_an_episode_that_acted_attempts_nothing_more(
    name: str, guards: Guards, reason: Suppressed | None
) -> None:
    state = firing(acted=True)
    step = decide(state, Verdict.TRUE, guards, NOW)
    if guards.open_action:
        # Its action is still open: every later violation says so, once and then again.
        assert step.decision == Decision(S.ALREADY_OPEN, repeat=False, guarded=False)
        again = decide(step.state, Verdict.TRUE, guards, NOW)
        assert again.decision == Decision(S.ALREADY_OPEN, repeat=True, guarded=False)
        assert again.state.acted
    else:
        # Its action ended: verification and escalation take over.
        assert step.decision is None
        assert step.acted_before
        assert step.state == state


@pytest.mark.parametrize(
    ("state", "verdict", "cleared", "phase", "change"),
    [
        (OK, Verdict.FALSE, None, Phase.OK, None),
        (OK, Verdict.PENDING, None, Phase.PENDING, Change.PENDING),
        (PENDING, Verdict.PENDING, None, Phase.PENDING, None),
        (PENDING, Verdict.FALSE, None, Phase.OK, Change.CLEARED),
        (firing(), Verdict.FALSE, None, Phase.RESOLVED, Change.RESOLVED),
        # Pending still counts as holding for a firing pair.
        (firing(), Verdict.PENDING, None, Phase.FIRING, None),
        # With a clear condition, only clear resolves the pair.
        (firing(), Verdict.FALSE, Verdict.FALSE, Phase.FIRING, None),
        (firing(), Verdict.FALSE, Verdict.TRUE, Phase.RESOLVED, Change.RESOLVED),
        (firing(acted=True), Verdict.FALSE, None, Phase.RESOLVED, Change.RESOLVED),
        (RESOLVED, Verdict.FALSE, None, Phase.RESOLVED, None),
    ],
)
def test_a_verdict_that_does_not_hold_moves_the_state_and_decides_nothing(
    state: PairState,
    verdict: Verdict,
    cleared: Verdict | None,
    phase: Phase,
    change: Change | None,
) -> None:
    step = decide(state, verdict, Guards(), NOW, cleared=cleared)
    assert step.decision is None
    assert step.state.phase.phase is phase
    assert step.change is change
    assert step.state.acted is state.acted
    assert step.state.phase.episode == state.phase.episode


def test_an_episode_resolved_and_fired_again_forgets_the_last_one() -> None:
    state = firing(acted=True)
    resolved = decide(state, Verdict.FALSE, Guards(), NOW).state
    again = decide(resolved, Verdict.TRUE, OPEN, NOW + timedelta(seconds=1))
    assert again.change is Change.FIRED
    assert again.state.phase.episode == 4
    assert again.decision == Decision(S.ALREADY_OPEN, repeat=False, guarded=True)
    assert not again.state.acted


@pytest.mark.parametrize(("name", "guards", "reason"), BLOCKING, ids=[b[0] for b in BLOCKING])
@pytest.mark.parametrize(
    "last", [None, S.COOLDOWN, S.CIRCUIT_OPEN, S.SILENCED], ids=["acted", "cd", "breaker", "sil"]
)
def test_an_escalation_is_guarded_without_the_cooldown(
    name: str, guards: Guards, reason: Suppressed | None, last: Suppressed | None
) -> None:
    state = firing(acted=True, reason=last)
    step = decide(state, Verdict.TRUE, guards, NOW, trigger=Trigger.ESCALATION)
    expected = None if reason is S.COOLDOWN else reason
    assert step.decision == Decision(
        expected, repeat=expected is not None and expected is last, guarded=True
    )
    assert step.change is None
    assert step.state.acted
    assert step.state.reason is expected


@pytest.mark.parametrize(
    ("reason", "held"),
    [
        (None, False),
        (S.COOLDOWN, False),
        (S.CIRCUIT_OPEN, False),
        (S.SILENCED, True),
        (S.PAUSED, True),
        (S.ALREADY_OPEN, True),
        (S.MAX_CONCURRENT_TARGETS, True),
        (S.SHADOW, True),
    ],
)
def test_what_holds_an_escalation_back_until_later(reason: Suppressed | None, held: bool) -> None:
    assert Decision(reason).held is held


def test_guards_are_named_in_order() -> None:
    # Each guard is named only when everything before it lets the action through.
    everything = Guards(
        enabled=False,
        auto_remediate=False,
        open_action=True,
        cooldown_seconds=600,
        last_ended_at=EARLIER,
        silenced=True,
        paused=True,
        shadow=True,
        limits=Limits(
            max_actions_per_hour=1, actions_last_hour=1, max_concurrent_targets=1, open_targets=1
        ),
    )
    order = []
    guards = everything
    changes: list[tuple[str, Any]] = [
        ("enabled", True),
        ("auto_remediate", True),
        ("open_action", False),
        ("last_ended_at", None),
        ("silenced", False),
        ("paused", False),
        ("shadow", False),
        ("limits", Limits(max_concurrent_targets=1, open_targets=1)),
        ("limits", Limits()),
    ]
    for field, value in changes:
        order.append(guard(guards, NOW))
        guards = replace(guards, **{field: value})
    order.append(guard(guards, NOW))
    assert order == [
        S.DISABLED,
        S.NOT_AUTO_REMEDIATED,
        S.ALREADY_OPEN,
        S.COOLDOWN,
        S.SILENCED,
        S.PAUSED,
        S.SHADOW,
        S.CIRCUIT_OPEN,
        S.MAX_CONCURRENT_TARGETS,
        None,
    ]


def test_a_zero_cooldown_allows_an_action_right_after_the_last_ended() -> None:
    assert guard(Guards(cooldown_seconds=0, last_ended_at=NOW), NOW) is None
    assert (
        guard(Guards(cooldown_seconds=300, last_ended_at=NOW - timedelta(seconds=300)), NOW) is None
    )
    cooling = Guards(cooldown_seconds=300, last_ended_at=NOW - timedelta(seconds=299))
    assert guard(cooling, NOW) is S.COOLDOWN


def test_counts_grow_with_each_action() -> None:
    limits = Limits(max_actions_per_hour=2, actions_last_hour=1, max_concurrent_targets=3)
    assert guard(Guards(limits=limits), NOW) is None
    assert guard(Guards(limits=limits.after_acting()), NOW) is S.CIRCUIT_OPEN
    assert limits.after_acting().open_targets == 1


def test_reasons_are_the_closed_list_of_the_contract() -> None:
    assert [r.value for r in Suppressed] == [
        "action already open",
        "cooldown",
        "circuit open",
        "max concurrent targets",
        "silenced",
        "paused",
        "shadow",
        "not auto-remediated",
        "disabled",
    ]


@pytest.mark.parametrize(
    ("reason", "outcome"),
    [
        (None, "acted"),
        (S.SHADOW, "shadow"),
        (S.NOT_AUTO_REMEDIATED, "recorded"),
        (S.SILENCED, "suppressed"),
        (S.COOLDOWN, "suppressed"),
    ],
)
def test_outcomes(reason: Suppressed | None, outcome: str) -> None:
    assert Decision(reason).outcome == outcome
