"""Structured logs: one JSON object per line (or, for humans, a console rendering), each
with an event and its fields, and the request id of whatever the line is about.

Everything goes through one renderer: Vigil's own loggers (stdlib or structlog), uvicorn's
and SQLAlchemy's. A request id bound with :func:`bound` is added to every line
logged in that context (a request, a worker's task, a remediation), so ``grep`` on one id
shows the whole story. Secrets never reach the output: fields whose names say they hold
one are masked, and so are passwords inside URLs.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["json", "console"]

_SECRET_KEYS = re.compile(r"(secret|password|passwd|api[_-]?key|authorization|token)", re.I)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@", re.I)
_BEARER = re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]+", re.I)
MASK = "***"


def redact(text: str) -> str:
    """``text`` with passwords in URLs and bearer tokens masked."""
    return _BEARER.sub(rf"\1{MASK}", _URL_PASSWORD.sub(rf"\g<scheme>{MASK}@", text))


def _redact_secrets(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event.pop("color_message", None)  # uvicorn's copy of the message with ANSI colours
    for key, value in list(event.items()):
        if key != "event" and _SECRET_KEYS.search(key) and value is not None:
            event[key] = MASK
        elif isinstance(value, str):
            event[key] = redact(value)
    return event


def _shared() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]


def configure_logging(
    level: str = "info", fmt: LogFormat = "json", stream: TextIO | None = None
) -> None:
    """Send every log line of this process, through one renderer, to ``stream`` (stderr)."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *_shared(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared(), structlog.stdlib.PositionalArgumentsFormatter()],
        # For every line, Vigil's and uvicorn's or SQLAlchemy's alike: once.
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # uvicorn and SQLAlchemy log through the root handler, in the same format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "sqlalchemy", "alembic"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True


def get_logger(name: str) -> Any:
    """A structlog logger: ``log.info("task.completed", action_id=1)``."""
    return structlog.stdlib.get_logger(name)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every line logged inside the block (in this task or thread)."""
    with structlog.contextvars.bound_contextvars(**fields):
        yield


def request_id_header() -> dict[str, str]:
    """``{"X-Request-ID": ...}`` for the request id bound in this context (or nothing), so
    the next process logs under it too."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    return {"X-Request-ID": str(request_id)} if request_id else {}
