"""Judging a promql policy over what its queries returned: each series a violating target,
``for`` held in the pair's pending state, a series gone clears, ``clear`` resolves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from vigil.decide.observations import Pending, Settled
from vigil.decide.state import PairPhase, Phase
from vigil.policy.evaluator import Violation
from vigil.policy.models import PolicySpec
from vigil.policy.promql import Found, judge, targets_of

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _policy(**extra: Any) -> PolicySpec:
    condition = {"type": "promql", "query": "up == 0"}
    condition.update(extra.pop("condition", {}))
    return PolicySpec.model_validate(
        {"name": "down", "condition": condition, "action": "noop", **extra}
    )


def _series(*instances: str, value: float = 0.0) -> list[tuple[dict[str, str], float | None]]:
    return [({"__name__": "up", "instance": i, "job": "node"}, value) for i in instances]


def test_a_returned_series_is_a_violation_with_its_labels_as_tags() -> None:
    policy = _policy()
    found = targets_of(policy, _series("web-1:9100", value=3.5))
    [observation] = judge(policy, found, None, {}, NOW)
    assert observation == Violation(
        policy, "web-1", 3.5, {"instance": "web-1:9100", "job": "node"}
    ), "the target is the instance without its port; __name__ is no tag"


def test_target_label_and_policy_target_choose_the_targets() -> None:
    policy = _policy(target_label="job", target="node*")
    series = [({"job": "node-a", "instance": "x:1"}, 1.0), ({"job": "db", "instance": "y:1"}, 1.0)]
    assert list(targets_of(policy, series).targets) == ["node-a"]


def test_a_target_that_cannot_be_one_counts_as_none_and_unsafe_tags_are_dropped() -> None:
    policy = _policy()
    series = [
        ({"instance": "x" * 256}, 1.0),
        ({"instance": "web-1\nforged:9100"}, 1.0),
        ({"instance": "   "}, 1.0),
        ({"instance": "web-2:9100", "note": "a\tb", "job": "node"}, 1.0),
    ]
    found = targets_of(policy, series)
    assert found.unlabelled == 3
    assert found.targets == {"web-2": (1.0, {"instance": "web-2:9100", "job": "node"})}


def test_series_without_a_target_label_are_skipped_and_counted() -> None:
    policy = _policy()
    found = targets_of(policy, [({"__name__": "x"}, 1.0), *_series("a:1")])
    assert (list(found.targets), found.unlabelled) == (["a"], 1)


def test_with_for_a_series_is_pending_until_it_has_been_returned_that_long() -> None:
    policy = _policy(condition={"for": "2m"})
    found = targets_of(policy, _series("a:1"))
    assert judge(policy, found, None, {}, NOW) == [Pending(policy, "a")]
    pending = PairPhase(phase=Phase.PENDING, since=NOW, pending_since=NOW)
    later = NOW + timedelta(seconds=119)
    assert judge(policy, found, None, {"a": pending}, later) == [], "still pending: nothing new"
    [fired] = judge(policy, found, None, {"a": pending}, NOW + timedelta(minutes=2))
    assert isinstance(fired, Violation)
    assert fired.target == "a"


def test_a_series_that_disappears_clears_a_pending_pair_and_resolves_a_firing_one() -> None:
    policy = _policy(condition={"for": "2m"})
    pending = PairPhase(phase=Phase.PENDING, since=NOW, pending_since=NOW)
    firing = PairPhase(phase=Phase.FIRING, episode=3, since=NOW, fired_at=NOW)
    observations = judge(policy, Found(), None, {"a": pending, "b": firing}, NOW)
    assert observations == [Settled(policy, "a"), Settled(policy, "b", 3)]


def test_a_firing_series_still_returned_keeps_firing() -> None:
    policy = _policy()
    firing = PairPhase(phase=Phase.FIRING, episode=1, since=NOW, fired_at=NOW)
    [observation] = judge(policy, targets_of(policy, _series("a:1")), None, {"a": firing}, NOW)
    assert isinstance(observation, Violation)


def test_with_clear_only_the_clear_query_resolves() -> None:
    policy = _policy(clear={"type": "promql", "query": "up == 1"})
    firing = PairPhase(phase=Phase.FIRING, episode=2, since=NOW, fired_at=NOW)
    gone = judge(policy, Found(), targets_of(policy, []), {"a": firing}, NOW)
    assert gone == [], "the series went, but the clear query does not return it yet"
    cleared = targets_of(policy, _series("a:1", value=1.0))
    assert judge(policy, Found(), cleared, {"a": firing}, NOW) == [Settled(policy, "a", 2)]
