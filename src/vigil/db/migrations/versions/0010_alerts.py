"""Alerts heard from Alertmanager.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vigil.db.types import BigId, Json, UtcDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("starts_at", UtcDateTime(), nullable=False),
        sa.Column("alertname", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ends_at", UtcDateTime(), nullable=True),
        sa.Column("labels", Json, nullable=False),
        sa.Column("annotations", Json, nullable=False),
        sa.Column("generator_url", sa.Text(), nullable=True),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("last_seen_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("fingerprint", "starts_at", name="uq_alerts_fingerprint_starts_at"),
    )
    op.create_index("ix_alerts_status_alertname", "alerts", ["status", "alertname"])
    op.create_index("ix_alerts_last_seen_at", "alerts", ["last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_alerts_last_seen_at", table_name="alerts")
    op.drop_index("ix_alerts_status_alertname", table_name="alerts")
    op.drop_table("alerts")
