"""Initial schema: metrics, latest values, policies, actions, action history, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vigil.db.types import BigId, Json, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_OPEN = sa.text("status IN ('pending', 'running')")


def upgrade() -> None:
    op.create_table(
        "metrics",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("tags", Json, nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_metrics"),
    )
    op.create_index("ix_metrics_name_ts", "metrics", ["name", "ts"])
    op.create_index("ix_metrics_ts", "metrics", ["ts"])

    op.create_table(
        "metric_latest",
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("target", "name", name="pk_metric_latest"),
    )

    op.create_table(
        "policies",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("spec", Json, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("file_spec", Json, nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policies"),
        sa.UniqueConstraint("name", name="uq_policies_name"),
    )

    op.create_table(
        "policy_revision",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("revision", BigId, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policy_revision"),
    )
    op.execute("INSERT INTO policy_revision (id, revision) VALUES (1, 0)")

    op.create_table(
        "actions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("policy_name", sa.String(255), nullable=True),
        sa.Column("dedup_key", sa.String(300), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("action", sa.String(255), nullable=False),
        sa.Column("params", Json, nullable=False),
        sa.Column("severity", sa.String(16), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("result", Json, nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("trigger_value", sa.Float(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("completed_at", UtcDateTime(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=True),
        sa.Column("verification", Json, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_actions"),
    )
    op.create_index(
        "uq_actions_open_dedup_key_target",
        "actions",
        ["dedup_key", "target"],
        unique=True,
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    )
    op.create_index(
        "ix_actions_dedup_key_target_completed_at",
        "actions",
        ["dedup_key", "target", "completed_at"],
    )
    op.create_index("ix_actions_status", "actions", ["status"])
    op.create_index("ix_actions_created_at", "actions", ["created_at"])

    op.create_table(
        "action_history",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("action_id", BigId, nullable=False),
        sa.Column("from_status", sa.String(32), nullable=True),
        sa.Column("to_status", sa.String(32), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.ForeignKeyConstraint(
            ["action_id"],
            ["actions.id"],
            name="fk_action_history_action_id_actions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_action_history"),
    )
    op.create_index("ix_action_history_action_id", "action_history", ["action_id"])

    op.create_table(
        "audit",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("before", Json, nullable=True),
        sa.Column("after", Json, nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit"),
    )
    op.create_index("ix_audit_at", "audit", ["at"])


def downgrade() -> None:
    for table in ("audit", "action_history", "actions", "policy_revision", "policies"):
        op.drop_table(table)
    op.drop_table("metric_latest")
    op.drop_table("metrics")
