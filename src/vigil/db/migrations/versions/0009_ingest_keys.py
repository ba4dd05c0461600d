"""Idempotency keys of ingest requests.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vigil.db.types import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_keys",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_ingest_keys"),
    )
    op.create_index("ix_ingest_keys_created_at", "ingest_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_ingest_keys_created_at", table_name="ingest_keys")
    op.drop_table("ingest_keys")
