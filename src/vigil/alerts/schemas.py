"""The Alertmanager webhook's body (``webhook_config``), as Alertmanager documents it; Grafana,
Mimir and Thanos rulers and vmalert send the same.

The format is a third party's: keys it may add later (Grafana adds several) are ignored,
but a field it documents must have its documented type, and every timestamp must be one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from vigil.text import no_nul

LabelName = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(no_nul)]
LabelValue = Annotated[str, StringConstraints(max_length=16_384), AfterValidator(no_nul)]
Labels = dict[LabelName, LabelValue]


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError("timestamp is out of range once converted to UTC") from exc


Timestamp = Annotated[AwareDatetime, AfterValidator(_utc)]
"""An RFC 3339 date-time with its offset, kept in UTC."""

_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
"""Go's zero time (``0001-01-01T00:00:00Z``): the ``endsAt`` of an alert still firing."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class AlertIn(_Wire):
    """One alert of a notification."""

    status: Literal["firing", "resolved"]
    labels: Labels = Field(max_length=1024)
    annotations: Labels = Field(default_factory=dict, max_length=1024)
    starts_at: Timestamp = Field(alias="startsAt")
    ends_at: Timestamp | None = Field(default=None, alias="endsAt")
    generator_url: LabelValue = Field(default="", alias="generatorURL")
    fingerprint: Annotated[
        str, StringConstraints(min_length=1, max_length=64), AfterValidator(no_nul)
    ]

    @property
    def ends(self) -> datetime | None:
        """When the alert ended (or, firing, is due to end), or None (Go's zero time)."""
        if self.ends_at is None or self.ends_at <= _ZERO_TIME:
            return None
        return self.ends_at.astimezone(UTC)

    @property
    def starts(self) -> datetime:
        return self.starts_at.astimezone(UTC)


class WebhookIn(_Wire):
    """A notification: one group of alerts (``alerts`` is all Vigil reads)."""

    version: str = "4"
    group_key: str = Field(default="", alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0)
    status: Literal["firing", "resolved"] = "firing"
    receiver: str = ""
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Labels = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[AlertIn]
