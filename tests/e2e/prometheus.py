"""Real Prometheus and Alertmanager servers for the end-to-end tests, and the tiny exporter
they scrape.

Each server is the machine's binary (Debian's ``prometheus`` and ``prometheus-alertmanager``;
``.ci/run`` installs them), run as the test's child on a free port with its own config, data
directory and log, never the packaged service.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from tests import helpers
from tests.e2e.procs import LOG_TAIL_LINES, START_TIMEOUT, STOP_TIMEOUT
from tests.services import need_prometheus
from vigil.local import free_port


@dataclass
class Prometheus:
    """A running Prometheus server and a client of its query API."""

    url: str
    log_path: Path
    popen: subprocess.Popen[bytes]
    http: httpx.Client

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector ``promql`` evaluates to now (``GET /api/v1/query``)."""
        response = self.http.get("/api/v1/query", params={"query": promql})
        assert response.status_code == 200, f"{promql}: {response.text}{self.tail()}"
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single sample's value, or None while there is none."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def tail(self) -> str:
        return _tail("prometheus", self.log_path)


def _tail(name: str, log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return f"\n----- {name} -----\n" + "\n".join(lines)


class Exporter:
    """A ``/metrics`` page in Prometheus's text format, served from the moment it is made:
    each series of ``values`` (``name`` or ``name{labels}``) at the value the test sets."""

    def __init__(self, values: dict[str, float]) -> None:
        self.values = values
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                text = "".join(f"{series} {value}\n" for series, value in exporter.values.items())
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


@contextmanager
def running(
    name: str, argv: list[str], log_path: Path, ready_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` (its output appended to ``log_path``); yield it once ``ready_url``
    answers 200; stop it, if it is still running, when the block exits."""
    log: IO[bytes] = log_path.open("ab")
    popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def ready() -> bool:
        if popen.poll() is not None:
            raise AssertionError(f"{name} exited with {popen.returncode}" + _tail(name, log_path))
        try:
            return httpx.get(ready_url, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        helpers.wait_for(
            ready,
            within=START_TIMEOUT,
            what=f"{name} to be ready",
            interval=0.05,
            details=lambda: _tail(name, log_path),
        )
        yield popen
    finally:
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        log.close()


def scraping(target: str, *, job: str, **more: Any) -> dict[str, Any]:
    """A Prometheus config scraping ``target`` (host:port) every second as ``job``, with
    ``more`` top-level sections (``remote_write``, ``rule_files``, ``alerting``...)."""
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}],
        **more,
    }


@contextmanager
def running_prometheus(
    directory: Path, config: dict[str, Any], *, port: int | None = None
) -> Iterator[Prometheus]:
    """Prometheus with ``config`` on ``port`` (a free one by default), its data in
    ``directory`` (kept across restarts in the same directory); yield it once it is ready;
    stop it, if still running, when the block exits."""
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        need_prometheus(),
        f"--config.file={path}",
        f"--storage.tsdb.path={directory / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    log_path = directory / "prometheus.log"
    with running("prometheus", argv, log_path, f"{url}/-/ready") as popen:
        http = httpx.Client(base_url=url, timeout=5)
        try:
            yield Prometheus(url, log_path, popen, http)
        finally:
            http.close()
