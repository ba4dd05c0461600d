"""Notifications: breaker opened, escalation exhausted, action failed or dead-lettered,
approval waiting, and the events routes ask for -- listed here, with each channel's
delivery."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from vigil.api.deps import ContainerDep, Limit, Page, VigilRoute, page_out
from vigil.http.errors import error_responses
from vigil.notify import store
from vigil.notify.events import DeliveryStatus, NotificationEvent
from vigil.notify.store import Notification
from vigil.text import SafeStr, UtcTimestamp

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"], route_class=VigilRoute)


class ChannelDeliveryOut(BaseModel):
    channel: str = Field(description="The channel's name in the notifications file")
    type: str | None = Field(description="slack, pagerduty, teams, email or webhook")
    attempts: int
    last_error: str | None
    delivered_at: datetime | None
    held_until: datetime | None = Field(
        default=None,
        description="Held until then: for its route's group, or behind an earlier message"
        " about the same episode or action",
    )
    failed_at: datetime | None = Field(
        default=None, description="When the channel gave up, after its last attempt"
    )
    retry_at: datetime | None = Field(
        default=None, description="When the channel is tried again after a refusal"
    )
    skipped: str | None = Field(
        default=None,
        description="repeat: the same event went to the channel within the"
        " route's repeat_interval, so it was not sent again",
    )


# Statuses and events are plain strings on the way out (as an action's status is), so a
# row written by a newer Vigil never makes the list fail; the filters take the closed sets.
class DeliveryOut(BaseModel):
    status: str = Field(description="pending, delivered, failed or none")
    attempts: int
    last_error: str | None
    delivered_at: datetime | None
    next_attempt_at: datetime | None
    channels: list[ChannelDeliveryOut]


class NotificationOut(BaseModel):
    id: int
    at: datetime
    event: str = Field(description=", ".join(NotificationEvent))
    policy_name: str | None
    target: str | None
    action_id: int | None
    reason: str
    details: dict[str, Any] | None
    severity: str | None
    tags: dict[str, str] | None
    episode: int | None
    delivery: DeliveryOut


def notification_out(record: Notification) -> dict[str, Any]:
    """A notification as the API shows it."""
    return {
        "id": record.id,
        "at": record.at,
        "event": record.event,
        "policy_name": record.policy_name,
        "target": record.target,
        "action_id": record.action_id,
        "reason": record.reason,
        "details": record.details,
        "severity": record.severity,
        "tags": record.tags,
        "episode": record.episode,
        "delivery": {
            "status": record.delivery_status,
            "attempts": record.attempts,
            "last_error": record.last_error,
            "delivered_at": record.delivered_at,
            "next_attempt_at": (
                record.next_attempt_at
                if record.delivery_status == DeliveryStatus.PENDING.value
                else None
            ),
            "channels": [
                {
                    "channel": entry.get("channel", name),
                    "type": entry.get("type"),
                    "attempts": entry.get("attempts", 0),
                    "last_error": entry.get("last_error"),
                    "delivered_at": entry.get("delivered_at"),
                    "held_until": entry.get("held_until"),
                    "failed_at": entry.get("failed_at"),
                    "retry_at": entry.get("retry_at"),
                    "skipped": entry.get("skipped"),
                }
                for name, entry in sorted((record.deliveries or {}).items())
            ],
        },
    }


class NotificationList(BaseModel):
    count: int
    total: int
    page: int
    page_size: int
    notifications: list[NotificationOut]


@router.get("", response_model=NotificationList, responses=error_responses(422, 503))
async def list_notifications(
    container: ContainerDep,
    page: Page = 1,
    limit: Limit = 50,
    event: NotificationEvent | None = None,
    policy: Annotated[SafeStr | None, Query(max_length=255)] = None,
    target: Annotated[SafeStr | None, Query(max_length=255)] = None,
    delivery: Annotated[
        DeliveryStatus | None, Query(description="Only notifications in this delivery status")
    ] = None,
    start_time: UtcTimestamp | None = None,
    end_time: UtcTimestamp | None = None,
) -> dict[str, Any]:
    """Notifications, newest first, filtered and paginated; ``start_time`` and ``end_time``
    bound when they happened."""
    async with container.database.read() as conn:
        rows, total = await store.list_notifications(
            conn,
            page=page,
            limit=limit,
            event=event,
            policy=policy,
            target=target,
            delivery=delivery,
            start_time=start_time,
            end_time=end_time,
        )
    items = [notification_out(r) for r in rows]
    return page_out("notifications", items, total=total, page=page, limit=limit)
