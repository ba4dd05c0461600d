"""API keys in the database, and the per-process guard that checks them."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.access.roles import Role
from vigil.db.engine import Database
from vigil.db.records import record_of
from vigil.db.tables import api_keys
from vigil.errors import Conflict, NotFound
from vigil.observability.audit import Actor, append_audit

KEY_PREFIX = "vk_"
CACHE_SECONDS = 2.0
"""How long a process trusts what it read: a key created or revoked by another process is
noticed within this."""


def new_key() -> str:
    """A fresh random API key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored API key as it is listed: never the key or its hash."""

    name: str
    role: str
    prefix: str
    """The key's first characters, to tell keys apart."""
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


def _api_key(row: Row[Any]) -> ApiKey:
    """The :class:`ApiKey` of an ``api_keys`` row."""
    return record_of(ApiKey, row)


async def create_key(
    conn: AsyncConnection, *, name: str, role: Role, now: datetime, actor: Actor
) -> tuple[ApiKey, str]:
    """A new key: its listing and the key itself (shown once). :class:`Conflict` if the
    name is taken (revoked keys keep their names)."""
    key = new_key()
    try:
        async with conn.begin_nested():
            row = (
                await conn.execute(
                    api_keys.insert()
                    .values(
                        name=name,
                        role=role.value,
                        key_hash=key_hash(key),
                        prefix=key[: len(KEY_PREFIX) + 6],
                        created_at=now,
                        created_by=actor.name,
                    )
                    .returning(api_keys)
                )
            ).one()
    except IntegrityError as exc:
        raise Conflict(f"an API key named {name!r} already exists") from exc
    created = _api_key(row)
    await append_audit(
        conn,
        at=now,
        actor=actor,
        kind="key.created",
        subject=f"key:{name}",
        after={"name": name, "role": role.value, "prefix": created.prefix},
    )
    return created, key


async def list_keys(conn: AsyncConnection) -> list[ApiKey]:
    """Every key, revoked ones too, by name."""
    rows = await conn.execute(select(api_keys).order_by(api_keys.c.name))
    return [_api_key(r) for r in rows]


async def revoke_key(conn: AsyncConnection, *, name: str, now: datetime, actor: Actor) -> ApiKey:
    """Revoke a key (it stops working within :data:`CACHE_SECONDS` everywhere)."""
    row = (await conn.execute(select(api_keys).where(api_keys.c.name == name))).one_or_none()
    if row is None:
        raise NotFound(f"API key {name!r} not found")
    if row.revoked_at is not None:
        return _api_key(row)
    updated = (
        await conn.execute(
            api_keys.update()
            .where(api_keys.c.name == name)
            .values(revoked_at=now)
            .returning(api_keys)
        )
    ).one()
    await append_audit(
        conn,
        at=now,
        actor=actor,
        kind="key.revoked",
        subject=f"key:{name}",
        before={"revoked": False},
        after={"revoked": True},
    )
    return _api_key(updated)


async def any_key(conn: AsyncConnection) -> bool:
    """Whether any key was ever created (a revoked one too: revoking the last key does not
    open the API again)."""
    return (await conn.execute(select(api_keys.c.id).limit(1))).first() is not None


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    role: Role


INTERNAL_CALLER = Caller("simulator", Role.AGENT)
"""Who sends with a process's :attr:`KeyGuard.internal_key`: it may only ingest."""


class KeyGuard:
    """Answers "is a key needed?" and "whose key is this?" for one process, from the
    database, remembering answers for :data:`CACHE_SECONDS`."""

    def __init__(self, database: Database, mode: str) -> None:
        self._db = database
        self.mode = mode
        self._required: tuple[float, bool] | None = None
        self._callers: dict[str, tuple[float, Caller | None]] = {}
        self.internal_key = new_key()
        """This process's own agent key (the in-process simulator's): held in memory only,
        never stored, so it dies with the process."""

    async def required(self) -> bool:
        if self.mode == "off":
            return False
        if self.mode == "required":
            return True
        now = time.monotonic()
        if self._required is not None and self._required[0] > now:
            return self._required[1]
        async with self._db.read() as conn:
            found = await any_key(conn)
        self._required = (now + CACHE_SECONDS, found)
        return found

    def forget(self) -> None:
        """Drop what was remembered (this process just created or revoked a key)."""
        self._required = None
        self._callers.clear()

    async def caller(self, key: str) -> Caller | None:
        """Who holds ``key`` (None: unknown or revoked)."""
        if secrets.compare_digest(key.encode(), self.internal_key.encode()):
            return INTERNAL_CALLER
        digest = key_hash(key)
        now = time.monotonic()
        cached = self._callers.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    select(api_keys.c.name, api_keys.c.role).where(
                        api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None)
                    )
                )
            ).one_or_none()
        found = Caller(row.name, Role(row.role)) if row is not None else None
        if len(self._callers) > 10_000:
            self._callers.clear()
        self._callers[digest] = (now + CACHE_SECONDS, found)
        return found
