"""The global automation switch (pause / resume).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vigil.db.types import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "automation",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("since", UtcDateTime(), nullable=True),
        sa.Column("by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_automation"),
    )


def downgrade() -> None:
    op.drop_table("automation")
