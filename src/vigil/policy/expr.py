"""The ``expr`` condition: a boolean expression over a target's latest metric values and its
tags, e.g. ``cpu_percent > 90 and tags.region == "us-east-1"``.

Python's own parser reads the text once; the tree is then checked against a whitelist
(comparisons, ``and``/``or``/``not``, unary ``-``/``+``, numbers, strings, booleans, names and
calls of ``abs``/``min``/``max``) and rebuilt with every dotted name (``tags.region``,
``disk.free``) flattened into one plain name, so evaluation never looks up an attribute. The
rebuilt tree is evaluated by simpleeval over flat scalars only. Anything outside the
whitelist is a ``ValueError`` naming the construct, which the policy model turns into a 422.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from simpleeval import InvalidExpression, SimpleEval

MAX_LENGTH = 2048
"""Longest expression text, in characters."""
MAX_NODES = 256
"""Most expression nodes (names, constants, comparisons, calls, ...) in one expression."""
MAX_DEPTH = 32
"""Deepest nesting of expression nodes."""
MAX_NUMBER = 10**15
"""Largest magnitude of a number written in an expression."""
_MAX_NUMBER_TEXT = "1e15"
MAX_STRING = 256
"""Longest string written in an expression."""

TAGS = "tags"
"""The name under which a target's tags are read: ``tags.<key>``."""
_TAG_PREFIX = TAGS + "."

FUNCTIONS: Mapping[str, Callable[..., Any]] = {"abs": abs, "min": min, "max": max}
"""The only functions an expression may call."""
_ARITY: Mapping[str, tuple[int, int]] = {"abs": (1, 1), "min": (2, 8), "max": (2, 8)}

_ALLOWED = "use comparisons, and/or/not, numbers, strings, metric names, tags.<key> and abs/min/max"

