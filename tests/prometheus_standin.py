"""A stand-in for a Prometheus query API, on a real local port: it answers each query with
the series a test set, refuses the queries a test calls bad as Prometheus does (400
``bad_data``), and answers 503 while a test says it is down. Real Prometheus is in
``tests/e2e/test_promql.py``; this keeps the storage tests fast and exact."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

Series = tuple[dict[str, str], float]


@dataclass
class StandIn:
    url: str = ""
    series: dict[str, list[Series]] = field(default_factory=dict)
    """query → the instant vector it returns (an unknown query returns none)."""
    matrix: dict[str, list[tuple[dict[str, str], list[tuple[float, float]]]]] = field(
        default_factory=dict
    )
    """query → the matrix a range query returns."""
    refused: dict[str, str] = field(default_factory=dict)
    """query → the parse error Prometheus would give."""
    down: bool = False
    asked: list[dict[str, str]] = field(default_factory=list)

    def answer(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.asked.append({"path": path, **form})
        if self.down:
            return 503, {"status": "error", "errorType": "unavailable", "error": "down"}
        query = form.get("query", "")
        if query in self.refused:
            return 400, {"status": "error", "errorType": "bad_data", "error": self.refused[query]}
        if path == "/api/v1/query_range":
            result: list[dict[str, Any]] = [
                {"metric": labels, "values": [[t, str(v)] for t, v in points]}
                for labels, points in self.matrix.get(query, [])
            ]
            return 200, {"status": "success", "data": {"resultType": "matrix", "result": result}}
        at = float(form.get("time", "0"))
        result = [
            {"metric": labels, "value": [at, str(value)]}
            for labels, value in self.series.get(query, [])
        ]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


@contextmanager
def running_standin() -> Iterator[StandIn]:
    standin = StandIn()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            fields = parse_qs(self.rfile.read(length).decode())
            status, body = standin.answer(self.path, {k: v[0] for k, v in fields.items()})
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
