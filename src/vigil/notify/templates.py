"""Operator-written templates of the ``webhook`` channel: its ``body_template`` and its header
values, rendered with Jinja2's :class:`~jinja2.sandbox.SandboxedEnvironment`.

The context is the event as JSON values (the fields of the channel's default body, see
:data:`FIELDS`), plus ``notifications`` (every event of the message, one for a single event)
and ``count``. Undefined names fail (``StrictUndefined``) instead of rendering as empty text.
The body is JSON: ``tojson`` writes any value as JSON (no HTML escaping), so
``{"text": {{ reason | tojson }}}`` stays valid whatever the reason holds.

:func:`check` runs when the notifications file is validated: a template that does not parse,
or that names a variable the context never has, is refused there. What only rendering can
find (a missing key of ``details``, a sandbox refusal, a runaway loop: see
:data:`MAX_OUTPUT` and :data:`MAX_STEPS`) fails at send time: the channel then
delivers its default body and says so (:mod:`vigil.notify.channels.webhook`). Pure: no IO.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined, meta
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, safe_range

from vigil.strict import suggestion

FIELDS = (
    "id",
    "event",
    "at",
    "policy",
    "target",
    "action",
    "severity",
    "episode",
    "tags",
    "reason",
    "details",
    "links",
    "title",
)
"""The fields of one event in the context (those of the default body, and ``title``, the
headline the other channels show)."""

CONTEXT = (*FIELDS, "notifications", "count", "test")
"""Every top-level name a template may use: one event's fields (a group's oldest event),
``notifications`` (each event's fields, oldest first), ``count`` and ``test`` (sent by
``vigil notifications test``)."""

MAX_OUTPUT = 1_048_576
"""The most characters a template may render; beyond that rendering fails (a runaway loop
ends there instead of filling memory)."""


MAX_STEPS = 100_000
"""The most items all the ``range`` loops of one rendering may go through together (nested
loops that write nothing would otherwise spin unbounded)."""


class TemplateFailed(Exception):
    """A template did not parse or render; the text says why without quoting its source."""


def _tojson(value: Any) -> str:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()  # the name that is missing, not "not serializable"
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


class _Environment(SandboxedEnvironment):
    """The sandbox, with ``*`` and ``**`` kept from building huge values."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > MAX_OUTPUT:
                    raise TemplateFailed(f"a value of more than {MAX_OUTPUT} items")
        elif isinstance(right, int) and abs(right) > 1000:
            raise TemplateFailed("an exponent above 1000")
        return super().call_binop(context, operator, left, right)


def environment() -> SandboxedEnvironment:
    """The environment every webhook template is compiled in."""
    env = _Environment(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["tojson"] = _tojson
    return env


def _budgeted_range() -> Callable[..., Iterator[int]]:
    """A ``range`` whose loops, together, go through at most :data:`MAX_STEPS` items."""
    steps = 0

    def budgeted(*args: int) -> Iterator[int]:
        nonlocal steps
        for item in safe_range(*args):
            steps += 1
            if steps > MAX_STEPS:
                raise TemplateFailed(f"the loops went through more than {MAX_STEPS} items")
            yield item

    return budgeted


def _syntax(exc: TemplateSyntaxError) -> str:
    # The message and the line only: str(exc) quotes the source line, which may hold a value
    # read from the environment.
    return f"line {exc.lineno}: {exc.message}"


def check(env: SandboxedEnvironment, source: str) -> None:
    """Return if ``source`` parses and names only variables of the context; else raise
    :class:`TemplateFailed` saying what is wrong."""
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateFailed(f"not a valid template: {_syntax(exc)}") from None
    unknown = sorted(meta.find_undeclared_variables(tree) - set(CONTEXT) - set(env.globals))
    if unknown:
        name = unknown[0]
        close = suggestion(name, CONTEXT)
        hint = f" (did you mean {close!r}?)" if close else ""
        known = ", ".join(CONTEXT)
        raise TemplateFailed(f"unknown variable {name!r}{hint}; a template may use {known}")


def render(env: SandboxedEnvironment, source: str, context: Mapping[str, Any]) -> str:
    """``source`` rendered with ``context``; raises :class:`TemplateFailed` saying why it
    could not be (never quoting the template)."""
    try:
        template = env.from_string(source)
        parts: list[str] = []
        size = 0
        for part in template.generate({**context, "range": _budgeted_range()}):
            size += len(part)
            if size > MAX_OUTPUT:
                raise TemplateFailed(f"the rendered text passed {MAX_OUTPUT} characters")
            parts.append(part)
    except TemplateSyntaxError as exc:
        raise TemplateFailed(f"not a valid template: {_syntax(exc)}") from None
    except TemplateError as exc:
        raise TemplateFailed(f"{type(exc).__name__}: {exc.message or exc}") from None
    except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as exc:
        raise TemplateFailed(f"{type(exc).__name__}: {exc}") from None
    return "".join(parts)
