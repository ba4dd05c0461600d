"""The policy document: what operators write, in YAML or through the API."""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from vigil.durations import Duration, PositiveDuration
from vigil.policy.expr import Expression, compile_expression
from vigil.strict import StrictModel
from vigil.text import JsonObject, Name, Text

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
Description = Text
TargetPattern = Name
StrictBool = Annotated[bool, Field(strict=True)]
Limit = Annotated[int, Field(strict=True, ge=1, le=1_000_000)]


class _Wire(StrictModel):
    """Refuses unknown keys (naming the likely intended one): a misspelt guard such as
    ``aproval_required`` must never quietly become auto-remediation."""

    model_config = ConfigDict(str_strip_whitespace=True, frozen=True)


Operator = Literal[">", ">=", "<", "<=", "==", "!="]
OPERATORS: tuple[Operator, ...] = (">", ">=", "<", "<=", "==", "!=")
Aggregate = Literal["avg", "min", "max", "sum", "count", "p95", "last"]


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


class ThresholdCondition(_Wire):
    """The metric compared with ``threshold``: its latest value; with ``for``, every sample
    for that long; with ``window`` and ``aggregate``, an aggregate of the window's samples."""

    type: Literal["threshold"]
    metric: Name
    operator: Operator
    threshold: Threshold
    for_: PositiveDuration | None = Field(default=None, alias="for")
    window: PositiveDuration | None = None
    aggregate: Aggregate | None = None

    model_config = ConfigDict(populate_by_name=True)

    @model_validator(mode="after")
    def _window_and_aggregate(self) -> ThresholdCondition:
        if (self.window is None) != (self.aggregate is None):
            raise ValueError("'window' and 'aggregate' go together: give both or neither")
        if self.window is not None and self.for_ is not None:
            raise ValueError(
                "'for' and 'window' cannot be combined: a window already looks at a span"
                " of samples; use one of them"
            )
        return self


class Absent(_Wire):
    """True when the target has sent no sample of ``metric`` for ``for``."""

    type: Literal["absent"]
    metric: Name
    for_: PositiveDuration = Field(alias="for")

    model_config = ConfigDict(populate_by_name=True)


class Rate(_Wire):
    """The metric's per-second change over ``window`` compared with ``threshold``."""

    type: Literal["rate"]
    metric: Name
    window: PositiveDuration
    operator: Operator
    threshold: Threshold


class Expr(_Wire):
    """A boolean expression over the target's latest metric values (by name) and its tags
    (``tags.<key>``); a metric or tag the target lacks makes it false."""

    type: Literal["expr"]
    expression: str

    @field_validator("expression")
    @classmethod
    def _safe(cls, value: str) -> str:
        compiled = compile_expression(value)  # raises ValueError naming the problem
        if not compiled.metrics:
            raise ValueError(
                "expression: it must read at least one metric (it is evaluated when a"
                " sample of a metric it reads arrives)"
            )
        return value

    @cached_property
    def compiled(self) -> Expression:
        """The parsed and checked expression."""
        return compile_expression(self.expression)


AlertMatcher = Annotated[str, StringConstraints(max_length=1024)]


class AlertCondition(_Wire):
    """Holds for a target while an alert named ``alertname`` whose labels match
    ``matchers`` is firing (alerts come from Alertmanager's webhook). A matcher's value is
    the label's value, or one prefixed as Alertmanager writes them: ``=~`` (the whole value
    matches the regular expression), ``!~`` (it does not), ``!=`` (it differs)."""

    type: Literal["alert"]
    alertname: Name
    matchers: dict[Name, AlertMatcher] = Field(default_factory=dict, max_length=64)

    @field_validator("matchers")
    @classmethod
    def _patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for label, matcher in value.items():
            if matcher.startswith(("=~", "!~")):
                try:
                    re.compile(matcher[2:])
                except re.error as exc:
                    raise ValueError(
                        f"matchers.{label}: {matcher[2:]!r} is not a regular expression ({exc})"
                    ) from None
        return value


class PromQLCondition(_Wire):
    """Holds for each target whose series the PromQL ``query`` returns (as in a Prometheus
    alerting rule), asked of ``VIGIL_PROMETHEUS_URL`` by the runner every interval; with
    ``for``, only once the series has been returned for that long."""

    type: Literal["promql"]
    query: Annotated[str, StringConstraints(min_length=1, max_length=8192)]
    for_: PositiveDuration | None = Field(default=None, alias="for")

    model_config = ConfigDict(populate_by_name=True)


class AllOf(_Wire):
    """True when every one of ``conditions`` is."""

    type: Literal["all"]
    conditions: list[Condition] = Field(min_length=1)


class AnyOf(_Wire):
    """True when at least one of ``conditions`` is."""

    type: Literal["any"]
    conditions: list[Condition] = Field(min_length=1)


