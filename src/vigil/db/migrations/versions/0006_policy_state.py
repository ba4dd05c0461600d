"""Policy state, decisions, breaker rows; actions awaiting approval.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vigil.db.types import BigId, Json, UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_OLD_OPEN = "status IN ('pending', 'running')"
_NEW_OPEN = "status IN ('pending', 'running', 'awaiting_approval')"


def _open_index(where: str) -> None:
    op.drop_index("uq_actions_open_dedup_key_target", table_name="actions")
    op.create_index(
        "uq_actions_open_dedup_key_target",
        "actions",
        ["dedup_key", "target"],
        unique=True,
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )


def upgrade() -> None:
    with op.batch_alter_table("policy_revision") as batch:
        batch.add_column(
            sa.Column("firing_revision", BigId, nullable=False, server_default=sa.text("0"))
        )
    with op.batch_alter_table("actions") as batch:
        batch.add_column(sa.Column("episode", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("escalation_step", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("approval_expires_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("request_id", sa.String(128), nullable=True))
    _open_index(_NEW_OPEN)
    op.create_index("ix_actions_policy_name_created_at", "actions", ["policy_name", "created_at"])
    op.create_table(
        "policy_states",
        sa.Column("policy_name", sa.String(255), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("since", UtcDateTime(), nullable=True),
        sa.Column("pending_since", UtcDateTime(), nullable=True),
        sa.Column("fired_at", UtcDateTime(), nullable=True),
        sa.Column("resolved_at", UtcDateTime(), nullable=True),
        sa.Column("tags", Json, nullable=True),
        sa.Column("action_id", BigId, nullable=True),
        sa.Column("acted", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("decision_id", BigId, nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("escalated_at", UtcDateTime(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("policy_name", "target", name="pk_policy_states"),
    )
    op.create_index("ix_policy_states_phase", "policy_states", ["phase"])
    op.create_table(
        "decisions",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("last_at", UtcDateTime(), nullable=False),
        sa.Column("policy_name", sa.String(255), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("action_id", BigId, nullable=True),
        sa.Column("count", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
    )
    op.create_index("ix_decisions_at", "decisions", ["at"])
    op.create_index("ix_decisions_last_at", "decisions", ["last_at"])
    op.create_index("ix_decisions_policy_name_at", "decisions", ["policy_name", "at"])
    op.create_table(
        "policy_guards",
        sa.Column("policy_name", sa.String(255), nullable=False),
        sa.Column("reset_at", UtcDateTime(), nullable=True),
        sa.Column("opened_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("policy_name", name="pk_policy_guards"),
    )


def downgrade() -> None:
    op.drop_table("policy_guards")
    op.drop_index("ix_decisions_policy_name_at", table_name="decisions")
    op.drop_index("ix_decisions_last_at", table_name="decisions")
    op.drop_index("ix_decisions_at", table_name="decisions")
    op.drop_table("decisions")
    op.drop_index("ix_policy_states_phase", table_name="policy_states")
    op.drop_table("policy_states")
    op.drop_index("ix_actions_policy_name_created_at", table_name="actions")
    _open_index(_OLD_OPEN)
    with op.batch_alter_table("actions") as batch:
        batch.drop_column("request_id")
        batch.drop_column("approval_expires_at")
        batch.drop_column("escalation_step")
        batch.drop_column("episode")
    with op.batch_alter_table("policy_revision") as batch:
        batch.drop_column("firing_revision")
