"""``vigil simulate`` (drive a running Vigil with a simulated fleet) and ``vigil demo``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

DEFAULT_API_URL = "http://127.0.0.1:8000"
ModeOption = Annotated[
    str, typer.Option("--mode", help="steady, burst, ramp or chaos", show_default=True)
]


def run_config(**fields: Any) -> Any:
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

    config = run_config(
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