_COMPARISONS: Mapping[type[ast.AST], Callable[..., Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_UNARY: Mapping[type[ast.AST], Callable[..., Any]] = {
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_BOOLEAN: tuple[type[ast.boolop], ...] = (ast.And, ast.Or)

# How a rejected construct is named in the error message.
_SYMBOLS: Mapping[type[ast.AST], str] = {
    ast.Add: "'+'",
    ast.Sub: "'-'",
    ast.Mult: "'*'",
    ast.MatMult: "'@'",
    ast.Div: "'/'",
    ast.FloorDiv: "'//'",
    ast.Mod: "'%'",
    ast.Pow: "'**'",
    ast.LShift: "'<<'",
    ast.RShift: "'>>'",
    ast.BitOr: "'|'",
    ast.BitXor: "'^'",
    ast.BitAnd: "'&'",
    ast.Invert: "'~'",
    ast.In: "'in'",
    ast.NotIn: "'not in'",
    ast.Is: "'is'",
    ast.IsNot: "'is not'",
    ast.Subscript: "indexing ('[...]')",
    ast.Slice: "slicing",
    ast.Lambda: "'lambda'",
    ast.IfExp: "'... if ... else ...'",
    ast.NamedExpr: "':='",
    ast.JoinedStr: "an f-string",
    ast.FormattedValue: "an f-string",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.List: "a list",
    ast.Tuple: "a tuple",
    ast.Set: "a set",
    ast.Dict: "a dict",
    ast.Starred: "'*' unpacking",
    ast.Await: "'await'",
    ast.Yield: "'yield'",
    ast.YieldFrom: "'yield'",
}


_LITERALS: Mapping[type, str] = {
    type(None): "'None'",
    type(...): "'...'",
    bytes: "a bytes literal",
    complex: "a complex number",
}


def _not_allowed(what: str) -> ValueError:
    return ValueError(f"expression: {what} is not allowed; {_ALLOWED}")


def _symbol(node: ast.AST) -> str:
    return _SYMBOLS.get(type(node), type(node).__name__)


class _Checker:
    """Checks a parsed tree against the whitelist and rebuilds it with flat names."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def expr(self, node: ast.expr, depth: int) -> ast.expr:
        if depth > MAX_DEPTH:
            raise ValueError(f"expression is nested too deeply (at most {MAX_DEPTH} levels)")
        depth += 1
        if isinstance(node, ast.Compare | ast.BoolOp | ast.UnaryOp | ast.BinOp):
            return self.operation(node, depth)
        if isinstance(node, ast.Constant):
            return ast.Constant(value=_constant(node.value))
        if isinstance(node, ast.Name | ast.Attribute):
            return ast.Name(id=self.name(node), ctx=ast.Load())
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        raise _not_allowed(_symbol(node))

    def operation(
        self, node: ast.Compare | ast.BoolOp | ast.UnaryOp | ast.BinOp, depth: int
    ) -> ast.expr:
        """An operator and its operands, the operator checked against the whitelist."""
        if isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _COMPARISONS:
                    raise _not_allowed(_symbol(op))
            return ast.Compare(
                left=self.expr(node.left, depth),
                ops=[type(op)() for op in node.ops],
                comparators=[self.expr(c, depth) for c in node.comparators],
            )
        if isinstance(node, ast.BoolOp):
            if not isinstance(node.op, _BOOLEAN):
                raise _not_allowed(_symbol(node.op))
            return ast.BoolOp(op=type(node.op)(), values=[self.expr(v, depth) for v in node.values])
        if isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY:
                raise _not_allowed(_symbol(node.op))
            return ast.UnaryOp(op=type(node.op)(), operand=self.expr(node.operand, depth))
        raise _not_allowed(_symbol(node.op))  # arithmetic

    def name(self, node: ast.Name | ast.Attribute) -> str:
        """The flat name of a plain or dotted name (``tags.region``), recorded as read."""
        parts: list[str] = []
        part: ast.expr = node
        while isinstance(part, ast.Attribute):
            parts.append(part.attr)
            part = part.value
        if not isinstance(part, ast.Name):
            raise _not_allowed("an attribute of anything but a dotted name like tags.region")
        parts.append(part.id)
        parts.reverse()
        for piece in parts:
            if piece.startswith("_"):
                raise _not_allowed(f"a name starting with '_' ({piece!r})")
        flat = ".".join(parts)
        if flat == TAGS:
            raise ValueError(f"expression: {TAGS!r} needs a key, e.g. tags.region; {_ALLOWED}")
        if flat in FUNCTIONS:
            raise ValueError(f"expression: {flat!r} is a function; call it as {flat}(...)")
        self.names.add(flat)
        return flat

    def call(self, node: ast.Call, depth: int) -> ast.expr:
        func = node.func
        if not isinstance(func, ast.Name) or func.id not in FUNCTIONS:
            if isinstance(func, ast.Name):
                raise _not_allowed(f"calling {func.id!r}")
            raise _not_allowed("calling anything but abs, min or max")
        if node.keywords:
            raise _not_allowed(f"a keyword argument to {func.id}")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise _not_allowed(_SYMBOLS[ast.Starred])
        least, most = _ARITY[func.id]
        if not least <= len(node.args) <= most:
            count = "1 argument" if most == 1 else f"{least} to {most} arguments"
            raise ValueError(f"expression: {func.id} takes {count}")
        return ast.Call(
            func=ast.Name(id=func.id, ctx=ast.Load()),
            args=[self.expr(arg, depth) for arg in node.args],
            keywords=[],
        )


def _constant(value: object) -> bool | int | float | str:
    """A literal the whitelist allows: a bool, a bounded finite number or a short string."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Compared as an int: a huge one does not fit in a float (OverflowError).
        if abs(value) > MAX_NUMBER:
            raise ValueError(f"expression: numbers must be at most {_MAX_NUMBER_TEXT} in size")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_NUMBER:
            raise ValueError(
                f"expression: numbers must be finite and at most {_MAX_NUMBER_TEXT} in size"
            )
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise ValueError(f"expression: strings must be at most {MAX_STRING} characters")
        return value
    raise _not_allowed(_LITERALS.get(type(value), f"a {type(value).__name__} literal"))


def _parse(text: str) -> ast.expr:
    """The tree of ``text``, with every failure of Python's parser as a ``ValueError``."""
    if len(text) > MAX_LENGTH:
        raise ValueError(f"expression is too long (at most {MAX_LENGTH} characters)")
    if not text.strip():
        raise ValueError("expression is empty")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"expression is not valid: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ValueError("expression is too complex") from None
    except ValueError as exc:  # e.g. a NUL character on some Python versions
        raise ValueError(f"expression is not valid: {exc}") from None
    # ast.walk is iterative, so counting is safe before any recursive look at the tree.
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.expr):
            count += 1
            if count > MAX_NODES:
                raise ValueError(f"expression has too many parts (at most {MAX_NODES})")
    return tree.body


def _evaluator() -> Any:
    """A simpleeval evaluator knowing only the whitelisted operators and functions."""
    operators: dict[type[ast.AST], Callable[..., Any]] = {**_COMPARISONS, **_UNARY}
    return SimpleEval(operators=operators, functions=dict(FUNCTIONS), names={})


@dataclass(frozen=True, slots=True)
class Expression:
    """A checked expression, parsed once; built by :func:`compile_expression`.

    :meth:`holds` reuses one evaluator, so an expression is for use from one thread (the
    event loop) at a time; evaluation never awaits.
    """

    text: str
    metrics: frozenset[str]
    """The metric names it reads (every name but ``tags.<key>``)."""
    tag_keys: frozenset[str]
    """The tag keys it reads as ``tags.<key>``."""
    _tree: ast.expr = field(repr=False, compare=False)
    _evaluator: Any = field(repr=False, compare=False)

    def holds(self, values: Mapping[str, float], tags: Mapping[str, str]) -> bool:
        """Whether the expression is ``True`` over a target's latest ``values`` (by metric
        name) and its ``tags``.

        False when the target lacks any metric or tag the expression reads (whichever
        branch reads it, so the answer never depends on the order of ``or``), when the
        values do not fit the operators (a string compared with a number), and when the
        result is not a bool. It never raises.
        """
        names: dict[str, object] = {}
        for metric in self.metrics:
            value = values.get(metric)
            if value is None:
                return False
            names[metric] = value
        for key in self.tag_keys:
            tag = tags.get(key)
            if tag is None:
                return False
            names[_TAG_PREFIX + key] = tag
        evaluator = self._evaluator
        evaluator.names = names
        try:
            result = evaluator.eval(self.text, previously_parsed=self._tree)
        except (InvalidExpression, TypeError, ValueError, ArithmeticError):
            return False
        return result is True


def compile_expression(text: str) -> Expression:
    """The checked, parsed form of ``text``; a ``ValueError`` saying what is wrong if it is
    not an expression of the whitelist or is beyond its size limits."""
    checker = _Checker()
    tree = checker.expr(_parse(text), depth=1)
    tag_keys = frozenset(n[len(_TAG_PREFIX) :] for n in checker.names if n.startswith(_TAG_PREFIX))
    metrics = frozenset(n for n in checker.names if not n.startswith(_TAG_PREFIX))
    return Expression(
        text=text, metrics=metrics, tag_keys=tag_keys, _tree=tree, _evaluator=_evaluator()
    )
