"""What an evaluation found about a (policy, target) pair, as the decision core hears it:
a violation (the condition holds), pending (it holds, but not yet for its ``for``), or
settled (it stopped holding, or ``clear`` holds)."""

from __future__ import annotations

from dataclasses import dataclass

from vigil.policy.evaluator import Violation
from vigil.policy.history import Verdict
from vigil.policy.models import PolicySpec


@dataclass(frozen=True, slots=True)
class Pending:
    """The policy's condition holds for the target, but not yet for its ``for``."""

    policy: PolicySpec
    target: str


@dataclass(frozen=True, slots=True)
class Settled:
    """The pair stops firing (its ``clear`` holds, or its condition no longer does) or, if
    pending, goes back to ``ok``."""

    policy: PolicySpec
    target: str
    episode: int | None = None
    """The episode the caller saw (the runner reads before it locks): a pair that has
    started another episode since is left alone."""


Observation = Violation | Pending | Settled


def verdicts(observation: Observation) -> tuple[Verdict, Verdict | None]:
    """The condition's verdict and the ``clear`` condition's that an observation stands for."""
    if isinstance(observation, Violation):
        return Verdict.TRUE, None
    if isinstance(observation, Pending):
        return Verdict.PENDING, None
    return Verdict.FALSE, (Verdict.TRUE if observation.policy.clear is not None else None)
