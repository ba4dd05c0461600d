"""The ``vigil`` command: parse flags → Settings → container → run. No logic of its own."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from vigil.errors import PolicyInvalid, Unavailable, VigilError
from vigil.settings import Settings, describe_settings_error

T = TypeVar("T")

if TYPE_CHECKING:
    from vigil.container import Container
    from vigil.policy.models import PolicySpec
    from vigil.remediation.config import Remediations

app = typer.Typer(help="Vigil: a self-healing control plane.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
policies_app = typer.Typer(help="Policy files.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(policies_app, name="policies")
remediations_app = typer.Typer(help="Remediations files.", no_args_is_help=True)
app.add_typer(remediations_app, name="remediations")
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
keys_app = typer.Typer(help="API keys and their roles.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _database_file(settings: Settings) -> Path | None:
    """The SQLite file of DATABASE_URL (absolute), or None for PostgreSQL."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    return Path(url.database).absolute()


def _database_choice(settings: Settings) -> tuple[str, str]:
    """Which database (a SQLite file, or a URL without its password), and what chose it."""
    from sqlalchemy.engine import make_url

    if "database_url" in settings.model_fields_set:
        source = "DATABASE_URL"
    elif "data_dir" in settings.model_fields_set:
        source = "VIGIL_DATA_DIR"
    else:
        source = "the default data directory"
    path = _database_file(settings)
    if path is not None:
        return str(path), source
    url = make_url(settings.database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=True), source


def _use_database(settings: Settings, *, create: bool) -> None:
    """Say on stderr which database this command uses (stdout stays for its output), then
    :func:`_prepare_database`."""
    database, source = _database_choice(settings)
    kind = "SQLite, " if _database_file(settings) is not None else ""
    typer.echo(f"database: {database} ({kind}{source})", err=True)
    _prepare_database(settings, create=create)


def _log_database(settings: Settings) -> None:
    """A server's first log line: which database it uses, and what chose it."""
    from vigil.observability.logging import get_logger

    database, source = _database_choice(settings)
    get_logger(__name__).info("database.selected", database=database, source=source)


def _prepare_database(settings: Settings, *, create: bool) -> None:
    """``create``: the command may create the database (making the data directory for the
    default SQLite file); otherwise it must exist, else exit 2 saying there is none."""
    path = _database_file(settings)
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


