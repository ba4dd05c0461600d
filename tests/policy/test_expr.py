"""The ``expr`` condition: what the whitelist accepts and rejects, and how it evaluates."""

from __future__ import annotations

import ast
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.policy.expr import (
    FUNCTIONS,
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_NODES,
    MAX_STRING,
    Expression,
    compile_expression,
)

EXAMPLE = 'cpu_percent > 90 and tags.region == "us-east-1"'
ALLOWED = "use comparisons, and/or/not, numbers, strings, metric names, tags.<key> and abs/min/max"


@pytest.mark.parametrize(
    ("text", "metrics", "tag_keys"),
    [
        (EXAMPLE, {"cpu_percent"}, {"region"}),
        ("cpu > 90", {"cpu"}, set()),
        ("  cpu > 90\n", {"cpu"}, set()),  # surrounding whitespace is fine
        ("70 < cpu <= 90", {"cpu"}, set()),
        ("cpu >= 1 or mem != 2 or not disk == 3", {"cpu", "mem", "disk"}, set()),
        ("disk.free < 5", {"disk.free"}, set()),
        ("a.b.c > 0", {"a.b.c"}, set()),
        ("tags.a.b == 'x'", set(), {"a.b"}),
        ("tags.env == 'prod' and tags.tier != 'db'", set(), {"env", "tier"}),
        ("abs(delta) > 3", {"delta"}, set()),
        ("min(a, b) > max(c, 1, -2.5)", {"a", "b", "c"}, set()),
        ("abs(min(a, b, c, d, e, f, g, h)) < 1e15", set("abcdefgh"), set()),
        ("-cpu < +5", {"cpu"}, set()),
        ("True", set(), set()),
        ("not False", set(), set()),
        ("cpu", {"cpu"}, set()),  # allowed, but a number is never True: see the evaluation
        ("x > 0x10 and y < 1_000", {"x", "y"}, set()),
        ("cpu > -1000000000000000", {"cpu"}, set()),
        ("tags.name == '" + "x" * MAX_STRING + "'", set(), {"name"}),
    ],
)
def test_valid_expressions_and_what_they_read(
    text: str, metrics: set[str], tag_keys: set[str]
) -> None:
    expression = compile_expression(text)
    assert expression.text == text
    assert expression.metrics == metrics
    assert expression.tag_keys == tag_keys


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9**9**9", f"expression: '**' is not allowed; {ALLOWED}"),
        ("cpu + 1 > 2", "'+' is not allowed"),
        ("cpu-percent > 1", "'-' is not allowed"),
        ("'a' * 10**9", "'*' is not allowed"),
        ("cpu // 2", "'//'"),
        ("~cpu", "'~' is not allowed"),
        ("'eu' in tags.region", "'in' is not allowed"),
        ("cpu is None", "'is' is not allowed"),
        ("open('x')", "calling 'open' is not allowed"),
        ("eval('1')", "calling 'eval' is not allowed"),
        ("__import__('os')", "calling '__import__' is not allowed"),
        ("int(cpu) > 1", "calling 'int' is not allowed"),  # simpleeval's defaults are off
        ("rand() > 0.5", "calling 'rand' is not allowed"),
        ("tags.region.upper() == 'EU'", "calling anything but abs, min or max"),
        ("abs(cpu).real > 1", "an attribute of anything but a dotted name"),
        ("().__class__", "an attribute of anything but a dotted name"),
        ("tags.__class__", "a name starting with '_' ('__class__')"),
        ("cpu.__dict__", "a name starting with '_'"),
        ("_private > 1", "a name starting with '_'"),
        ("tags._x == 'a'", "a name starting with '_'"),
        ("tags == 'x'", "'tags' needs a key, e.g. tags.region"),
        ("abs > 1", "'abs' is a function; call it as abs(...)"),
        ("abs(a, b) > 1", "abs takes 1 argument"),
        ("min(a) > 1", "min takes 2 to 8 arguments"),
        ("max(a, b, c, d, e, f, g, h, i) > 1", "max takes 2 to 8 arguments"),
        ("max(a, key=b) > 1", "a keyword argument to max is not allowed"),
        ("min(*a) > 1", "'*' unpacking is not allowed"),
        ("cpu[0] > 1", "indexing ('[...]') is not allowed"),
        ("lambda: 1", "'lambda' is not allowed"),
        ("(lambda: 1)()", "calling anything but abs, min or max"),
        ("[x for x in y]", "a comprehension is not allowed"),
        ("(x for x in y)", "a comprehension is not allowed"),
        ("{1: 2}", "a dict is not allowed"),
        ("[1, 2] == cpu", "a list is not allowed"),
        ("(1, 2)", "a tuple is not allowed"),
        ("f'{cpu}' == '1'", "an f-string is not allowed"),
        ("(x := 1)", "':=' is not allowed"),
        ("a if b else c", "'... if ... else ...' is not allowed"),
        ("await cpu", "'await' is not allowed"),
        ("cpu == None", "'None' is not allowed"),
        ("cpu == b'x'", "a bytes literal is not allowed"),
        ("cpu == 1j", "a complex number is not allowed"),
        ("cpu == ...", "'...' is not allowed"),
        ("cpu > 1" + "0" * 100, "numbers must be at most 1e15 in size"),
        ("cpu > 1000000000000001", "numbers must be at most 1e15 in size"),
        ("cpu > 1e16", "numbers must be finite and at most 1e15 in size"),
        ("cpu > 1e999", "numbers must be finite"),
        ("tags.name == '" + "x" * (MAX_STRING + 1) + "'", "strings must be at most 256"),
        ("", "expression is empty"),
        (" \n\t ", "expression is empty"),
        ("cpu >", "expression is not valid: invalid syntax"),
        ("cpu > 1; import os", "expression is not valid"),
        ("import os", "expression is not valid"),
        ("cpu\x00 > 1", "expression is not valid"),
        ("tags.class == 'a'", "expression is not valid"),  # a keyword is not a name
        ("x" * (MAX_LENGTH + 1), "expression is too long (at most 2048 characters)"),
        ("(" * 10_000 + "1" + ")" * 10_000, "expression is too long"),
        ("(" * 1_000 + "1" + ")" * 1_000, "expression is not valid: too many nested paren"),
        ("'" + "a" * 100_000 + "'", "expression is too long"),
        ("not " * 500 + "x", f"expression has too many parts (at most {MAX_NODES})"),
        ("-" * 2_000 + "1", "expression has too many parts"),
        ("a." * 1_000 + "a", "expression has too many parts"),
        (" or ".join(["cpu > 1"] * 100), "expression has too many parts"),
        ("not " * MAX_DEPTH + "x", "expression is nested too deeply (at most 32 levels)"),
        ("abs(" * 40 + "x" + ")" * 40 + " > 1", "expression is nested too deeply"),
    ],
)
def test_invalid_expressions_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^expression") as raised:
        compile_expression(text)
    assert message in str(raised.value)


