"""A local HTTP server standing in for a channel's far side (a webhook, Teams, PagerDuty):
it keeps each request it is sent and answers with the answers it is given."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int
    body: bytes = b""


@dataclass
class FarSide:
    """Each POST is kept and answered with the next of ``answers`` (the last repeats); the
    POSTs to a path of ``answers_by_path`` take theirs from that path's own list. With
    ``hang`` set, a POST is kept and never answered; ``asked`` is set at the first POST;
    ``stop`` takes the server down (later connections are refused)."""

    url: str
    answers: list[Answer] = field(default_factory=lambda: [Answer(200)])
    answers_by_path: dict[str, list[Answer]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    hang: bool = False
    asked: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    stop: Callable[[], None] = lambda: None

    def answer(self, path: str) -> Answer:
        """The answer to the POST to ``path`` just kept."""
        answers = self.answers_by_path.get(path)
        if answers is None:
            answers = self.answers
            seen = sum(r.path not in self.answers_by_path for r in self.requests)
        else:
            seen = sum(r.path == path for r in self.requests)
        return answers[min(seen, len(answers)) - 1]


@contextmanager
def far_side_running() -> Iterator[FarSide]:
    holder: list[FarSide] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            state = holder[0]
            content = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with lock:
                state.requests.append(Request(path=self.path, headers=headers, body=content))
                answer = state.answer(self.path)
            state.asked.set()
            if state.hang:
                state.released.wait()  # until the server stops
                return
            self.send_response(answer.status)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            holder[0].released.set()
            server.shutdown()
            server.server_close()
            thread.join()

    holder.append(FarSide(url=f"http://127.0.0.1:{server.server_address[1]}", stop=stop))
    thread.start()
    try:
        yield holder[0]
    finally:
        stop()


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
