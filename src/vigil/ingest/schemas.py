"""Ingest wire schemas and the conversion of a validated metric into a stored sample."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from vigil.text import Name, SafeStr

TargetStr = Annotated[SafeStr, StringConstraints(strip_whitespace=True, max_length=255)]


class MetricIn(BaseModel):
    """One metric or event as agents send it."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: Name
    value: Annotated[float, Field(strict=True, allow_inf_nan=False)]
    tags: dict[SafeStr, SafeStr] = Field(default_factory=dict)
    timestamp: datetime | None = None
    target: TargetStr | None = None


class BatchIn(BaseModel):
    """A batch of metrics."""

    model_config = ConfigDict(extra="ignore")

    metrics: list[MetricIn]


class ViolationOut(BaseModel):
    policy_name: str
    severity: str
    action: str
    target: str
    suppressed: str | None = None


class ActionRef(BaseModel):
    action_id: int
    action: str
    target: str
    status: str


class IngestOut(BaseModel):
    ok: bool
    metric_id: int
    status: str
    policies_evaluated: bool
    violations: list[ViolationOut]
    actions: list[ActionRef]
    message: str


class BatchOut(BaseModel):
    ok: bool
    stored: int
    violations: list[ViolationOut]
    actions: list[ActionRef]


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-metric limits (from the settings)."""

    max_tags: int
    max_tag_key_length: int
    max_tag_value_length: int


@dataclass(frozen=True, slots=True)
class Sample:
    """A validated metric, ready to be stored and evaluated."""

    name: str
    value: float
    target: str | None
    tags: dict[str, str]
    ts: datetime


def limit_errors(metric: MetricIn, limits: Limits, loc: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Validation errors (FastAPI's shape) for a metric over the configured limits."""
    errors: list[dict[str, Any]] = []
    if len(metric.tags) > limits.max_tags:
        errors.append(
            {
                "loc": [*loc, "tags"],
                "msg": f"at most {limits.max_tags} tags are allowed",
                "type": "too_long",
            }
        )
    for key, value in metric.tags.items():
        if not key or len(key) > limits.max_tag_key_length:
            errors.append(
                {
                    "loc": [*loc, "tags", key[:64]],
                    "msg": f"tag names must be 1 to {limits.max_tag_key_length} characters",
                    "type": "string_too_long",
                }
            )
        if len(value) > limits.max_tag_value_length:
            errors.append(
                {
                    "loc": [*loc, "tags", key[:64]],
                    "msg": f"tag values must be at most {limits.max_tag_value_length} characters",
                    "type": "string_too_long",
                }
            )
    return errors


def to_sample(metric: MetricIn, now: datetime) -> Sample:
    """The stored form: timestamp defaulted to now (UTC), target from the tags if not given."""
    ts = metric.timestamp
    if ts is None:
        ts = now
    elif ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    else:
        ts = ts.astimezone(UTC)
    target = metric.target or (
        metric.tags.get("target") or metric.tags.get("host") or metric.tags.get("service")
    )
    return Sample(metric.name, metric.value, target or None, metric.tags, ts)