def test_the_deepest_allowed_nesting_compiles() -> None:
    assert compile_expression("not " * (MAX_DEPTH - 1) + "x").metrics == {"x"}
    assert compile_expression(" or ".join(["cpu > 1"] * 60)).metrics == {"cpu"}  # 241 parts


@pytest.mark.parametrize(
    ("text", "values", "tags", "expected"),
    [
        (EXAMPLE, {"cpu_percent": 95}, {"region": "us-east-1"}, True),
        (EXAMPLE, {"cpu_percent": 95}, {"region": "eu"}, False),
        (EXAMPLE, {"cpu_percent": 90}, {"region": "us-east-1"}, False),
        (EXAMPLE, {}, {"region": "us-east-1"}, False),
        (EXAMPLE, {"cpu_percent": 95}, {}, False),
        # A missing metric or tag makes the whole expression false, on whichever side of
        # an "or" it is, so the order of the branches never matters.
        ("cpu > 90 or mem > 90", {"cpu": 95}, {}, False),
        ("mem > 90 or cpu > 90", {"cpu": 95}, {}, False),
        ("cpu > 90 or tags.env == 'prod'", {"cpu": 95}, {}, False),
        ("not cpu > 90", {}, {}, False),
        ("not tags.env == 'prod'", {}, {"region": "eu"}, False),
        ("not tags.env == 'prod'", {}, {"env": "dev"}, True),
        # A string compared with a number: false, not an error.
        ("cpu > 90", {"cpu": "high"}, {}, False),
        ("tags.size > 3", {}, {"size": "7"}, False),
        ("tags.size == 7", {}, {"size": "7"}, False),
        ("abs(tags.size) > 3", {}, {"size": "7"}, False),
        ("min(cpu, tags.size) > 3", {"cpu": 9}, {"size": "7"}, False),
        ("-tags.size < 0", {}, {"size": "7"}, False),
        ("70 < cpu < 90", {"cpu": 80}, {}, True),
        ("70 < cpu < 90", {"cpu": 90}, {}, False),
        ("70 < cpu < 90", {"cpu": 70}, {}, False),
        ("70 < cpu <= 90", {"cpu": 90}, {}, True),
        ("not cpu > 90", {"cpu": 10}, {}, True),
        ("not cpu > 90", {"cpu": 91}, {}, False),
        ("abs(delta) > 3", {"delta": -4}, {}, True),
        ("abs(delta) > 3", {"delta": 2.5}, {}, False),
        ("min(a, b) > 10", {"a": 11, "b": 12}, {}, True),
        ("min(a, b) > 10", {"a": 11, "b": 9}, {}, False),
        ("max(a, b, 0) == 0", {"a": -1, "b": -2}, {}, True),
        ("disk.free < 5", {"disk.free": 4}, {}, True),
        ("disk.free < 5", {"disk": 4}, {}, False),
        ("tags.a.b == 'x'", {}, {"a.b": "x"}, True),
        ("-cpu < -5", {"cpu": 6}, {}, True),
        ("True", {}, {}, True),
        ("False", {}, {}, False),
        ("not False and True", {}, {}, True),
        ("True == 1", {}, {}, True),
        # Only a bool counts: a number or a string result is false.
        ("cpu", {"cpu": 1.0}, {}, False),
        ("cpu and mem", {"cpu": 1.0, "mem": 2.0}, {}, False),
        ("cpu > 0 and mem", {"cpu": 1.0, "mem": 2.0}, {}, False),
        ("tags.region", {}, {"region": "eu"}, False),
        ("abs(cpu)", {"cpu": -1.0}, {}, False),
        # NaN compares false with everything; infinities compare as numbers.
        ("cpu > 90", {"cpu": math.nan}, {}, False),
        ("cpu != cpu", {"cpu": math.nan}, {}, True),
        ("cpu > 1e15", {"cpu": math.inf}, {}, True),
        ("min(cpu, mem) < 0", {"cpu": -math.inf, "mem": math.nan}, {}, True),
    ],
)  # fmt: skip
def test_holds(text: str, values: dict[str, Any], tags: dict[str, Any], expected: bool) -> None:
    assert compile_expression(text).holds(values, tags) is expected


