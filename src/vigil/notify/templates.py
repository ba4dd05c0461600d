"""Operator-written templates of the ``webhook`` channel: its ``body_template`` and its header
values, rendered with Jinja2's :class:`~jinja2.sandbox.SandboxedEnvironment`.

The context is the event as JSON values (the fields of the channel's default body, see
:data:`FIELDS`), plus ``notifications`` (every event of the message, one for a single event)
and ``count``. Undefined names fail (``StrictUndefined``) instead of rendering as empty text.
The body is JSON: ``tojson`` writes any value as JSON (no HTML escaping), so
``{"text": {{ reason | tojson }}}`` stays valid whatever the reason holds.

:func:`check` runs when the notifications file is validated: a template that does not parse,
or that names a variable the context never has, is refused there. What only rendering can
find (a missing key of ``details``, a sandbox refusal, a runaway loop or a value built
past :data:`MAX_OUTPUT` by an operator, a string method or a filter: see :data:`MAX_OUTPUT`
and :data:`MAX_STEPS`) fails at send time: the channel then
delivers its default body and says so (:mod:`vigil.notify.channels.webhook`). Pure: no IO.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from string import Formatter
from typing import Any

import orjson
from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined, meta
from jinja2.filters import do_center, do_format, do_indent
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


def _bound(size: int) -> None:
    if size > MAX_OUTPUT:
        raise TemplateFailed(f"a value of more than {MAX_OUTPUT} characters")


def _big(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > MAX_OUTPUT


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | dict) else 0


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_NUMBER = re.compile(r"\d+")


def _check_percent(template: str, values: Any) -> None:
    """Refuse ``template % values`` when what it could build passes :data:`MAX_OUTPUT`:
    every field's width and precision, and the longest value in each field."""
    if isinstance(values, tuple):
        args: list[Any] = list(values)
    elif isinstance(values, dict):
        args = list(values.values())
    else:
        args = [values]
    longest = max((_sized(a) for a in args), default=0)
    starred = max((a for a in args if isinstance(a, int) and not isinstance(a, bool)), default=0)
    size = len(template)
    for match in _PERCENT_SPEC.finditer(template):
        for part in match.groups():
            if part == "*":
                size += max(0, starred)
            elif part:
                size += int(part)
        size += longest
        _bound(size)


def _check_format(template: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse ``template.format(...)`` when what it could build passes :data:`MAX_OUTPUT`."""
    values = [*args, *kwargs.values()]
    longest = max((_sized(v) for v in values), default=0)
    widest = max((v for v in values if isinstance(v, int) and not isinstance(v, bool)), default=0)
    size = len(template)
    try:
        fields = list(Formatter().parse(template))
    except ValueError:
        return  # format() itself refuses it
    for _, name, spec, _ in fields:
        if name is None:
            continue
        size += longest + sum(int(n) for n in _NUMBER.findall(spec or ""))
        if "{" in (spec or ""):
            size += max(0, widest)
        _bound(size)


def _check_method(method: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse a call of a string method that would build a value past :data:`MAX_OUTPUT`."""
    method = getattr(method, "__wrapped__", method)  # the sandbox's str.format wrapper
    text = getattr(method, "__self__", None)
    if not isinstance(text, str):
        return
    name = getattr(method, "__name__", "")
    values = [*args, *kwargs.values()]
    if name in ("ljust", "rjust", "center", "zfill") and any(_big(v) for v in values):
        raise TemplateFailed(f"a width of more than {MAX_OUTPUT} characters")
    if name == "expandtabs" and values and isinstance(values[0], int):
        _bound(len(text) + text.count("\t") * values[0])
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str):
        old, new = args[0], args[1]
        if isinstance(new, str) and len(new) > len(old):
            times = len(text) + 1 if not old else text.count(old)
            _bound(len(text) + times * (len(new) - len(old)))
    if name == "format":
        _check_format(text, args, kwargs)
    if name == "format_map" and args and isinstance(args[0], Mapping):
        _check_format(text, (), args[0])


class _Environment(SandboxedEnvironment):
    """The sandbox, with operators, string methods and filters kept from building values
    past :data:`MAX_OUTPUT` (a template that tries fails instead of filling memory)."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > MAX_OUTPUT:
                    raise TemplateFailed(f"a value of more than {MAX_OUTPUT} items")
        elif operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                _bound(len(left) + len(right))
        elif operator == "%":
            if isinstance(left, str):
                _check_percent(left, right)
        elif isinstance(right, int) and abs(right) > 1000:
            raise TemplateFailed("an exponent above 1000")
        return super().call_binop(context, operator, left, right)

    def call(
        __self,  # the sandbox's own signature: no clash with a keyword argument
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        _check_method(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def _center(value: Any, width: int = 80) -> str:
    if _big(width):
        raise TemplateFailed(f"a width of more than {MAX_OUTPUT} characters")
    return str(do_center(value, width))


def _indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = str(s)
    each = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    _bound(len(text) + (text.count("\n") + 1) * max(0, each))
    return str(do_indent(text, width, first, blank))


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    if isinstance(value, str):
        _check_percent(value, kwargs if kwargs else tuple(args))
    return str(do_format(value, *args, **kwargs))


def environment() -> SandboxedEnvironment:
    """The environment every webhook template is compiled in."""
    env = _Environment(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["tojson"] = _tojson
    env.filters["center"] = _center
    env.filters["indent"] = _indent
    env.filters["format"] = _format
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
    except MemoryError:
        raise TemplateFailed("MemoryError: the template built a value too large") from None
    except RecursionError:
        raise TemplateFailed("RecursionError: the template went too deep") from None
    return "".join(parts)
