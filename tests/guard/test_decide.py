"""Table-driven tests of the guards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vigil.guard.decide import PairState, decide
from vigil.guard.reasons import Suppressed

NOW = datetime(2026, 1, 19, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("enabled", "auto", "state", "expected"),
    [
        (True, True, PairState(), None),
        (False, True, PairState(), Suppressed.DISABLED),
        (True, False, PairState(), Suppressed.NOT_AUTO_REMEDIATED),
        (True, True, PairState(open_action_id=7), Suppressed.ALREADY_OPEN),
        (True, True, PairState(last_ended_at=NOW - timedelta(seconds=299)), Suppressed.COOLDOWN),
        (True, True, PairState(last_ended_at=NOW - timedelta(seconds=300)), None),
        (True, True, PairState(last_ended_at=NOW - timedelta(hours=2)), None),
        # An open action is reported before the cooldown of an older one.
        (
            True,
            True,
            PairState(open_action_id=3, last_ended_at=NOW - timedelta(seconds=1)),
            Suppressed.ALREADY_OPEN,
        ),
    ],
)
def test_decide(enabled: bool, auto: bool, state: PairState, expected: Suppressed | None) -> None:
    assert (
        decide(auto_remediate=auto, enabled=enabled, cooldown_seconds=300, state=state, now=NOW)
        == expected
    )


def test_zero_cooldown_allows_an_action_right_after_the_last_ended() -> None:
    state = PairState(last_ended_at=NOW)
    assert (
        decide(auto_remediate=True, enabled=True, cooldown_seconds=0, state=state, now=NOW) is None
    )


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
    ("enabled", "auto", "state", "expected"),
    [
        (True, True, PairState(), Suppressed.PAUSED),
        # A pause is named only when it is what stops the action.
        (False, True, PairState(), Suppressed.DISABLED),
        (True, False, PairState(), Suppressed.NOT_AUTO_REMEDIATED),
        (True, True, PairState(open_action_id=7), Suppressed.ALREADY_OPEN),
        (True, True, PairState(last_ended_at=NOW - timedelta(seconds=1)), Suppressed.COOLDOWN),
    ],
)
def test_while_paused(enabled: bool, auto: bool, state: PairState, expected: Suppressed) -> None:
    assert (
        decide(
            auto_remediate=auto,
            enabled=enabled,
            cooldown_seconds=300,
            state=state,
            now=NOW,
            paused=True,
        )
        == expected
    )


@pytest.mark.parametrize(
    ("state", "paused", "expected"),
    [
        (PairState(), False, Suppressed.SHADOW),
        # What it would have done: a guard that would have stopped it is named instead.
        (PairState(last_ended_at=NOW - timedelta(seconds=1)), False, Suppressed.COOLDOWN),
        (PairState(), True, Suppressed.PAUSED),
    ],
)
def test_a_shadow_policy_never_acts(state: PairState, paused: bool, expected: Suppressed) -> None:
    found = decide(
        auto_remediate=True,
        enabled=True,
        cooldown_seconds=300,
        state=state,
        now=NOW,
        paused=paused,
        shadow=True,
    )
    assert found == expected


def test_limit_reason_checks_the_breaker_before_the_blast_radius() -> None:
    from vigil.guard.decide import limit_reason

    def reason(per_hour: int | None, recent: int, targets: int | None, open_: int) -> object:
        return limit_reason(
            max_actions_per_hour=per_hour,
            actions_last_hour=recent,
            max_concurrent_targets=targets,
            open_targets=open_,
        )

    assert reason(None, 99, None, 99) is None
    assert reason(3, 2, 2, 1) is None
    assert reason(3, 3, 2, 1) == "circuit open"
    assert reason(3, 3, 1, 1) == "circuit open"
    assert reason(3, 2, 1, 1) == "max concurrent targets"
