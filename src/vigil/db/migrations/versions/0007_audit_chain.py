"""Hash-chain the audit trail: each row links to the one before it.

Rows written before this migration are chained in id order from the genesis hash. The
audit table is described here as it is at this revision (not imported from the live
schema, which may gain columns later); the hash is the live one on purpose: it is the
chain's format, which ``vigil audit verify`` checks for every row, old or new.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vigil.db.types import BigId, Json, UtcDateTime
from vigil.observability.chain import GENESIS, row_hash

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

audit = sa.table(
    "audit",
    sa.column("id", BigId),
    sa.column("at", UtcDateTime),
    sa.column("actor", sa.String),
    sa.column("kind", sa.String),
    sa.column("subject", sa.String),
    sa.column("before", Json),
    sa.column("after", Json),
    sa.column("request_id", sa.String),
    sa.column("prev_hash", sa.String),
    sa.column("hash", sa.String),
)


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
            sa.select(
                audit.c.id,
                audit.c.at,
                audit.c.actor,
                audit.c.kind,
                audit.c.subject,
                audit.c.before,
                audit.c.after,
                audit.c.request_id,
            )
            .where(audit.c.id > last)
            .order_by(audit.c.id)
            .limit(1000)
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
