"""The pure evaluator: policies and a target's values in, violations out.

No database, Redis, HTTP or clock: everything it needs is handed in (DESIGN.md invariant 4).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vigil.policy.conditions import Check, compile_condition, metrics_of
from vigil.policy.matcher import target_matches
from vigil.policy.models import PolicySpec


@dataclass(frozen=True, slots=True)
class Violation:
    """A policy whose condition holds for a target."""

    policy: PolicySpec
    target: str
    value: float | None
    """The value of the sample that triggered it (None in a dry run without one)."""


class PolicyIndex:
    """Enabled policies, indexed by the metric names their conditions read.

    Only policies that read a sample's metric can change their verdict when it arrives,
    so ingest evaluates just those.
    """

    def __init__(self, policies: Iterable[PolicySpec]) -> None:
        self.policies: tuple[PolicySpec, ...] = tuple(p for p in policies if p.enabled)
        by_metric: dict[str, list[PolicySpec]] = defaultdict(list)
        self._reads: dict[str, frozenset[str]] = {}
        for policy in self.policies:
            reads = metrics_of(policy.condition)
            self._reads[policy.name] = reads
            for metric in reads:
                by_metric[metric].append(policy)
        self._by_metric = {name: tuple(items) for name, items in by_metric.items()}
        self._checks: dict[str, Check] = {
            p.name: compile_condition(p.condition) for p in self.policies
        }

    def __len__(self) -> int:
        return len(self.policies)

    def candidates(self, metric: str, target: str) -> list[PolicySpec]:
        """Enabled policies that read ``metric`` and apply to ``target``."""
        return [p for p in self._by_metric.get(metric, ()) if target_matches(p.target, target)]

    def needs_other_metrics(self, metric: str, target: str) -> bool:
        """Whether evaluating ``metric`` for ``target`` needs the target's other values."""
        return any(len(self._reads[p.name]) > 1 for p in self.candidates(metric, target))

    def evaluate(
        self,
        candidates: Sequence[PolicySpec],
        target: str,
        value: float,
        values: Mapping[str, float],
    ) -> list[Violation]:
        """Violations among ``candidates`` (from :meth:`candidates`) given the target's
        latest ``values``, the new sample of value ``value`` included."""
        checks = self._checks
        return [Violation(p, target, value) for p in candidates if checks[p.name](values)]

    def evaluate_values(self, target: str, values: Mapping[str, float]) -> list[Violation]:
        """Every enabled policy applying to ``target`` whose condition holds over ``values``."""
        checks = self._checks
        return [
            Violation(p, target, None)
            for p in self.policies
            if target_matches(p.target, target) and checks[p.name](values)
        ]
