"""``vigil policies validate`` and ``vigil remediations validate``, and the same checks
``vigil serve`` makes of its files before it starts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vigil.errors import PolicyInvalid, VigilError
from vigil.settings import Settings

if TYPE_CHECKING:
    from vigil.policy.models import PolicySpec
    from vigil.remediation.config import Remediations

policies_app = typer.Typer(help="Policy files.", no_args_is_help=True)
remediations_app = typer.Typer(help="Remediations files.", no_args_is_help=True)


def check_remediations(settings: Settings) -> None:
    """Refuse to start on an invalid remediations file, naming the setting."""
    from vigil.remediation.config import load_remediations

    try:
        load_remediations(settings.remediations_file)
    except VigilError as exc:
        typer.echo(f"invalid setting VIGIL_REMEDIATIONS_FILE: {exc.message}", err=True)
        raise typer.Exit(2) from exc


def check_policies_file(settings: Settings) -> None:
    """Refuse to start on an unreadable or invalid policy file, or one whose policies name
    actions that no remediation handles, naming the setting."""
    from vigil.policy.loader import read_policy_file
    from vigil.remediation.config import load_remediations

    try:
        source, specs = read_policy_file(settings.policies_file)
    except PolicyInvalid as exc:
        typer.echo(f"invalid setting VIGIL_POLICIES_FILE: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    problems = unhandled_actions(source, specs, load_remediations(settings.remediations_file))
    problems += query_problems(source, specs, settings=settings, unreachable_ok=True)
    if problems:
        typer.echo(f"invalid setting VIGIL_POLICIES_FILE: {problems[0]}", err=True)
        raise typer.Exit(2)


def unhandled_actions(
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


def query_problems(
    source: str,
    specs: list[PolicySpec],
    *,
    settings: Settings | None = None,
    unreachable_ok: bool = False,
) -> list[str]:
    """Each PromQL query of ``specs`` that Prometheus (VIGIL_PROMETHEUS_URL) refuses or
    cannot check (unless ``unreachable_ok``: ``vigil serve`` starts while Prometheus is
    away), or that cannot be checked because the setting is missing."""
    import asyncio
    from datetime import UTC, datetime

    from vigil.errors import Unavailable
    from vigil.policy.prometheus import PrometheusClient
    from vigil.policy.service import check_queries, queries_of

    asking = [spec for spec in specs if queries_of(spec)]
    if not asking:
        return []
    settings = settings or Settings()

    async def check() -> list[str]:
        url = settings.prometheus_url
        client = (
            None
            if url is None
            else PrometheusClient(url, timeout=settings.prometheus_timeout_seconds)
        )
        problems = []
        try:
            for spec in asking:
                where = ("policies", spec.name)
                try:
                    await check_queries(spec, client, datetime.now(UTC), loc_prefix=where)
                except PolicyInvalid as exc:
                    problems.append(f"{source}: policies.{spec.name}.{exc.message}")
                except Unavailable as exc:
                    if not unreachable_ok:
                        problems.append(f"{source}: policy {spec.name!r}: {exc.message}")
        finally:
            if client is not None:
                await client.close()
        return problems

    return asyncio.run(check())


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
    """Check a policy file as `vigil serve` would, without loading it: every field, that a
    remediation handles each action, and that Prometheus (VIGIL_PROMETHEUS_URL) accepts
    each PromQL query. Exit 1 naming each problem, or when the file
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
    problems = unhandled_actions(source, specs, remediations) + query_problems(source, specs)
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
