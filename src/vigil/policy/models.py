"""The policy document: what operators write, in YAML or through the API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from vigil.durations import Duration
from vigil.text import JsonObject, Name, SafeStr

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")

POLICY_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
ACTION_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
MAX_CONDITION_DEPTH = 8
MAX_CONDITIONS = 256

Threshold = Annotated[float, Field(strict=True, allow_inf_nan=False)]
PolicyName = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=255, pattern=POLICY_NAME_PATTERN)
]
ActionName = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=255, pattern=ACTION_NAME_PATTERN)
]
Description = Annotated[SafeStr, StringConstraints(max_length=4096)]
TargetPattern = Annotated[Name, StringConstraints(max_length=255)]
StrictBool = Annotated[bool, Field(strict=True)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=True)


class MetricExceeds(_Wire):
    """True when the metric's value is greater than ``threshold``."""

    type: Literal["metric_exceeds"]
    metric: Name
    threshold: Threshold


class MetricBelow(_Wire):
    """True when the metric's value is less than ``threshold``."""

    type: Literal["metric_below"]
    metric: Name
    threshold: Threshold


class AllOf(_Wire):
    """True when every one of ``conditions`` is."""

    type: Literal["all"]
    conditions: list[Condition] = Field(min_length=1)


class AnyOf(_Wire):
    """True when at least one of ``conditions`` is."""

    type: Literal["any"]
    conditions: list[Condition] = Field(min_length=1)


Condition = Annotated[MetricExceeds | MetricBelow | AllOf | AnyOf, Field(discriminator="type")]

AllOf.model_rebuild()
AnyOf.model_rebuild()


def condition_size(condition: Condition, depth: int = 1) -> tuple[int, int]:
    """(number of conditions, nesting depth) of a condition tree."""
    if isinstance(condition, AllOf | AnyOf):
        count, deepest = 1, depth
        for child in condition.conditions:
            c, d = condition_size(child, depth + 1)
            count += c
            deepest = max(deepest, d)
        return count, deepest
    return 1, depth


class PolicySpec(_Wire):
    """A policy as stored and as returned by the API."""

    name: PolicyName
    description: Description = ""
    severity: Severity = "warning"
    target: TargetPattern = "all"
    enabled: StrictBool = True
    auto_remediate: StrictBool = False
    condition: Condition
    action: ActionName
    params: JsonObject = Field(default_factory=dict)
    cooldown_seconds: Duration = 300.0
    shadow: StrictBool = False
    """Record what it would have done (suppressed as ``shadow``) and never act."""

    @model_validator(mode="after")
    def _bounded_condition(self) -> PolicySpec:
        count, depth = condition_size(self.condition)
        if depth > MAX_CONDITION_DEPTH:
            raise ValueError(
                f"condition is nested too deeply (at most {MAX_CONDITION_DEPTH} levels)"
            )
        if count > MAX_CONDITIONS:
            raise ValueError(f"condition has too many parts (at most {MAX_CONDITIONS})")
        return self

    def document(self) -> dict[str, Any]:
        """The JSON document of this policy."""
        return self.model_dump(mode="json")


class PolicyUpdate(_Wire):
    """A partial update: any field but ``name`` (which, if given, must be unchanged).

    Each field has the same type (and strictness) as in :class:`PolicySpec`, so an update
    accepts exactly the values a new policy would; the merged document is validated again.
    """

    name: str | None = None
    description: Description | None = None
    severity: Severity | None = None
    target: TargetPattern | None = None
    enabled: StrictBool | None = None
    auto_remediate: StrictBool | None = None
    condition: Condition | None = None
    action: ActionName | None = None
    params: JsonObject | None = None
    cooldown_seconds: Duration | None = None
    shadow: StrictBool | None = None


class PolicyFile(_Wire):
    """A policy file: a top-level ``policies:`` list."""

    policies: list[PolicySpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> PolicyFile:
        seen: set[str] = set()
        for policy in self.policies:
            if policy.name in seen:
                raise ValueError(f"policy name {policy.name!r} appears more than once")
            seen.add(policy.name)
        return self
