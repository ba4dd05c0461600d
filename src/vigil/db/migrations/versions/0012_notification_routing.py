"""Notifications carry what routes match on (severity, tags, episode); the sender's marks
for route groups and repeat intervals.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vigil.db.types import Json, UtcDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("severity", sa.String(16), nullable=True))
        batch.add_column(sa.Column("tags", Json, nullable=True))
        batch.add_column(sa.Column("episode", sa.Integer(), nullable=True))
    op.create_index("ix_notifications_action_id", "notifications", ["action_id"])
    op.create_table(
        "notification_marks",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("due_at", UtcDateTime(), nullable=True),
        sa.Column("sent_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_notification_marks"),
    )


def downgrade() -> None:
    op.drop_table("notification_marks")
    op.drop_index("ix_notifications_action_id", table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("episode")
        batch.drop_column("tags")
        batch.drop_column("severity")