Condition = Annotated[
    MetricExceeds
    | MetricBelow
    | ThresholdCondition
    | Absent
    | Rate
    | Expr
    | AlertCondition
    | PromQLCondition
    | AllOf
    | AnyOf,
    Field(discriminator="type"),
]

OUTSIDE_SOURCES = (AlertCondition, PromQLCondition)
"""Conditions judged by what another system says (an alert, a PromQL answer), not over
Vigil's samples: each is a policy's whole condition."""

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


def _outside_sources(condition: Condition, clear: Condition | None) -> None:
    """An alert or PromQL condition stands alone: it is not combined with others, and a
    ``clear`` is one of the same kind (a PromQL one) or none."""
    for field, tree in (("condition", condition), ("clear", clear)):
        if isinstance(tree, AllOf | AnyOf):
            for child in _leaves(tree):
                if isinstance(child, OUTSIDE_SOURCES):
                    raise ValueError(
                        f"{field}: an '{child.type}' condition cannot be combined with"
                        " others in 'all' or 'any'; make it the policy's whole condition"
                    )
    if clear is None:
        return
    if isinstance(condition, AlertCondition):
        raise ValueError(
            "clear: an 'alert' policy resolves when its alert does; it takes no 'clear'"
        )
    if isinstance(condition, PromQLCondition) != isinstance(clear, PromQLCondition):
        raise ValueError(
            "clear: a 'promql' condition is cleared by another 'promql' one, and a"
            " condition over samples by one over samples"
        )
    if isinstance(clear, AlertCondition):
        raise ValueError("clear: an 'alert' condition cannot be a 'clear'")


def _leaves(condition: Condition) -> list[Condition]:
    if isinstance(condition, AllOf | AnyOf):
        return [leaf for child in condition.conditions for leaf in _leaves(child)]
    return [condition]


class Verify(_Wire):
    """Check, after an action completes, that the policy resolved for its target."""

    within_seconds: PositiveDuration


class PolicySpec(_Wire):
    """A policy as stored and as returned by the API."""

    name: PolicyName
    description: Description = ""
    severity: Severity = "warning"
    target: TargetPattern = "all"
    enabled: StrictBool = True
    auto_remediate: StrictBool = False
    condition: Condition
    clear: Condition | None = None
    """Hysteresis: once firing, the policy resolves only when this holds (not merely when
    ``condition`` stops holding)."""
    action: ActionName
    params: JsonObject = Field(default_factory=dict)
    cooldown_seconds: Duration = 300.0
    shadow: StrictBool = False
    """Record what it would have done (suppressed as ``shadow``) and never act."""
    max_actions_per_hour: Limit | None = None
    """Circuit breaker: past this many actions in an hour, new ones are suppressed."""
    max_concurrent_targets: Limit | None = None
    """Blast radius: how many targets may have an open action of this policy at once."""
    approval_required: StrictBool = False
    """Actions wait as ``awaiting_approval`` until approved or rejected."""
    approval_timeout_seconds: PositiveDuration = 3600.0
    """An action awaiting approval longer than this is cancelled."""
    verify: Verify | None = None
    """After an action completes, the policy must resolve for the target within this."""
    escalate: list[ActionName] = Field(default_factory=list, max_length=10)
    """Actions to try next, in order, each time verification fails."""
    target_label: Name | None = None
    """For ``alert`` and ``promql`` conditions: the label naming the target (else the
    first present of ``target``, ``host``, ``instance``, ``pod``, ``service``, ``job``)."""

    @model_validator(mode="after")
    def _bounded_condition(self) -> PolicySpec:
        for field, condition in (("condition", self.condition), ("clear", self.clear)):
            if condition is None:
                continue
            count, depth = condition_size(condition)
            if depth > MAX_CONDITION_DEPTH:
                raise ValueError(
                    f"{field} is nested too deeply (at most {MAX_CONDITION_DEPTH} levels)"
                )
            if count > MAX_CONDITIONS:
                raise ValueError(f"{field} has too many parts (at most {MAX_CONDITIONS})")
        _outside_sources(self.condition, self.clear)
        if self.target_label is not None and not isinstance(self.condition, OUTSIDE_SOURCES):
            raise ValueError(
                "target_label: only 'alert' and 'promql' conditions read targets from labels"
            )
        return self

    def document(self) -> dict[str, Any]:
        """The JSON document of this policy."""
        return self.model_dump(mode="json", by_alias=True)


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
    clear: Condition | None = None
    action: ActionName | None = None
    params: JsonObject | None = None
    cooldown_seconds: Duration | None = None
    shadow: StrictBool | None = None
    max_actions_per_hour: Limit | None = None
    max_concurrent_targets: Limit | None = None
    approval_required: StrictBool | None = None
    approval_timeout_seconds: PositiveDuration | None = None
    verify: Verify | None = None
    escalate: list[ActionName] | None = None
    target_label: Name | None = None


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
