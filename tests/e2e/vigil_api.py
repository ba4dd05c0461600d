"""Talking to a running Vigil over HTTP, and the remediations the end-to-end tests run.

Every test action is ``restart-service`` on a target whose prefix picks the command:

- ``fail-*``: appends the attempt to ``RUNS/<target>``, exits 1 (max 2 attempts, 0.1 s
  backoff);
- ``slow-*``: appends the attempt, then sleeps 2 s;
- ``brief-*``: appends the attempt, then sleeps 1 s;
- anything else: appends the attempt.

``scale-up`` (the policies' action) appends the attempt on any target. So
``runs(runs_dir, target)`` lists the attempts that actually ran, one line per run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.e2e.procs import Processes, wait_for
from vigil.strict import CLIENT_HEADERS

ACTION = "restart-service"
SCALE_UP = "scale-up"


def _command(runs_dir: Path, then: str) -> str:
    # $0 is the target, $1 the attempt (argv after the script); both are placeholders, whose
    # values Vigil checks (a target cannot name a path or an option).
    script = f'echo "$1" >> "{runs_dir}/$0"'
    if then:
        script += f"; {then}"
    return script


def write_remediations(directory: Path, runs_dir: Path) -> Path:
    entries = [
        (ACTION, "fail-*", "exit 1", "    retries: {max_attempts: 2, backoff_seconds: 0.1}\n"),
        (ACTION, "slow-*", "sleep 2", ""),
        (ACTION, "brief-*", "sleep 1", ""),
        (ACTION, "*", "", ""),
        (SCALE_UP, "*", "", ""),
    ]
    lines = ["remediations:\n"]
    for action, targets, then, extra in entries:
        script = _command(runs_dir, then).replace("\\", "\\\\").replace('"', '\\"')
        lines.append(
            f"  - action: {action}\n"
            f'    targets: "{targets}"\n'
            "    plugin: command\n"
            f'    with: {{argv: ["sh", "-c", "{script}", "{{target}}", "{{attempt}}"]}}\n'
            "    timeout: 20\n"
            f"{extra}"
        )
    path = directory / "remediations.yaml"
    path.write_text("".join(lines))
    return path


def runs(runs_dir: Path, target: str) -> list[int]:
    """The attempts the command ran for ``target``, in order (one line per run)."""
    path = runs_dir / target
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().split()]


class Api:
    """A small client of one API process; failures carry the processes' log tails."""

    def __init__(self, url: str, procs: Processes) -> None:
        self.url = url
        self.procs = procs
        self.http = httpx.Client(base_url=url, timeout=10, headers=CLIENT_HEADERS)

    def close(self) -> None:
        self.http.close()

    def _json(self, response: httpx.Response, expect: int = 200) -> Any:
        assert response.status_code == expect, (
            f"{response.request.method} {response.request.url}: {response.status_code} "
            f"{response.text}" + self.procs.tails()
        )
        return response.json()

    def create(self, target: str, action: str = ACTION) -> int:
        body = self._json(
            self.http.post("/api/v1/actions", json={"target": target, "action": action}), 201
        )
        return int(body["action_id"])

    def action(self, action_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self.http.get(f"/api/v1/actions/{action_id}"))
        return result

    def history(self, action_id: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json(
            self.http.get(f"/api/v1/actions/{action_id}/history")
        )
        return result

    def actions(self, **query: str) -> list[dict[str, Any]]:
        """The actions ``GET /api/v1/actions`` lists for ``query`` (newest first)."""
        body = self._json(self.http.get("/api/v1/actions", params={"limit": "500", **query}))
        result: list[dict[str, Any]] = body["actions"]
        return result

    def ingest(self, name: str, value: float, target: str) -> None:
        self._json(
            self.http.post("/api/v1/ingest", json={"name": name, "value": value, "target": target}),
            201,
        )

    def create_policy(self, policy: dict[str, Any]) -> None:
        self._json(self.http.post("/api/v1/policies", json=policy), 201)

    def policy_state(self, name: str) -> dict[str, dict[str, Any]]:
        """Each target's state of policy ``name``, by target."""
        body = self._json(self.http.get(f"/api/v1/policies/{name}/state"))
        return {row["target"]: row for row in body["targets"]}

    def runner(self) -> dict[str, Any]:
        """This process's runner, as ``GET /api/v1/policies/runner/status`` shows it."""
        result: dict[str, Any] = self._json(self.http.get("/api/v1/policies/runner/status"))[
            "runner"
        ]
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self.http.get("/api/v1/queue/stats"))
        return result

    def dead_letter(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self.http.get("/api/v1/queue/dead-letter"))
        return result

    def redrive(self, task_ids: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            self.http.post("/api/v1/queue/dead-letter/redrive", json={"task_ids": task_ids})
        )
        return result

    def wait_status(self, action_id: int, *statuses: str, timeout: float = 10.0) -> dict[str, Any]:
        """Poll the action until its status is one of ``statuses``; the action."""

        def reached() -> dict[str, Any] | None:
            found = self.action(action_id)
            return found if found["status"] in statuses else None

        return wait_for(
            reached,
            timeout=timeout,
            what=lambda: (
                f"action {action_id} to be {' or '.join(statuses)} "
                f"(history: {transitions(self.history(action_id))})"
            ),
            procs=self.procs,
        )


def transitions(history: list[dict[str, Any]]) -> list[tuple[str | None, str, int]]:
    """(from, to, attempt) of each history row, oldest first."""
    return [(row["from"], row["to"], row["attempt"]) for row in history]
