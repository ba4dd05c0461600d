"""Hash-chain the audit trail: each row links to the one before it.

Rows written before this migration are chained in id order from the genesis hash.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vigil.db.tables import audit
from vigil.observability.audit import GENESIS, row_hash

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=True))
    op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain"),
    )
    bind = op.get_bind()
    prev = GENESIS
    last = 0
    while True:
        rows = bind.execute(
            sa.select(audit).where(audit.c.id > last).order_by(audit.c.id).limit(1000)
        ).all()
        for row in rows:
            digest = row_hash(
                prev,
                at=row.at,
                actor=row.actor,
                kind=row.kind,
                subject=row.subject,
                before=row.before,
                after=row.after,
                request_id=row.request_id,
            )
            bind.execute(
                audit.update().where(audit.c.id == row.id).values(prev_hash=prev, hash=digest)
            )
            prev = digest
        if len(rows) < 1000:
            break
        last = rows[-1].id
    bind.execute(sa.text("INSERT INTO audit_chain (id, last_hash) VALUES (1, :h)"), {"h": prev})


def downgrade() -> None:
    op.drop_table("audit_chain")
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
