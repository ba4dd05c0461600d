"""``vigil demo``: the "Scale up the web tier" story, with real components and real
timing, on the embedded defaults in a temporary directory.

It starts ``vigil serve`` (SQLite, in-process queue, worker and remediator) with one policy,
``high-cpu-alert`` (CPU above 90% for 10 s → ``scale-up`` by 2 replicas, verified within a
minute), and a remediations file that sends scale actions to the ``simulator`` plugin. It
starts the server's simulator at normal load and, once it has seen that for a few seconds,
raises the web tier's load (a ``burst`` run); otherwise it only watches, through the API and
``/metrics``, printing each step as it happens:

1. the web tier runs at normal load;  2. load rises and CPU passes 90%;
3. the policy fires and creates a ``scale-up`` action;  4. the worker hands it to the
remediator, which scales the simulated deployment (2 → 4 replicas);  5. the action
completes;  6. CPU falls below the threshold and the action is verified;
7. ``vigil_policy_violations_total{policy_name="high-cpu-alert"}`` has increased.

It exits 0 only when every step really happened, 1 otherwise (naming what did not).

One module, past the usual size, because it is a script read top to bottom: the story's
steps, each with the evidence it checks through the API.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from vigil.local import (
    Server,
    ServerFailed,
    clean_env,
    free_port,
    port_free,
    start,
    stop,
    wait_healthy,
)
from vigil.strict import CLIENT_HEADERS

POLICY = "high-cpu-alert"
SERVICE = "web"
THRESHOLD = 90.0


@dataclass(frozen=True, slots=True)
class Timing:
    """How long each part of the story takes."""

    for_seconds: float
    """The policy's ``for``: how long CPU must stay above 90%."""
    burst_at: float
    """How long the web tier runs at normal load (once seen) before its load rises."""
    rate: float
    """Samples per second the simulator sends."""
    runner_interval: float
    verify_within: float
    deadline: float
    """How long the whole story may take before the demo gives up."""


NORMAL = Timing(
    for_seconds=10, burst_at=6, rate=20, runner_interval=1, verify_within=60, deadline=95
)
FAST = Timing(
    for_seconds=2, burst_at=2, rate=60, runner_interval=0.25, verify_within=30, deadline=60
)

STEPS = (
    ("normal", "the web tier runs at normal load"),
    ("hot", f"load rises and CPU passes {THRESHOLD:g}%"),
    ("fired", f"{POLICY} fires and creates a scale-up action"),
    ("scaled", "the remediator scales the web tier"),
    ("completed", "the action completes"),
    ("verified", "CPU falls below the threshold; the action is verified"),
    ("counted", "vigil_policy_violations_total (/metrics) increased"),
)


def policies_yaml(timing: Timing) -> str:
    policy = {
        "name": POLICY,
        "description": f"Scale up the web tier when CPU stays above 90% for "
        f"{timing.for_seconds:g}s",
        "severity": "warning",
        "target": SERVICE,
        "auto_remediate": True,
        "condition": {
            "type": "threshold",
            "metric": "cpu_usage",
            "operator": ">",
            "threshold": THRESHOLD,
            "for": f"{timing.for_seconds:g}s",
        },
        "action": "scale-up",
        "params": {"replicas": 2},
        "cooldown_seconds": 300,
        "verify": {"within_seconds": timing.verify_within},
    }
    return json.dumps({"policies": [policy]}, indent=2)  # JSON is YAML


REMEDIATIONS_YAML = """\
# vigil demo: the simulated fleet's remediations.
remediations:
  - action: scale-up
    plugin: simulator
  - action: scale-down
    plugin: simulator
  - action: restart-service
    plugin: simulator
"""


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


class DemoFailed(Exception):
    """The demo could not run (the server did not start); the message says why."""


