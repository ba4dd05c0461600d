"""Which database a ``vigil`` command uses: ``DATABASE_URL``, else ``vigil.db`` in the data
directory; named on stderr (or a server's first log line); created only by the commands
that may create it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from sqlalchemy.exc import DBAPIError

from vigil.errors import VigilError
from vigil.settings import Settings

T = TypeVar("T")


def database_file(settings: Settings) -> Path | None:
    """The SQLite file of DATABASE_URL (absolute), or None for PostgreSQL."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    return Path(url.database).absolute()


def database_choice(settings: Settings) -> tuple[str, str]:
    """Which database (a SQLite file, or a URL without its password), and what chose it."""
    from sqlalchemy.engine import make_url

    if "database_url" in settings.model_fields_set:
        source = "DATABASE_URL"
    elif "data_dir" in settings.model_fields_set:
        source = "VIGIL_DATA_DIR"
    else:
        source = "the default data directory"
    path = database_file(settings)
    if path is not None:
        return str(path), source
    url = make_url(settings.database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=True), source


def use_database(settings: Settings, *, create: bool) -> None:
    """Say on stderr which database this command uses (stdout stays for its output), then
    :func:`prepare_database`."""
    database, source = database_choice(settings)
    kind = "SQLite, " if database_file(settings) is not None else ""
    typer.echo(f"database: {database} ({kind}{source})", err=True)
    prepare_database(settings, create=create)


def log_database(settings: Settings) -> None:
    """A server's first log line: which database it uses, and what chose it."""
    from vigil.observability.logging import get_logger

    database, source = database_choice(settings)
    get_logger(__name__).info("database.selected", database=database, source=source)


def prepare_database(settings: Settings, *, create: bool) -> None:
    """``create``: the command may create the database (making the data directory for the
    default SQLite file); otherwise it must exist, else exit 2 saying there is none."""
    path = database_file(settings)
    if path is None or path.exists():
        return
    if not create:
        typer.echo(
            f"error: there is no database at {path}: nothing has been recorded there yet. "
            "Point DATABASE_URL (or VIGIL_DATA_DIR) at the database `vigil serve` uses",
            err=True,
        )
        raise typer.Exit(2)
    if "database_url" in settings.model_fields_set:
        if not path.parent.is_dir():
            typer.echo(
                f"error: cannot use DATABASE_URL: the directory {path.parent} does not exist",
                err=True,
            )
            raise typer.Exit(2)
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        typer.echo(f"error: cannot create the data directory {path.parent}: {exc}", err=True)
        raise typer.Exit(2) from exc


async def with_database(
    settings: Settings, work: Callable[[Any], Awaitable[T]], *, migrate: bool | None = None
) -> T:
    """Run ``work(database)`` on DATABASE_URL, migrated first if ``migrate`` (by default:
    when ``VIGIL_AUTO_MIGRATE`` says so)."""
    from vigil.db.engine import Database, create_engine
    from vigil.db.migrate import startup_lock, upgrade

    database = Database(create_engine(settings, pooled=False))
    try:
        if settings.auto_migrate if migrate is None else migrate:
            async with startup_lock(database):
                await upgrade(database)
        return await work(database)
    finally:
        await database.dispose()


def run_on_database(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    try:
        return asyncio.run(with_database(settings, work))
    except VigilError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    except (OSError, DBAPIError) as exc:
        typer.echo(f"error: cannot use DATABASE_URL: {exc}", err=True)
        raise typer.Exit(1) from exc
