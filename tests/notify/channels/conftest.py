"""What the channel tests share: notifications and messages to send, and a local HTTP
server standing in for a channel's far side, keeping each request it is sent."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from vigil.notify.channels.base import Message, Thread, links
from vigil.notify.store import Notification

AT = datetime(2026, 12, 7, 21, 30, 5, tzinfo=UTC)
EXTERNAL = "https://vigil.example.com"


def notification(**fields: Any) -> Notification:
    """An ``action_failed`` notification of web-cpu-high on web-01, changed by ``fields``."""
    values: dict[str, Any] = {
        "id": 11,
        "at": AT,
        "event": "action_failed",
        "policy_name": "web-cpu-high",
        "target": "web-01",
        "action_id": 42,
        "reason": "scale-up on web-01 failed at attempt 3: quota exceeded",
        "details": {"action": "scale-up", "value": 97.5, "attempt": 3},
        "severity": "critical",
        "tags": {"team": "web"},
        "episode": 7,
        "delivery_status": "pending",
        "attempts": 0,
        "next_attempt_at": AT,
        "last_error": None,
        "delivered_at": None,
        "deliveries": None,
    }
    values.update(fields)
    return Notification(**values)


def message(
    *records: Notification,
    base_url: str | None = EXTERNAL,
    threads: dict[int, Thread] | None = None,
    test: bool = False,
) -> Message:
    """A message of ``records`` (default: one :func:`notification`), linked under
    ``base_url`` (``None``: paths)."""
    records = records or (notification(),)
    return Message(
        notifications=tuple(records),
        links={r.id: links(r, base_url) for r in records},
        threads=threads or {},
        test=test,
    )


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int
    body: bytes = b""


@dataclass
class FarSide:
    """A local HTTP server: each POST is kept and answered with the next of ``answers``
    (the last repeats)."""

    url: str
    answers: list[Answer] = field(default_factory=lambda: [Answer(200)])
    requests: list[Request] = field(default_factory=list)


@pytest.fixture
def far_side() -> Iterator[FarSide]:
    holder: list[FarSide] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            state = holder[0]
            content = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                state.requests.append(
                    Request(
                        path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=content,
                    )
                )
                answer = state.answers[min(len(state.requests), len(state.answers)) - 1]
            self.send_response(answer.status)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(FarSide(url=f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LONG_ANSWER = ("quota exceeded " * 40).encode()
"""A far side's long error body: a delivery error keeps its first 200 characters."""