@dataclass
class Story:
    """What the demo has seen so far."""

    started: float = field(default_factory=time.monotonic)
    at: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)
    action_id: int | None = None
    transitions: int = 0
    replicas: int | None = None
    normal_replicas: int | None = None
    phase: str | None = None
    violations_before: float = 0.0
    last_tick: float = 0.0
    burst: bool = False
    """Whether the web tier's load was raised."""
    verification_failed: bool = False

    def done(self, step: str) -> bool:
        return step in self.at

    def at_time(self, step: str) -> float:
        """The monotonic time ``step`` was seen at."""
        return self.started + self.at[step]

    def mark(self, step: str, evidence: str) -> None:
        if step not in self.at:
            self.at[step] = time.monotonic() - self.started
            self.evidence[step] = evidence

    @property
    def complete(self) -> bool:
        return all(step in self.at for step, _ in STEPS)


class Demo:
    def __init__(
        self,
        *,
        port: int | None = None,
        keep: bool = False,
        fast: bool = False,
        console: Console | None = None,
    ) -> None:
        self.port = port or free_port()
        self.keep = keep
        self.timing = FAST if fast else NORMAL
        # Not a terminal (a log, a pipe): wide enough that a timeline line stays one line.
        self.console = console or (Console() if sys.stdout.isatty() else Console(width=120))
        self.url = f"http://127.0.0.1:{self.port}"
        self.story = Story()
        self.server: Server | None = None
        self.workdir: Path | None = None

    # --- the timeline -------------------------------------------------------------------

    def say(self, text: str, style: str = "") -> None:
        elapsed = time.monotonic() - self.story.started
        clock = time.strftime("%H:%M:%S")
        self.console.print(
            f"[dim]{clock} +{elapsed:5.1f}s[/]  {text}", style=style, highlight=False
        )

    def run(self) -> int:
        """The whole demo; its exit code."""
        if not port_free(self.port):
            # Another server there would answer /health for ours, and the demo would drive it.
            self.console.print(f"[red]error:[/] port {self.port} is in use; choose another")
            return 1
        self.workdir = Path(tempfile.mkdtemp(prefix="vigil-demo-"))
        kept = False
        # SIGTERM and SIGHUP clean up as Ctrl-C does: the server is stopped, its files removed.
        previous = {
            signum: signal.signal(signum, _exit_on_signal)
            for signum in (signal.SIGTERM, signal.SIGHUP)
        }
        try:
            self._start_server()
            # trust_env=False: the demo's own loopback server, never through a proxy.
            with httpx.Client(
                base_url=self.url, timeout=10.0, trust_env=False, headers=CLIENT_HEADERS
            ) as client:
                self.story.violations_before = self._violations(client)
                self._start_load(client)
                self._watch(client)
                ok = self.story.complete
                self._summary(client)
            if ok and self.keep:
                kept = True
                assert self.server is not None
                pid = self.server.process.pid
                self.console.print(f"Vigil is running at {self.url}")
                self.console.print(
                    f"(pid {pid}, data and log in {self.workdir}; the simulator "
                    f"keeps sending; stop it with: kill {pid})",
                    style="dim",
                    highlight=False,
                )
            return 0 if ok else 1
        except DemoFailed as exc:
            self.console.print(f"[red]error:[/] {exc}")
            return 1
        finally:
            if not kept:
                if self.server is not None:
                    stop(self.server)
                if self.workdir is not None:
                    shutil.rmtree(self.workdir, ignore_errors=True)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _start_server(self) -> None:
        assert self.workdir is not None
        t = self.timing
        (self.workdir / "policies.yaml").write_text(policies_yaml(t))
        (self.workdir / "remediations.yaml").write_text(REMEDIATIONS_YAML)
        env = {
            **clean_env(),
            "DATABASE_URL": f"sqlite:///{self.workdir / 'vigil.db'}",
            "VIGIL_HOST": "127.0.0.1",
            "VIGIL_PORT": str(self.port),
            "VIGIL_POLICIES_FILE": str(self.workdir / "policies.yaml"),
            "VIGIL_REMEDIATIONS_FILE": str(self.workdir / "remediations.yaml"),
            "VIGIL_RUNNER_INTERVAL_SECONDS": f"{t.runner_interval:g}",
            "VIGIL_ACCESS_LOG": "false",
            "VIGIL_LOG_LEVEL": "warning",
        }
        self.say(f"starting vigil serve on {self.url} (SQLite and logs in {self.workdir})")
        argv = [sys.executable, "-m", "vigil", "serve"]
        self.server = start("vigil", argv, env, self.port, self.workdir)
        try:
            wait_healthy(self.server, timeout=30)
        except ServerFailed as exc:
            raise DemoFailed(str(exc)) from exc
        self.say(
            f"policy [bold]{POLICY}[/]: cpu_usage > {THRESHOLD:g} on {SERVICE} for "
            f"{self.timing.for_seconds:g}s → scale-up by 2 replicas, verified within "
            f"{self.timing.verify_within:g}s"
        )

    def _start_load(self, client: httpx.Client, *, burst: bool = False) -> None:
        """The simulator at normal load, or (``burst``) a run whose web load is high."""
        t = self.timing
        body: dict[str, Any] = {"scenario": "scale-up-the-web-tier", "rate": t.rate, "seed": 1}
        if burst:
            body |= {"mode": "burst", "burst_at_seconds": 0, "burst_seconds": 3600}
            client.post("/api/v1/simulator/stop")
        answer = client.post("/api/v1/simulator/start", json=body)
        if answer.status_code != 200:
            raise DemoFailed(f"the simulator did not start: {answer.status_code} {answer.text}")
        if burst:
            self.story.burst = True
            self.say("the web tier's load rises: nearly double", "yellow")
        else:
            self.say(f"simulator started: web, api and db send metrics over HTTP at {t.rate:g}/s")

    # --- watching -------------------------------------------------------------------------

    def _watch(self, client: httpx.Client) -> None:
        story = self.story
        deadline = story.started + self.timing.deadline
        while not story.complete and time.monotonic() < deadline:
            if self.server is not None and self.server.process.poll() is not None:
                code = self.server.process.returncode
                self.say(f"vigil serve exited with {code}", style="red")
                break
            # A slow or odd answer (Vigil busy, restarting) is looked at again next time.
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                self._look(client)
            time.sleep(0.25)
        if not story.complete:
            missing = [text for step, text in STEPS if not story.done(step)]
            self.say(f"gave up after {self.timing.deadline:g}s; not seen: " + "; ".join(missing))

    def _look(self, client: httpx.Client) -> None:
        story = self.story
        status = client.get("/api/v1/simulator/status").json()
        web = status["fleet"]["services"][SERVICE]
        cpu, replicas = float(web["cpu_usage"]), int(web["replicas"])
        if self._look_at_load(client, status, cpu, replicas):
            return
        self._look_at_policy(client)
        if story.action_id is None:
            self._look_for_action(client)
        if story.action_id is not None:
            self._follow_action(client, story.action_id, replicas, cpu)
        if story.replicas is not None and replicas != story.replicas:
            self.say(f"web replicas {story.replicas} → {replicas}", style="bold")
        story.replicas = replicas
        if story.done("verified") and not story.done("counted"):
            count = self._violations(client)
            if count > story.violations_before:
                story.mark("counted", f"{POLICY}: {story.violations_before:g} → {count:g}")
                self.say(
                    f'vigil_policy_violations_total{{policy_name="{POLICY}"}} '
                    f"{story.violations_before:g} → {count:g}",
                    "green",
                )

    def _look_at_load(
        self, client: httpx.Client, status: dict[str, Any], cpu: float, replicas: int
    ) -> bool:
        """Tell how loaded the web tier is; True when this look raised the load."""
        story = self.story
        sent = status["events_succeeded"] > 0
        now = time.monotonic()
        if sent and now - story.last_tick >= 2.0:
            story.last_tick = now
            self.say(
                f"[dim]web cpu {cpu:5.1f}% on {replicas} replicas; "
                f"{status['events_succeeded']:,} samples ingested[/]"
            )
        if sent and cpu < THRESHOLD and not story.done("normal"):
            story.mark("normal", f"cpu {cpu:.1f}% on {replicas} replicas")
            story.normal_replicas = replicas
            self.say(f"web tier at normal load: cpu {cpu:.1f}% on {replicas} replicas", "green")
        if (
            story.done("normal")
            and not story.burst
            and now - story.at_time("normal") >= (self.timing.burst_at)
        ):
            self._start_load(client, burst=True)
            return True
        if story.burst and sent and cpu > THRESHOLD and not story.done("hot"):
            story.mark("hot", f"cpu {cpu:.1f}%")
            self.say(f"web cpu {cpu:.1f}% > {THRESHOLD:g}%", "yellow")
        return False

    def _look_at_policy(self, client: httpx.Client) -> None:
        story = self.story
        state = client.get(f"/api/v1/policies/{POLICY}/state").json()
        pair = next((p for p in state.get("targets", []) if p["target"] == SERVICE), None)
        phase = pair["state"] if pair else None
        if phase != story.phase and phase is not None:
            self.say(f"{POLICY} for {SERVICE}: {story.phase or 'ok'} → {phase}")
            story.phase = phase
        if story.burst and phase in ("pending", "firing") and not story.done("hot"):
            # Missed between two looks (a busy machine): the policy saw it, which is proof.
            story.mark("hot", f"{POLICY} {phase}: cpu_usage > {THRESHOLD:g} ingested")

    def _look_for_action(self, client: httpx.Client) -> None:
        story = self.story
        listed = client.get("/api/v1/actions", params={"policy": POLICY}).json()["actions"]
        if listed:
            action = listed[-1]
            story.action_id = int(action["id"])
            story.mark(
                "fired",
                f"action #{action['id']} {action['action']} {action['target']} "
                f"params {action['params']}",
            )
            self.say(
                f"{POLICY} fired: action #{action['id']} {action['action']} "
                f"{action['target']} {action['params']} created",
                "bold",
            )

    def _follow_action(
        self, client: httpx.Client, action_id: int, replicas: int, cpu: float
    ) -> None:
        story = self.story
        rows = client.get(f"/api/v1/actions/{action_id}/history").json()
        for row in rows[story.transitions :]:
            self.say(f"action #{action_id} {row['from'] or 'new'} → {row['to']}: {row['reason']}")
        story.transitions = len(rows)
        action = client.get(f"/api/v1/actions/{action_id}").json()
        result = action.get("result") or {}
        if (
            story.normal_replicas is not None
            and replicas > story.normal_replicas
            and not story.done("scaled")
        ):
            story.mark("scaled", f"replicas {story.normal_replicas} → {replicas}")
        if action["status"] == "completed" and not story.done("completed"):
            story.mark(
                "completed",
                f"{action['status']} after {action['attempts']} attempt(s): "
                f"{result.get('message', '')}",
            )
        verification = action.get("verification") or {}
        if verification.get("result") == "verified" and not story.done("verified"):
            story.mark("verified", f"cpu {cpu:.1f}% < {THRESHOLD:g}%; verified")
            self.say(f"action #{action_id} verified: web cpu now {cpu:.1f}%", "green")
        elif verification.get("result") == "failed" and not story.verification_failed:
            story.verification_failed = True
            self.say(f"action #{action_id} verification failed: {verification}", "red")

    def _violations(self, client: httpx.Client) -> float:
        text = client.get("/metrics").text
        total = 0.0
        for family in text_string_to_metric_families(text):
            if family.name != "vigil_policy_violations":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("policy_name") == POLICY:
                    total += sample.value
        return total

    def _summary(self, client: httpx.Client) -> None:
        table = Table(title="vigil demo: scale up the web tier", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("step")
        table.add_column("at", justify="right")
        table.add_column("seen", overflow="fold")
        for n, (step, text) in enumerate(STEPS, 1):
            at = self.story.at.get(step)
            seen = self.story.evidence.get(step, "[red]not seen[/]")
            table.add_row(str(n), text, f"+{at:.1f}s" if at is not None else "-", seen)
        self.console.print(table)
        took = time.monotonic() - self.story.started
        if self.story.complete:
            self.console.print(f"[green]every step happened[/] in {took:.1f}s", highlight=False)
        else:
            self.console.print(f"[red]the story is incomplete[/] after {took:.1f}s")
            if self.server is not None:
                tail = self.server.log_tail(20)
                self.console.print(tail, style="dim", markup=False, highlight=False)


def run_demo(
    *,
    port: int | None = None,
    keep: bool = False,
    fast: bool = False,
    console: Console | None = None,
) -> int:
    return Demo(port=port, keep=keep, fast=fast, console=console).run()
