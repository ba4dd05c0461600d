"""Policies in the database, and the per-process cache that follows their revision."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.engine import sqlite_fetch
from vigil.db.tables import policies, policy_revision, policy_states
from vigil.errors import DuplicatePolicy, NotFound
from vigil.observability.audit import Actor, append_audit, append_audits
from vigil.policy.evaluator import PolicyIndex
from vigil.policy.models import PolicySpec


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    """A stored policy: one row of ``policies``, its document (``spec``) with bookkeeping."""

    id: int
    name: str
    severity: str
    enabled: bool
    spec: dict[str, Any]
    """The policy's document as stored (``enabled`` is the column's, not the document's)."""
    source: str
    """``api`` or ``file``: where the policy was created."""
    file_spec: dict[str, Any] | None
    """The document last loaded from the policy file, if it came from one."""
    created_at: datetime
    updated_at: datetime

    def policy(self) -> PolicySpec:
        """The validated policy."""
        return PolicySpec.model_validate({**self.spec, "enabled": self.enabled})


def _stored(row: Row[Any]) -> StoredPolicy:
    """The :class:`StoredPolicy` of a ``policies`` row."""
    return StoredPolicy(
        id=row.id,
        name=row.name,
        severity=row.severity,
        enabled=bool(row.enabled),
        spec=row.spec,
        source=row.source,
        file_spec=row.file_spec,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def _bump_revision(conn: AsyncConnection) -> None:
    await conn.execute(
        policy_revision.update()
        .where(policy_revision.c.id == 1)
        .values(revision=policy_revision.c.revision + 1)
    )


async def revisions(conn: AsyncConnection) -> tuple[int, int]:
    """The policy revision and the firing revision (see ``policy_revision``)."""
    if conn.dialect.name == "sqlite":
        ((value, firing),) = await sqlite_fetch(
            conn, "SELECT revision, firing_revision FROM policy_revision WHERE id = 1"
        )
        return int(value), int(firing)
    row = (
        await conn.execute(
            select(policy_revision.c.revision, policy_revision.c.firing_revision).where(
                policy_revision.c.id == 1
            )
        )
    ).one()
    return int(row.revision), int(row.firing_revision)


async def firing_pairs(conn: AsyncConnection) -> dict[str, frozenset[str]]:
    """The policies firing for each target."""
    rows = await conn.execute(
        select(policy_states.c.target, policy_states.c.policy_name).where(
            policy_states.c.phase == "firing"
        )
    )
    by_target: dict[str, set[str]] = {}
    for target, policy_name in rows:
        by_target.setdefault(target, set()).add(policy_name)
    return {target: frozenset(names) for target, names in by_target.items()}


async def list_policies(
    conn: AsyncConnection, *, severity: str | None = None
) -> list[StoredPolicy]:
    """Stored policies, by name."""
    query = select(policies).order_by(policies.c.name)
    if severity is not None:
        query = query.where(policies.c.severity == severity)
    return [_stored(row) for row in await conn.execute(query)]


async def get_policy(conn: AsyncConnection, *, name: str, for_update: bool = False) -> StoredPolicy:
    """One stored policy; :class:`NotFound` if there is none of that name."""
    query = select(policies).where(policies.c.name == name)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).one_or_none()
    if row is None:
        raise NotFound(f"policy {name!r} not found")
    return _stored(row)


