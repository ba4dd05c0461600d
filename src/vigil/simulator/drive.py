"""``vigil simulate``: drive a running Vigil from this process, with a live display.

The load is generated here and sent over HTTP to the Vigil at ``url``. The fleet's replicas
and restarts are Vigil's, though: once a second the local fleet adopts the server's (``GET
/api/v1/simulator/fleet``), so a scale-up that Vigil's ``simulator`` remediation makes there
shows up in the load sent from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from vigil.simulator.fleet import Fleet
from vigil.simulator.sender import Counts, RunConfig, Sender
from vigil.strict import CLIENT_HEADERS

FLEET_PATH = "/api/v1/simulator/fleet"


class DriveError(Exception):
    """Vigil cannot be driven (unreachable, or the key is refused); the message says why."""


@dataclass(slots=True)
class DriveResult:
    counts: Counts
    seconds: float
    following: bool
    """Whether the fleet followed Vigil's (its fleet API answered)."""
    fleet: Fleet


async def _follow(client: httpx.AsyncClient, fleet: Fleet, key: str | None) -> bool:
    """Adopt Vigil's fleet; False when its fleet API cannot be read."""
    headers = {"x-api-key": key} if key else None
    response = await client.get(FLEET_PATH, headers=headers)
    if response.status_code != 200:
        return False
    fleet.adopt(response.json())
    return True


async def drive(
    url: str,
    config: RunConfig,
    *,
    api_key: str | None = None,
    follow_key: str | None = None,
    follow: bool = True,
    console: Console | None = None,
    live: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
) -> DriveResult:
    """Run ``config`` against the Vigil at ``url`` until its duration ends (or the task is
    cancelled, e.g. by Ctrl-C); raise :class:`DriveError` if Vigil cannot be reached.

    ``api_key`` sends the metrics (an agent's or an admin's, when access control is on);
    ``follow_key`` (default: ``api_key``) reads the fleet (a viewer's or better)."""
    console = console or Console(stderr=True)
    headers = {"user-agent": "vigil-simulate", **CLIENT_HEADERS}
    if api_key:
        headers["x-api-key"] = api_key
    fleet = config.fleet()
    async with httpx.AsyncClient(
        base_url=url.rstrip("/"), headers=headers, transport=transport, timeout=10.0
    ) as client:
        try:
            health = await client.get("/health")
        except httpx.HTTPError as exc:
            raise DriveError(f"cannot reach Vigil at {url}: {exc or type(exc).__name__}") from exc
        if health.status_code != 200:
            raise DriveError(
                f"Vigil at {url} is not healthy: /health answered {health.status_code}"
            )
        reader = follow_key or api_key
        following = follow and await _follow(client, fleet, reader)
        if follow and not following:
            console.print(
                "[yellow]note:[/] Vigil's fleet API is not readable (the simulator is off, or "
                "the key cannot read: pass a viewer's as --follow-key); the load will not "
                "follow Vigil's remediations"
            )

        async def sync() -> None:
            await _follow(client, fleet, reader)

        sender = Sender(fleet, config, client, sync=sync if following else None)
        started = time.monotonic()
        task = asyncio.create_task(sender.run())
        loop = asyncio.get_running_loop()
        # Ctrl-C ends the run, not the program: the summary is still printed.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, task.cancel)
        try:
            if live:
                with Live(
                    _view(sender, config, 0.0, following), console=console, refresh_per_second=4
                ) as display:
                    while not task.done():
                        await asyncio.wait({task}, timeout=0.25)
                        display.update(_view(sender, config, time.monotonic() - started, following))
            else:
                await asyncio.wait({task})
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGINT)
        return DriveResult(sender.counts, time.monotonic() - started, following, fleet)


def _view(sender: Sender, config: RunConfig, elapsed: float, following: bool) -> Group:
    counts = sender.counts
    length = f"{config.duration_seconds:g}s" if config.duration_seconds else "until Ctrl-C"
    rate = counts.generated / elapsed if elapsed > 0 else 0.0
    head = Text.assemble(
        ("vigil simulate ", "bold"),
        f"{config.mode} at {config.rate:g}/s, {elapsed:5.1f}s of {length}  ",
        (f"sent {counts.generated:,} ({rate:,.0f}/s)  ", ""),
        (f"ok {counts.succeeded:,}  ", "green"),
        (f"rejected {counts.rejected:,}  ", "yellow"),
        (f"failed {counts.failed:,}", "red" if counts.failed else ""),
    )
    table = fleet_table(sender.fleet, title="fleet (following Vigil)" if following else "fleet")
    parts: list[Text | Table] = [head, table]
    if counts.last_error:
        parts.append(Text(f"last error: {counts.last_error}", style="red"))
    return Group(*parts)


def fleet_table(fleet: Fleet, *, title: str = "fleet") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("service")
    table.add_column("replicas", justify="right")
    table.add_column("cpu %", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("max memory %", justify="right")
    table.add_column("heartbeats")
    for s in fleet.services.values():
        table.add_row(
            s.name,
            str(s.replicas),
            f"{s.cpu_usage:.1f}",
            f"{s.latency_ms:.0f}",
            f"{max(s.memory.values(), default=0.0):.1f}",
            "yes" if fleet.heartbeating(s.name) else "[red]silent[/]",
        )
    return table


def summary_table(result: DriveResult) -> Table:
    counts = result.counts
    table = Table(title="summary", title_justify="left")
    table.add_column("")
    table.add_column("value", justify="right")
    rows = [
        ("seconds", f"{result.seconds:.1f}"),
        ("fleet steps", f"{counts.steps:,}"),
        ("requests", f"{counts.requests:,}"),
        ("samples generated", f"{counts.generated:,}"),
        ("accepted (2xx)", f"{counts.succeeded:,}"),
        ("rejected (4xx)", f"{counts.rejected:,}"),
        ("failed (5xx, no answer)", f"{counts.failed:,}"),
        ("malformed requests sent", f"{counts.malformed:,}"),
        ("requests given up on", f"{counts.abandoned:,}"),
        ("5xx answers", f"{counts.server_errors:,}"),
        ("samples/s", f"{counts.generated / result.seconds:,.0f}" if result.seconds else "-"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
