"""Which silence, if any, covers a violation. Pure: the caller reads the silences."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase


@dataclass(frozen=True, slots=True)
class SilenceRule:
    """A silence's matchers and window. A matcher left out matches everything; ``tags``
    must all be present on the sample with exactly these values."""

    id: int
    starts_at: datetime
    ends_at: datetime
    policy: str | None = None
    target: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, *, policy: str, target: str, tags: Mapping[str, str]) -> bool:
        if self.policy is not None and not fnmatchcase(policy, self.policy):
            return False
        if self.target is not None and not fnmatchcase(target, self.target):
            return False
        return all(tags.get(key) == value for key, value in self.tags.items())


def silencing(
    rules: Sequence[SilenceRule],
    *,
    policy: str,
    target: str,
    tags: Mapping[str, str],
    now: datetime,
) -> SilenceRule | None:
    """The first active silence covering (policy, target, tags), if any."""
    for rule in rules:
        if rule.active(now) and rule.matches(policy=policy, target=target, tags=tags):
            return rule
    return None
