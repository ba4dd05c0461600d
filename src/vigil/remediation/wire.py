"""The remediator's wire format (docs/api.md "Remediator service"), shared by service and client."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vigil.text import JsonObject, Label, Name


class RemediateRequest(BaseModel):
    """``POST /v1/remediate``: run ``attempt`` of action ``action_id``."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    action_id: int = Field(ge=1, le=2**63 - 1)
    attempt: int = Field(ge=1, le=2**31 - 1)
    action: Name
    target: Name
    params: JsonObject = Field(default_factory=dict)
    tags: dict[Label, Label] = Field(
        default_factory=dict, description="The action's tags, for {tags.NAME} placeholders"
    )


class RemediateResult(BaseModel):
    """The remediator's answer for one (action_id, attempt)."""

    status: Literal["success", "failed"]
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    duration_ms: float
    retryable: bool = Field(
        default=True,
        description="For a failure: whether another attempt could succeed "
        "(false for an unknown remediation or invalid params)",
    )
