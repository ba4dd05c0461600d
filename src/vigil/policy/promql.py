"""Judging a ``promql`` policy over what its queries returned, as a Prometheus alerting
rule would: each series returned is a violating target; a series gone clears.

Pure: the series of the query (and of its ``clear`` query), the state of the policy's
pending and firing pairs and ``now`` in; observations for the decision core out. The
runner asks the queries and records the observations; the backtest replays range
queries through the same function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vigil.decide.observations import Observation, Pending, Settled
from vigil.decide.state import PairPhase, Phase
from vigil.ingest.labels import target_of, usable_tags, usable_target
from vigil.policy.evaluator import Violation
from vigil.policy.matcher import target_matches
from vigil.policy.models import PolicySpec, PromQLCondition

Series = tuple[Mapping[str, str], float | None]
"""A series of an instant vector: its labels and its value."""


@dataclass(frozen=True, slots=True)
class Found:
    """The targets a query's series name, first series of each target first."""

    targets: dict[str, tuple[float | None, dict[str, str]]] = field(default_factory=dict)
    """target → (value, tags: the labels but ``__name__``)."""
    unlabelled: int = 0
    """Series with no target label: skipped."""


def targets_of(policy: PolicySpec, series: Sequence[Series]) -> Found:
    """The targets (the policy's ``target_label``, else the first present of the usual
    labels) of ``series`` that the policy applies to; one series per target (the first)."""
    found: dict[str, tuple[float | None, dict[str, str]]] = {}
    unlabelled = 0
    for labels, value in series:
        target = usable_target(target_of(labels, policy.target_label))
        if target is None:
            unlabelled += 1
            continue
        if target in found or not target_matches(policy.target, target):
            continue
        found[target] = (value, usable_tags({k: v for k, v in labels.items() if k != "__name__"}))
    return Found(found, unlabelled)


def judge(
    policy: PolicySpec,
    found: Found,
    cleared: Found | None,
    pairs: Mapping[str, PairPhase],
    now: datetime,
) -> list[Observation]:
    """What the queries' answers say of each target of ``policy``.

    ``found`` is what the condition's query returned, ``cleared`` what the ``clear`` query
    returned (None without one); ``pairs`` the phase of each of the policy's pending or
    firing targets. A target returned is a violation -- with ``for``, only once it has been
    pending (returned at every pass) that long; a pending target no longer returned goes
    back to ``ok``; a firing one resolves when it is no longer returned or, with a
    ``clear``, when the clear query returns it.
    """
    condition = policy.condition
    assert isinstance(condition, PromQLCondition)
    observations: list[Observation] = []
    for target in sorted(found.targets.keys() | pairs.keys()):
        phase = pairs.get(target, PairPhase())
        hit = found.targets.get(target)
        if phase.phase is Phase.FIRING:
            done = target in cleared.targets if cleared is not None else hit is None
            if done:
                observations.append(Settled(policy, target, phase.episode))
            elif hit is not None:
                # Still firing: an attempt a silence or the pause held back may act now.
                observations.append(Violation(policy, target, hit[0], hit[1]))
            continue
        if hit is None:
            if phase.phase is Phase.PENDING:
                observations.append(Settled(policy, target))
            continue
        if condition.for_ is None or _held(phase, condition.for_, now):
            observations.append(Violation(policy, target, hit[0], hit[1]))
        elif phase.phase is not Phase.PENDING:
            observations.append(Pending(policy, target))
    return observations


def _held(phase: PairPhase, seconds: float, now: datetime) -> bool:
    """Whether a pending pair has been pending for ``seconds`` by ``now``."""
    if phase.phase is not Phase.PENDING:
        return False
    since = phase.pending_since or phase.since
    return since is not None and now - since >= timedelta(seconds=seconds)
