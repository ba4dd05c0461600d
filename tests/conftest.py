"""Shared fixtures: a fresh database per test on SQLite and on PostgreSQL, settings, an app."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests import services
from vigil.api.app import create_app
from vigil.clock import FakeClock
from vigil.container import Container, build_container
from vigil.db.engine import Database, create_engine
from vigil.db.migrate import upgrade
from vigil.settings import Settings

EMPTY_POLICIES = "policies: []\n"
TEST_HOSTS = "vigil.test,replica.test,remediator.test,testserver"
"""The hosts the tests' clients call in-process apps by (``http://vigil.test``; schemathesis
and Starlette's test client say ``testserver``)."""
CLIENT_HEADERS = {"X-Vigil-Request": "1"}
"""What every API client sends, so that a request without a JSON body may change things."""


@pytest.fixture(autouse=True)
def _test_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Apps built in a test answer to the test hosts too (VIGIL_ALLOWED_HOSTS), as a
    deployment's do to its own names; servers started as processes get a clean environment."""
    monkeypatch.setenv("VIGIL_ALLOWED_HOSTS", TEST_HOSTS)


def _migrate(url: str) -> None:
    async def run() -> None:
        database = Database(create_engine(Settings(database_url=url), pooled=False))
        try:
            await upgrade(database)
        finally:
            await database.dispose()

    asyncio.run(run())


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test."""
    path = tmp_path_factory.mktemp("template") / "vigil.db"
    _migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def migrated_postgres() -> Iterator[str]:
    """A migrated PostgreSQL database (the session's template)."""
    services.need_postgres()
    name = services.create_database()
    _migrate(services.database_url(name))
    yield name
    services.drop_database(name)


@pytest.fixture(scope="session")
def postgres_template(migrated_postgres: str) -> str:
    """The template of each test's PostgreSQL database (a module may override it with a
    template of its own, made from this one)."""
    return migrated_postgres


@pytest.fixture(scope="session")
def postgres_copies(migrated_postgres: str) -> Iterator[services.DatabaseCopies]:
    """Fresh copies of the template, made ahead in the background; dropped in the background."""
    copies = services.DatabaseCopies(migrated_postgres)
    yield copies
    copies.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database of each kind (the test runs once per kind): a copy of the
    migrated template, used by this test alone."""
    if request.param == "sqlite":
        path = tmp_path / "vigil.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("postgres_template")
    copies: services.DatabaseCopies = request.getfixturevalue("postgres_copies")
    name = copies.take(template)
    yield services.database_url(name)
    copies.give_back(name)


@pytest.fixture
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty (unmigrated) database; parametrize with indirect=True over sqlite/postgresql."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    services.need_postgres()
    name = services.create_database()
    yield services.database_url(name)
    services.drop_database(name)


@pytest.fixture
def policies_file(tmp_path: Path) -> Path:
    """An empty policy file: tests that want policies create them (or write this file)."""
    path = tmp_path / "policies.yaml"
    path.write_text(EMPTY_POLICIES)
    return path


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change settings for its app."""
    return {}


@pytest.fixture
def settings(
    database_url: str, policies_file: Path, settings_overrides: dict[str, Any]
) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "policies_file": policies_file,
        "runner_interval_seconds": 0.2,
        "db_pool_size": 4,
        **settings_overrides,
    }
    return Settings(**values)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def container(settings: Settings, clock: FakeClock) -> Container:
    return build_container(settings, clock=clock)


@pytest.fixture
async def app(settings: Settings, container: Container) -> AsyncIterator[FastAPI]:
    application = create_app(settings, container, run_runner=False)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://vigil.test", headers=CLIENT_HEADERS
    ) as c:
        yield c


@pytest.fixture(autouse=True, scope="session")
def _user_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Vigil's default database lives in the user's data directory (``$XDG_DATA_HOME``):
    the tests, and every process they start, get a temporary one instead."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data-home")))
    yield
    patch.undo()
