"""Alembic environment: always run programmatically with a connection handed in."""

from __future__ import annotations

from alembic import context

from vigil.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - guarded by vigil.db.migrate
    raise RuntimeError("run migrations with `vigil db upgrade`, which hands over a connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