def test_an_expression_is_reusable_and_compares_by_its_text() -> None:
    expression = compile_expression("cpu > 90")
    assert [expression.holds({"cpu": v}, {}) for v in (91, 89, 91)] == [True, False, True]
    assert expression == compile_expression("cpu > 90")
    assert hash(expression) == hash(compile_expression("cpu > 90"))
    assert "cpu > 90" in repr(expression)


# Property tests -----------------------------------------------------------------------

METRICS = ("cpu", "mem", "disk.free", "a.b.c")
TAG_KEYS = ("region", "env")
SCALARS = st.one_of(
    st.floats(),  # NaN and the infinities included
    st.integers(min_value=-(10**30), max_value=10**30),
    st.text(max_size=8),
    st.booleans(),
)
VALUES = st.dictionaries(st.one_of(st.sampled_from(METRICS), st.text(max_size=8)), SCALARS)
TAGS = st.dictionaries(st.one_of(st.sampled_from(TAG_KEYS), st.text(max_size=8)), SCALARS)

# Pieces both allowed and forbidden, so that token soup often parses and sometimes compiles.
TOKENS = (
    *METRICS,
    *(f"tags.{key}" for key in TAG_KEYS),
    "tags", "abs", "min", "max", "open", "eval", "__import__", "lambda", "x", ":", "not",
    "and", "or", "in", "is", "if", "else", "for", "None", "True", "False", "1", "-2.5",
    "1e999", "10**9", "'eu'", '"a"', "f'{x}'", "(", ")", "[", "]", ",", ".", "__class__",
    "_x", "<", "<=", ">", ">=", "==", "!=", "+", "-", "*", "**", "~", "=", ":=", " ",
)  # fmt: skip
TOKEN_SOUP = st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join)
ANY_TEXT = st.one_of(st.text(), TOKEN_SOUP)


def numbers() -> st.SearchStrategy[str]:
    """Number literals inside the bounds."""
    return st.one_of(
        st.integers(min_value=-(10**15), max_value=10**15).map(str),
        st.floats(min_value=-1e15, max_value=1e15).map(repr),
    )


