"""API keys (admin only): create (the key is shown once), list, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, StringConstraints

from vigil.access import keys as store
from vigil.access.keys import ApiKey
from vigil.access.roles import Role
from vigil.api.deps import ActorDep, ContainerDep, VigilRoute
from vigil.http.errors import error_responses
from vigil.strict import StrictModel

router = APIRouter(prefix="/api/v1/keys", tags=["access"], route_class=VigilRoute)

KeyName = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
]


class KeyIn(StrictModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    name: KeyName
    role: Role


class KeyOut(BaseModel):
    name: str
    role: str
    prefix: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


def key_out(key: ApiKey) -> dict[str, Any]:
    """A key as the API lists it: never the key or its hash."""
    return {
        "name": key.name,
        "role": key.role,
        "prefix": key.prefix,
        "created_at": key.created_at,
        "created_by": key.created_by,
        "revoked_at": key.revoked_at,
    }


class NewKeyOut(KeyOut):
    key: str


class KeyList(BaseModel):
    keys: list[KeyOut]


class Ok(BaseModel):
    ok: bool


@router.get("", response_model=KeyList, responses=error_responses(503))
async def list_keys(container: ContainerDep) -> dict[str, Any]:
    """Every key, revoked ones too, by name (never the keys themselves)."""
    async with container.database.read() as conn:
        return {"keys": [key_out(k) for k in await store.list_keys(conn)]}


@router.post(
    "", status_code=201, response_model=NewKeyOut, responses=error_responses(409, 413, 422, 503)
)
async def create_key(body: KeyIn, container: ContainerDep, actor: ActorDep) -> dict[str, Any]:
    """A new key with a role; the key is in this answer only. 409 if the name is taken."""
    async with container.database.write() as conn:
        created, key = await store.create_key(
            conn, name=body.name, role=body.role, now=container.clock.now(), actor=actor
        )
    container.keys.forget()
    return {**key_out(created), "key": key}


@router.delete("/{name}", response_model=Ok, responses=error_responses(404, 422, 503))
async def revoke_key(
    name: Annotated[str, Path(max_length=64)], container: ContainerDep, actor: ActorDep
) -> dict[str, Any]:
    """Revoke a key: every process refuses it within two seconds."""
    async with container.database.write() as conn:
        await store.revoke_key(conn, name=name, now=container.clock.now(), actor=actor)
    container.keys.forget()
    return {"ok": True}