async def _with_database(
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


def _run_on_database(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    try:
        return asyncio.run(_with_database(settings, work))
    except VigilError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    except (OSError, DBAPIError) as exc:
        typer.echo(f"error: cannot use DATABASE_URL: {exc}", err=True)
        raise typer.Exit(1) from exc


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

    _use_database(settings, create=True)
    key = _run_on_database(settings, work)
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
    _use_database(settings, create=False)
    for item in _run_on_database(settings, work):
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
    _use_database(settings, create=False)
    _run_on_database(settings, work)
    typer.echo(f"revoked API key {name!r}")


def _refuse_open_network(settings: Settings, host: str) -> None:
    """Exit 2 when access control is on, no key exists and ``host`` is not loopback."""
    if settings.auth == "off" or host in _LOOPBACK:
        return
    from vigil.access.keys import any_key

    async def work(database: Any) -> bool:
        async with database.read() as conn:
            return await any_key(conn)

    if not _run_on_database(settings, work):
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
    _prepare_database(settings, create=True)
    _refuse_open_network(settings, settings.host)
    _configure_logging(settings)
    _log_database(settings)
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
    _prepare_database(settings, create=True)
    _log_database(settings)
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
    _check_remediations(settings)
    _prepare_database(settings, create=True)
    _log_database(settings)
    api = create_remediator_app(settings)
    _serve(api, settings, settings.remediator_host, settings.remediator_port)


DEFAULT_API_URL = "http://127.0.0.1:8000"
ModeOption = Annotated[
    str, typer.Option("--mode", help="steady, burst, ramp or chaos", show_default=True)
]


def _run_config(**fields: Any) -> Any:
    """A simulator RunConfig from CLI flags, or exit 2 naming the bad one."""
    from vigil.simulator.fleet import MODES
    from vigil.simulator.sender import RunConfig

    if fields["mode"] not in MODES:
        typer.echo(f"error: unknown --mode {fields['mode']!r}: use {', '.join(MODES)}", err=True)
        raise typer.Exit(2)
    config = RunConfig(**fields)
    try:
        config.fleet()
    except ValueError as exc:
        typer.echo(f"error: --targets: {exc}", err=True)
        raise typer.Exit(2) from exc
    return config


@app.command()
def simulate(
    url: Annotated[
        str | None,
        typer.Option(help=f"The Vigil API to drive [VIGIL_API_URL, else {DEFAULT_API_URL}]"),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="An API key that may ingest: agent or admin [VIGIL_API_KEY]"),
    ] = None,
    follow_key: Annotated[
        str | None,
        typer.Option(help="A key that may read the fleet (viewer or better) [--api-key]"),
    ] = None,
    mode: ModeOption = "steady",
    rate: Annotated[float, typer.Option(min=0.1, max=100_000, help="Samples per second")] = 100.0,
    duration: Annotated[float, typer.Option(min=0, help="Seconds to run (0: until Ctrl-C)")] = 60.0,
    targets: Annotated[
        str, typer.Option(help="Comma-separated services to simulate (default: all)")
    ] = "",
    single: Annotated[
        bool, typer.Option("--single", help="One request per sample instead of batches")
    ] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the load (same seed, same run)")] = 0,
    failure_rate: Annotated[
        float | None,
        typer.Option(min=0, max=1, help="Share of requests given up on (chaos default 0.02)"),
    ] = None,
    malformed_rate: Annotated[
        float | None,
        typer.Option(min=0, max=1, help="Share of requests sent malformed (chaos default 0.02)"),
    ] = None,
    burst_at: Annotated[
        float | None, typer.Option(min=0, help="Burst mode: seconds before the burst [10]")
    ] = None,
    no_follow: Annotated[
        bool,
        typer.Option("--no-follow", help="Do not follow the replicas of Vigil's simulated fleet"),
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON (no live display)")
    ] = False,
) -> None:
    """Send a simulated fleet's metrics to a running Vigil, with a live display.

    Exits 1 when Vigil cannot be reached, accepted nothing, or answered any request with a
    5xx; 0 otherwise (rejections of deliberately malformed requests are expected)."""
    import json

    from rich.console import Console

    from vigil.simulator.drive import DriveError, drive, summary_table

    config = _run_config(
        mode=mode,
        rate=rate,
        duration_seconds=duration or None,
        targets=tuple(t.strip() for t in targets.split(",") if t.strip()),
        batch=not single,
        seed=seed,
        failure_rate=failure_rate,
        malformed_rate=malformed_rate,
        burst_at_seconds=burst_at,
    )
    if url is None or api_key is None:
        from vigil.settings import client_settings

        default_url, default_key = client_settings()
        url, api_key = url or default_url, api_key or default_key
    console = Console(stderr=True)
    try:
        result = asyncio.run(
            drive(
                url or DEFAULT_API_URL,
                config,
                api_key=api_key,
                follow_key=follow_key,
                follow=not no_follow,
                console=console,
                live=not json_out,
            )
        )
    except DriveError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    counts = result.counts
    if json_out:
        replicas = {name: s.replicas for name, s in result.fleet.services.items()}
        summary = {**counts.as_dict(), "seconds": round(result.seconds, 3), "replicas": replicas}
        typer.echo(json.dumps(summary))
    else:
        console.print(summary_table(result))
    if counts.succeeded == 0 or counts.server_errors:
        if counts.last_error:
            typer.echo(f"error: {counts.last_error}", err=True)
        raise typer.Exit(1)


@app.command()
def demo(
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port for Vigil (default: a free one)")
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave Vigil running afterwards, to look around")
    ] = False,
    fast: Annotated[
        bool, typer.Option("--fast", help="Shortened timings (for tests): `for: 2s`")
    ] = False,
) -> None:
    """The "scale up the web tier" story, live: load rises, high-cpu-alert fires, the
    remediator scales the simulated web tier, CPU falls and the action is verified.

    Runs its own `vigil serve` on the embedded defaults in a temporary directory; exits 0
    only when every step happened (checked through the API and /metrics)."""
    from vigil.simulator.demo import run_demo

    raise typer.Exit(run_demo(port=port, keep=keep, fast=fast))


def _configure_logging(settings: Settings) -> None:
    from vigil.observability.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)


def _build(settings: Settings, *, role: str) -> Container:
    """The container, or exit 2 naming the problem with the remediations or policy file."""
    from vigil.container import build_container

    _check_remediations(settings)
    if role == "api":
        _check_policies_file(settings)
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


def _check_remediations(settings: Settings) -> None:
    """Refuse to start on an invalid remediations file, naming the setting."""
    from vigil.remediation.config import load_remediations

    try:
        load_remediations(settings.remediations_file)
    except VigilError as exc:
        typer.echo(f"invalid setting VIGIL_REMEDIATIONS_FILE: {exc.message}", err=True)
        raise typer.Exit(2) from exc