def scalar_terms(depth: int) -> st.SearchStrategy[str]:
    """Expressions of a number or a string: names, literals, abs/min/max and negation."""
    leaves = st.one_of(
        st.sampled_from(METRICS),
        st.sampled_from([f"tags.{key}" for key in TAG_KEYS]),
        numbers(),
        st.text(max_size=8).map(repr),
    )
    if depth == 0:
        return leaves
    inner = scalar_terms(depth - 1)
    return st.one_of(
        leaves,
        inner.map(lambda term: f"abs({term})"),
        inner.map(lambda term: f"-({term})"),
        st.tuples(st.sampled_from(["min", "max"]), st.lists(inner, min_size=2, max_size=3)).map(
            lambda call: f"{call[0]}({', '.join(call[1])})"
        ),
    )


def boolean_terms(depth: int) -> st.SearchStrategy[str]:
    """Expressions from the whitelist's grammar: comparisons joined by and/or/not."""
    comparisons = st.tuples(
        scalar_terms(1),
        st.lists(
            st.tuples(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), scalar_terms(1)),
            min_size=1,
            max_size=2,
        ),
    ).map(lambda c: c[0] + "".join(f" {op} {term}" for op, term in c[1]))
    leaves = st.one_of(comparisons, st.sampled_from(["True", "False"]), scalar_terms(1))
    if depth == 0:
        return leaves
    inner = boolean_terms(depth - 1)
    return st.one_of(
        leaves,
        inner.map(lambda term: f"not ({term})"),
        st.tuples(st.sampled_from([" and ", " or "]), st.lists(inner, min_size=2, max_size=3)).map(
            lambda join: join[0].join(f"({term})" for term in join[1])
        ),
    )


# At most 9 comparisons of at most ~25 nodes each: always within MAX_NODES and MAX_DEPTH;
# long number and string literals can (rarely) pass MAX_LENGTH.
EXPRESSIONS = boolean_terms(2).filter(lambda text: len(text) <= MAX_LENGTH)


def python_oracle(expression: Expression, values: dict[str, Any], tags: dict[str, Any]) -> bool:
    """What Python itself answers for the checked tree, with the same rules for missing
    names, errors and non-bool results."""
    names: dict[str, Any] = {**FUNCTIONS}
    for metric in expression.metrics:
        if values.get(metric) is None:
            return False
        names[metric] = values[metric]
    for key in expression.tag_keys:
        if tags.get(key) is None:
            return False
        names[f"tags.{key}"] = tags[key]
    tree = ast.fix_missing_locations(ast.Expression(body=expression._tree))
    try:
        result = eval(compile(tree, "<expr>", "eval"), {"__builtins__": {}}, names)
    except (TypeError, ValueError, ArithmeticError):
        return False
    return result is True


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_any_text_compiles_or_is_a_value_error(text: str) -> None:
    try:
        compile_expression(text)
    except ValueError as exc:
        error = str(exc)
    else:
        return
    assert error.startswith("expression")


@settings(max_examples=200, deadline=None)
@given(EXPRESSIONS, VALUES, TAGS)
def test_grammar_expressions_compile_and_answer_as_python_does(
    text: str, values: dict[str, Any], tags: dict[str, Any]
) -> None:
    expression = compile_expression(text)
    assert expression.holds(values, tags) is python_oracle(expression, values, tags)


@settings(max_examples=200, deadline=None)
@given(EXPRESSIONS, VALUES, TAGS)
def test_holds_never_raises_whatever_the_values_and_tags(
    text: str, values: dict[str, Any], tags: dict[str, Any]
) -> None:
    expression = compile_expression(text)
    # Every name it reads is present (the interesting case), with arbitrary scalars.
    full_values = {metric: values.get(metric, 0.0) for metric in expression.metrics} | values
    full_tags = {key: tags.get(key, "") for key in expression.tag_keys} | tags
    assert isinstance(expression.holds(full_values, full_tags), bool)
    assert isinstance(expression.holds(values, tags), bool)


EVALUATED: tuple[type[ast.AST], ...] = (
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.Compare,
)
EVALUATED += (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Constant, ast.Name)
EVALUATED += (ast.Call, ast.Load)


@settings(max_examples=300, deadline=None)
@given(st.one_of(ANY_TEXT, EXPRESSIONS))
def test_what_compiles_calls_only_the_whitelisted_functions(text: str) -> None:
    try:
        expression = compile_expression(text)
    except ValueError:
        return
    names = expression.metrics | {f"tags.{key}" for key in expression.tag_keys}
    for node in ast.walk(expression._tree):
        assert isinstance(node, EVALUATED), ast.dump(node)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            assert node.func.id in FUNCTIONS
            assert not node.keywords
        elif isinstance(node, ast.Name) and node.id not in FUNCTIONS:
            assert node.id in names  # a flat name, read from the values or the tags
        elif isinstance(node, ast.Constant):
            assert type(node.value) in (bool, int, float, str)
