"""The ``vigil`` command: parse flags → Settings → container → run. No logic of its own.

The servers, keys, audit and database commands are here; which database a command uses is
:mod:`vigil.cli.database`, the policy and remediations file checks :mod:`vigil.cli.files`,
the notifications file's :mod:`vigil.cli.notifications`, and ``simulate`` / ``demo``
:mod:`vigil.cli.fleet`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from vigil.cli.database import (
    log_database,
    prepare_database,
    run_on_database,
    use_database,
    with_database,
)
from vigil.cli.files import (
    check_policies_file,
    check_remediations,
    policies_app,
    remediations_app,
)
from vigil.cli.fleet import demo, simulate
from vigil.cli.notifications import check_notifications, log_links, notifications_app
from vigil.errors import Unavailable, VigilError
from vigil.settings import Settings, describe_settings_error

if TYPE_CHECKING:
    from vigil.container import Container

app = typer.Typer(help="Vigil: a self-healing control plane.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(policies_app, name="policies")
app.add_typer(remediations_app, name="remediations")
app.add_typer(notifications_app, name="notifications")
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
keys_app = typer.Typer(help="API keys and their roles.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name for the key (who or what uses it)")],
    role: Annotated[
        str, typer.Option("--role", help="viewer, agent, operator or admin")
    ] = "viewer",
) -> None:
    """Create an API key. The key is printed once, alone on the last line."""
    from vigil.access.keys import create_key
    from vigil.access.roles import Role
    from vigil.observability.audit import Actor

    settings = load_settings()
    if role not in {r.value for r in Role}:
        typer.echo(f"error: unknown role {role!r}: use viewer, agent, operator or admin", err=True)
        raise typer.Exit(2)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        typer.echo("error: a key name is 1-64 letters, digits, '.', '_' or '-'", err=True)
        raise typer.Exit(2)

    async def work(database: Any) -> str:
        async with database.write() as conn:
            _, key = await create_key(
                conn, name=name, role=Role(role), now=datetime.now(UTC), actor=Actor("cli")
            )
        return key

    use_database(settings, create=True)
    key = run_on_database(settings, work)
    typer.echo(f"created API key {name!r} with role {role}; it is shown only now:")
    typer.echo(key)


@keys_app.command("list")
def keys_list() -> None:
    """List the API keys (never the keys themselves)."""
    from vigil.access.keys import ApiKey, list_keys

    async def work(database: Any) -> list[ApiKey]:
        async with database.read() as conn:
            return await list_keys(conn)

    settings = load_settings()
    use_database(settings, create=False)
    for item in run_on_database(settings, work):
        state = f"revoked {item.revoked_at.isoformat()}" if item.revoked_at else "active"
        typer.echo(f"{item.name}\t{item.role}\t{item.prefix}...\t{state}")


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name")]) -> None:
    """Revoke an API key: every process refuses it within two seconds."""
    from vigil.access.keys import revoke_key
    from vigil.observability.audit import Actor

    async def work(database: Any) -> None:
        async with database.write() as conn:
            await revoke_key(conn, name=name, now=datetime.now(UTC), actor=Actor("cli"))

    settings = load_settings()
    use_database(settings, create=False)
    run_on_database(settings, work)
    typer.echo(f"revoked API key {name!r}")


def _refuse_open_network(settings: Settings, host: str) -> None:
    """Exit 2 when access control is on, no key exists and ``host`` is not loopback."""
    if settings.auth == "off" or host in _LOOPBACK:
        return
    from vigil.access.keys import any_key

    async def work(database: Any) -> bool:
        async with database.read() as conn:
            return await any_key(conn)

    if not run_on_database(settings, work):
        typer.echo(
            f"error: refusing to listen on {host}: access control is on (VIGIL_AUTH="
            f"{settings.auth}) but no API key exists, so anyone could drive Vigil. Create one "
            "with `vigil keys create NAME --role admin`, listen on 127.0.0.1, or set "
            "VIGIL_AUTH=off",
            err=True,
        )
        raise typer.Exit(2)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and .env), or exit 2 naming each invalid setting."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        typer.echo(describe_settings_error(exc), err=True)
        raise typer.Exit(2) from exc


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [VIGIL_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [VIGIL_PORT]")] = None,
    no_worker: Annotated[
        bool,
        typer.Option("--no-worker", help="Do not run the in-process worker and reconciler"),
    ] = False,
    no_runner: Annotated[
        bool, typer.Option("--no-runner", help="Do not run the background policy runner")
    ] = False,
) -> None:
    """Run the API with the background runner and, unless --no-worker, a worker."""
    from vigil.api.app import create_app

    settings = load_settings(host=host, port=port)
    container = _build(settings, role="api")
    prepare_database(settings, create=True)
    _refuse_open_network(settings, settings.host)
    _configure_logging(settings)
    log_database(settings)
    log_links(settings)
    if no_worker and settings.redis_url is None:
        typer.echo(
            "warning: --no-worker without REDIS_URL: actions are queued in this process, "
            "where no worker runs; they stay pending",
            err=True,
        )
    api = create_app(settings, container, run_runner=not no_runner, run_worker=not no_worker)
    _serve(api, settings, settings.host, settings.port)


@app.command()
def worker(
    metrics_host: Annotated[
        str | None, typer.Option(help="Address of /health and /metrics [VIGIL_WORKER_METRICS_HOST]")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Port of /health and /metrics [VIGIL_WORKER_METRICS_PORT]")
    ] = None,
) -> None:
    """Run a worker (and the reconciler) against the Redis queue until SIGTERM.

    On SIGTERM it stops taking tasks and lets running ones finish within
    VIGIL_WORKER_SHUTDOWN_TIMEOUT_SECONDS; the rest are reclaimed by another worker.
    """
    from vigil.api.worker_app import create_worker_app

    settings = load_settings(worker_metrics_host=metrics_host, worker_metrics_port=metrics_port)
    if settings.redis_url is None:
        typer.echo(
            "error: `vigil worker` needs REDIS_URL (the queue it shares with the API); "
            "without Redis, `vigil serve` runs its worker in-process",
            err=True,
        )
        raise typer.Exit(2)
    _configure_logging(settings)
    container = _build(settings, role="worker")
    prepare_database(settings, create=True)
    log_database(settings)
    _serve(
        create_worker_app(container),
        settings,
        settings.worker_metrics_host,
        settings.worker_metrics_port,
    )


@app.command()
def remediator(
    host: Annotated[str | None, typer.Option(help="Address [VIGIL_REMEDIATOR_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [VIGIL_REMEDIATOR_PORT]")] = None,
) -> None:
    """Run the remediator service: it holds the credentials and makes the real changes."""
    from vigil.remediation.app import create_remediator_app

    settings = load_settings(remediator_host=host, remediator_port=port)
    if settings.remediator_secret is None:
        typer.echo(
            "error: the remediator needs VIGIL_REMEDIATOR_SECRET (at least 16 characters, "
            "shared with the workers, which sign every request with it)",
            err=True,
        )
        raise typer.Exit(2)
    _configure_logging(settings)
    check_remediations(settings)
    prepare_database(settings, create=True)
    log_database(settings)
    api = create_remediator_app(settings)
    _serve(api, settings, settings.remediator_host, settings.remediator_port)


def _configure_logging(settings: Settings) -> None:
    from vigil.observability.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)


def _build(settings: Settings, *, role: str) -> Container:
    """The container, or exit 2 naming the problem with the remediations, policy or
    notifications file."""
    from vigil.container import WORKER_ROLE, build_container

    check_remediations(settings)
    if role == "api":
        check_policies_file(settings)
    check_notifications(settings, secrets=role != WORKER_ROLE)
    try:
        return build_container(settings, role=role)
    except VigilError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc


def _serve(api: Any, settings: Settings, host: str, port: int) -> None:
    """Serve ``api`` until SIGINT or SIGTERM; exit 0 once it has shut down gracefully.

    (uvicorn re-raises the signal after its graceful shutdown, so the process would end
    "killed by SIGTERM" even when the worker drained every running task.)
    """
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                try:
                    yield
                finally:
                    self._captured_signals.clear()

    config = uvicorn.Config(
        api,
        host=host,
        port=port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's lines go through Vigil's renderer (configure_logging)
        access_log=settings.access_log,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.worker_shutdown_timeout_seconds) + 5,
    )
    _tune_gc()
    Server(config).run()


def _tune_gc() -> None:
    """Keep the garbage collector cheap in a long-running server.

    What exists by now (modules, the app, its routes and models) lives as long as the
    process: frozen, the collector stops scanning it again and again; and a larger first
    generation lets a request's short-lived objects die before a collection looks at them.
    Together about a third less CPU per batch of 5,000 metrics (docs/benchmarks.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit trail's hash chain: exit 0 when every row checks out, 1 naming the
    first broken link when a row was altered, removed or reordered, 2 when there is no
    database (it never creates one) or it cannot be read."""
    settings = load_settings()
    use_database(settings, create=False)

    async def work(database: Any) -> tuple[int, Any] | None:
        from vigil.db.migrate import current_revision
        from vigil.observability.audit import verify_chain

        if await current_revision(database) is None:
            return None
        async with database.read() as conn:
            return await verify_chain(conn)

    try:
        verified = asyncio.run(with_database(settings, work, migrate=False))
    except Unavailable as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    except (OSError, DBAPIError) as exc:
        typer.echo(f"error: cannot read the audit trail: {exc}", err=True)
        raise typer.Exit(2) from exc
    if verified is None:
        typer.echo(
            "error: the database holds no Vigil schema, so no audit trail "
            "(`vigil serve` or `vigil db upgrade` creates it)",
            err=True,
        )
        raise typer.Exit(2)
    checked, broken = verified
    if broken is not None:
        where = "at its end" if broken.id is None else f"at row {broken.id}"
        typer.echo(
            f"audit chain BROKEN {where}: {broken.reason} ({checked} rows before it check out)",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"audit chain intact: {checked} rows")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to the database (creating it if there is none)."""
    settings = load_settings()
    use_database(settings, create=True)

    async def work(database: Any) -> str:
        from vigil.db.migrate import current_revision

        return await current_revision(database) or "?"

    try:
        revision = asyncio.run(with_database(settings, work, migrate=True))
    except Unavailable as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    except (OSError, DBAPIError) as exc:
        typer.echo(f"error: cannot migrate DATABASE_URL: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"database is at revision {revision}")


app.command()(simulate)
app.command()(demo)


def main() -> None:
    """Entry point of the ``vigil`` console script."""
    app(prog_name="vigil")


if __name__ == "__main__":  # pragma: no cover
    main()