def _check_policies_file(settings: Settings) -> None:
    """Refuse to start on an unreadable or invalid policy file, or one whose policies name
    actions that no remediation handles, naming the setting."""
    from vigil.policy.loader import read_policy_file
    from vigil.remediation.config import load_remediations

    try:
        source, specs = read_policy_file(settings.policies_file)
    except PolicyInvalid as exc:
        typer.echo(f"invalid setting VIGIL_POLICIES_FILE: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    problems = _unhandled_actions(source, specs, load_remediations(settings.remediations_file))
    if problems:
        typer.echo(f"invalid setting VIGIL_POLICIES_FILE: {problems[0]}", err=True)
        raise typer.Exit(2)


def _unhandled_actions(
    source: str, specs: list[PolicySpec], remediations: Remediations
) -> list[str]:
    """Each action (or escalation) of ``specs`` that no entry of ``remediations`` handles:
    what ``vigil serve`` refuses to start with, and ``vigil policies validate`` reports."""
    problems = []
    for spec in specs:
        named = [("uses action", spec.action)]
        named += [("escalates to action", action) for action in spec.escalate]
        problems += [
            f"policy {spec.name!r} in {source} {how} {action!r}, which no remediation in "
            f"{remediations.source} handles (VIGIL_REMEDIATIONS_FILE)"
            for how, action in named
            if not remediations.knows(action)
        ]
    return problems


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
    _use_database(settings, create=False)

    async def work(database: Any) -> tuple[int, Any] | None:
        from vigil.db.migrate import current_revision
        from vigil.observability.audit import verify_chain

        if await current_revision(database) is None:
            return None
        async with database.read() as conn:
            return await verify_chain(conn)

    try:
        verified = asyncio.run(_with_database(settings, work, migrate=False))
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
    _use_database(settings, create=True)

    async def work(database: Any) -> str:
        from vigil.db.migrate import current_revision

        return await current_revision(database) or "?"

    try:
        revision = asyncio.run(_with_database(settings, work, migrate=True))
    except Unavailable as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    except (OSError, DBAPIError) as exc:
        typer.echo(f"error: cannot migrate DATABASE_URL: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"database is at revision {revision}")


@policies_app.command("validate")
def policies_validate(
    file: Annotated[Path, typer.Argument(help="A policy file (YAML, top-level `policies:`)")],
    remediations_file: Annotated[
        Path | None,
        typer.Option(
            "--remediations",
            help="The remediations file whose actions the policies may use "
            "[default: the packaged one, as `vigil serve` without VIGIL_REMEDIATIONS_FILE]",
        ),
    ] = None,
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="A file with no policies is valid")
    ] = False,
) -> None:
    """Check a policy file as `vigil serve` would, without loading it: every field, and
    that a remediation handles each action. Exit 1 naming each problem, or when the file
    has no policies (unless --allow-empty)."""
    from vigil.policy.loader import read_policy_file
    from vigil.remediation.config import RemediationsInvalid, load_remediations
    from vigil.remediation.registry import PluginLoadError

    try:
        source, specs = read_policy_file(file)
    except PolicyInvalid as exc:
        typer.echo(f"invalid: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    if not specs:
        empty = f"{file}: no policies (the file is empty or says `policies: []`)"
        if allow_empty:
            typer.echo(empty)
            return
        typer.echo(f"invalid: {empty}; --allow-empty accepts that", err=True)
        raise typer.Exit(1)
    try:
        remediations = load_remediations(remediations_file)
    except (RemediationsInvalid, PluginLoadError) as exc:
        typer.echo(f"invalid remediations: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    problems = _unhandled_actions(source, specs, remediations)
    for problem in problems:
        typer.echo(f"invalid: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(
        f"{file}: {len(specs)} valid policies (actions checked against {remediations.source})"
    )
    for spec in specs:
        state = "enabled" if spec.enabled else "disabled"
        auto = "auto" if spec.auto_remediate else "manual"
        typer.echo(f"  {spec.name}: {spec.severity}, {state}, {auto}, action {spec.action}")


@remediations_app.command("validate")
def remediations_validate(
    file: Annotated[
        Path, typer.Argument(help="A remediations file (YAML, top-level `remediations:`)")
    ],
) -> None:
    """Check a remediations file against the installed plugins; exit 1 naming the problem."""
    from vigil.remediation.config import RemediationsInvalid, load_remediations
    from vigil.remediation.registry import PluginLoadError

    try:
        remediations = load_remediations(file)
    except (RemediationsInvalid, PluginLoadError) as exc:
        typer.echo(f"invalid: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{file}: {len(remediations.entries)} valid remediations")
    for entry in remediations.entries:
        retries = entry.retries
        typer.echo(
            f"  {entry.action} on {entry.targets!r}: {entry.plugin}, timeout {entry.timeout:g}s, "
            f"retries max_attempts={_or_default(retries.max_attempts)} "
            f"backoff={_or_default(retries.backoff_seconds)} "
            f"max_backoff={_or_default(retries.max_backoff_seconds)}"
        )


def _or_default(value: float | None) -> str:
    return "default" if value is None else f"{value:g}"


def main() -> None:
    """Entry point of the ``vigil`` console script."""
    app(prog_name="vigil")


if __name__ == "__main__":  # pragma: no cover
    main()
