"""Notifications.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vigil.db.types import BigId, Json, UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("policy_name", sa.String(255), nullable=True),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("action_id", BigId, nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", Json, nullable=True),
        sa.Column("delivery_status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", UtcDateTime(), nullable=True),
        sa.Column("deliveries", Json, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
    )
    op.create_index(
        "ix_notifications_delivery_status_next_attempt_at",
        "notifications",
        ["delivery_status", "next_attempt_at"],
    )
    op.create_index("ix_notifications_at", "notifications", ["at"])


def downgrade() -> None:
    op.drop_index("ix_notifications_at", table_name="notifications")
    op.drop_index("ix_notifications_delivery_status_next_attempt_at", table_name="notifications")
    op.drop_table("notifications")