async def create_policy(
    conn: AsyncConnection, *, spec: PolicySpec, now: datetime, actor: Actor, source: str = "api"
) -> StoredPolicy:
    """Store a new policy; :class:`DuplicatePolicy` if the name is taken."""
    document = spec.document()
    try:
        async with conn.begin_nested():
            row = (
                await conn.execute(
                    policies.insert()
                    .values(
                        name=spec.name,
                        severity=spec.severity,
                        enabled=spec.enabled,
                        spec=document,
                        source=source,
                        file_spec=document if source == "file" else None,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(policies)
                )
            ).one()
    except IntegrityError as exc:
        raise DuplicatePolicy(f"a policy named {spec.name!r} already exists") from exc
    await _bump_revision(conn)
    await append_audit(
        conn,
        at=now,
        actor=actor,
        kind="policy.created",
        subject=f"policy:{spec.name}",
        after=document,
    )
    return _stored(row)


async def replace_policy(
    conn: AsyncConnection,
    *,
    name: str,
    spec: PolicySpec,
    now: datetime,
    actor: Actor,
    kind: str = "policy.updated",
    file_spec: dict[str, Any] | None = None,
) -> StoredPolicy:
    """Overwrite a stored policy's document (its name stays)."""
    current = await get_policy(conn, name=name, for_update=True)
    document = spec.document()
    values: dict[str, Any] = {
        "severity": spec.severity,
        "enabled": spec.enabled,
        "spec": document,
        "updated_at": now,
    }
    if file_spec is not None:
        values["file_spec"] = file_spec
        values["source"] = "file"
    row = (
        await conn.execute(
            policies.update().where(policies.c.name == name).values(**values).returning(policies)
        )
    ).one()
    await _bump_revision(conn)
    await append_audit(
        conn,
        at=now,
        actor=actor,
        kind=kind,
        subject=f"policy:{name}",
        before=current.spec,
        after=document,
    )
    return _stored(row)


async def delete_policy(conn: AsyncConnection, *, name: str, now: datetime, actor: Actor) -> None:
    """Delete a policy; :class:`NotFound` if there is none of that name."""
    current = await get_policy(conn, name=name, for_update=True)
    await conn.execute(policies.delete().where(policies.c.name == name))
    await _bump_revision(conn)
    await append_audit(
        conn,
        at=now,
        actor=actor,
        kind="policy.deleted",
        subject=f"policy:{name}",
        before=current.spec,
    )


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What loading a policy file changed."""

    created: int
    updated: int
    unchanged: int

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged


async def upsert_from_file(
    conn: AsyncConnection, *, specs: list[PolicySpec], now: datetime, actor: Actor
) -> LoadReport:
    """Upsert the policies of a file by name; policies not in the file are kept.

    A policy whose file text has not changed since it was last loaded is left alone, so
    changes made through the API (disabling it, say) survive restarts until the file itself
    changes that policy.

    The stored policies are read, and the new and the changed ones written, a few
    statements for the whole file (not several per policy: a file of 10,000 policies took
    half a minute that way); one revision bump and the audit rows, in file order, go with
    them.
    """
    existing = await _file_rows(conn, names=[spec.name for spec in specs])
    created: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    entries: list[tuple[str, str, Any, Any]] = []
    unchanged = 0
    for spec in specs:
        document = spec.document()
        row = existing.get(spec.name)
        if row is None:
            created.append(
                {
                    "name": spec.name,
                    "severity": spec.severity,
                    "enabled": spec.enabled,
                    "spec": document,
                    "source": "file",
                    "file_spec": document,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            entries.append(("policy.created", f"policy:{spec.name}", None, document))
        elif row.file_spec == document:
            unchanged += 1
        else:
            changed.append(
                {
                    "old_name": spec.name,
                    "severity": spec.severity,
                    "enabled": spec.enabled,
                    "spec": document,
                    "source": "file",
                    "file_spec": document,
                    "updated_at": now,
                }
            )
            entries.append(("policy.reloaded", f"policy:{spec.name}", row.spec, document))
    if created:
        try:
            async with conn.begin_nested():
                await conn.execute(policies.insert(), created)
        except IntegrityError as exc:
            names = ", ".join(repr(values["name"]) for values in created[:5])
            more = ", ..." if len(created) > 5 else ""
            raise DuplicatePolicy(
                f"one of the file's new policies ({names}{more}) was created meanwhile"
            ) from exc
    if changed:
        await conn.execute(
            policies.update().where(policies.c.name == bindparam("old_name")), changed
        )
    if entries:
        await _bump_revision(conn)
        await append_audits(conn, at=now, actor=actor, entries=entries)
    return LoadReport(len(created), len(changed), unchanged)


_NAMES_PER_READ = 500
"""Names per ``IN (...)`` list: far below any driver's limit on bound parameters."""


async def _file_rows(conn: AsyncConnection, *, names: list[str]) -> dict[str, StoredPolicy]:
    """The stored policies of these names, by name (locked for update on PostgreSQL,
    as :func:`replace_policy` locks the one it changes)."""
    rows: dict[str, StoredPolicy] = {}
    for start in range(0, len(names), _NAMES_PER_READ):
        query = select(policies).where(policies.c.name.in_(names[start : start + _NAMES_PER_READ]))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        for row in await conn.execute(query):
            rows[row.name] = _stored(row)
    return rows


class PolicyCache:
    """This process's view of the enabled policies, refreshed when the revision moves.

    Checking the revision costs one primary-key read per ingest group, and every process
    (API replica, runner) sees a change made by any other in its next transaction.
    """

    def __init__(self) -> None:
        self._revision = -1
        self._index = PolicyIndex(())
        self._firing_revision = -1
        self._firing: dict[str, frozenset[str]] = {}

    async def index(self, conn: AsyncConnection) -> PolicyIndex:
        """The policy index as of ``conn``'s transaction (the firing pairs are not read)."""
        current, _ = await revisions(conn)
        return await self._policies(conn, current)

    async def _policies(self, conn: AsyncConnection, current: int) -> PolicyIndex:
        if current != self._revision:
            stored = await list_policies(conn)
            self._index = PolicyIndex(p.policy() for p in stored)
            self._revision = current
        return self._index

    async def snapshot(
        self, conn: AsyncConnection
    ) -> tuple[PolicyIndex, dict[str, frozenset[str]]]:
        """The policy index and the policies firing for each target, as of ``conn``'s
        transaction (both revisions are read in one trip)."""
        current, firing = await revisions(conn)
        await self._policies(conn, current)
        if firing != self._firing_revision:
            self._firing = await firing_pairs(conn)
            self._firing_revision = firing
        return self._index, self._firing
