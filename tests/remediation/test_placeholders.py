"""Placeholders: what is substituted, how, and which values are refused (table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.remediation.placeholders import (
    Context,
    PlaceholderError,
    check_templates,
    has_placeholder,
    render,
)
from vigil.remediation.plugins.base import PluginFailed


def context(target: str = "web-1", **params: Any) -> Context:
    return Context(action_id=42, attempt=3, action="restart-service", target=target, params=params)


def tagged(**tags: str) -> Context:
    return Context(
        action_id=42, attempt=3, action="restart-service", target="web-1", params={}, tags=tags
    )


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{target}", "web-1"),
        ("{action}", "restart-service"),
        ("{action_id}", 42),  # a whole value keeps its type
        ("{attempt}", 3),
        ("{params.replicas}", 5),
        ("{params.force}", True),
        ("{params.ratio}", 0.5),
        ("{params.delta}", -1),  # typed: the plugin decides what a negative number means
        ("{params.zone}", "eu-west-1a"),
        ("--replicas={params.replicas}", "--replicas=5"),
        ("--force={params.force}", "--force=true"),
        ("--delta={params.delta}", "--delta=-1"),
        ("https://chat.example/{target}?a={action_id}", "https://chat.example/web-1?a=42"),
        ("restart {target} ({attempt})", "restart web-1 (3)"),
        ("no placeholders", "no placeholders"),
        ("{{target}}", "{target}"),  # escaped braces are literal
        ("{{ {target} }}", "{ web-1 }"),
        ("lone { brace", "lone { brace"),
        ("", ""),
        (7, 7),
        (None, None),
    ],
)
def test_render_substitutes(template: Any, expected: Any) -> None:
    ctx = context(replicas=5, force=True, ratio=0.5, delta=-1, zone="eu-west-1a")
    assert render(template, ctx) == expected


def test_render_recurses_through_lists_and_dict_values_not_keys() -> None:
    options = {
        "argv": ["systemctl", "restart", "{target}"],
        "body": {"{target}": "{params.n}", "nested": [{"x": "{attempt}"}]},
    }
    assert render(options, context(n=2)) == {
        "argv": ["systemctl", "restart", "web-1"],
        "body": {"{target}": 2, "nested": [{"x": 3}]},
    }


@pytest.mark.parametrize(
    "target",
    [
        "-rf",  # an option
        "--help",
        "../etc",  # a path
        "..",
        "a/b",
        "/etc/passwd",
        "a;b",  # shell constructs
        "$(x)",
        "`x`",
        "a|b",
        "a&b",
        "a b",  # a second word
        "a\nb",
        "a\tb",
        "a\x00b",
        "a\x1bb",
        "*",
        "'x'",
        '"x"',
        "x..y",
        ".hidden",
        "_x",
        "",
        "a" * 256,
        "wéb",
    ],
)
def test_unsafe_targets_are_refused_permanently(target: str) -> None:
    for template in ("{target}", "--name={target}", "prefix-{target}"):
        with pytest.raises(PluginFailed) as raised:
            render({"argv": ["x", template]}, context(target=target))
        assert raised.value.retryable is False
        assert "{target}" in raised.value.message


@pytest.mark.parametrize(
    "value",
    ["-rf", "../etc", "a;b", "$(x)", "a\nb", None, [1], {"a": 1}, float("nan"), float("inf")],
)
def test_unsafe_params_are_refused_permanently(value: Any) -> None:
    with pytest.raises(PluginFailed) as raised:
        render("{params.p}", context(p=value))
    assert raised.value.retryable is False
    assert "{params.p}" in raised.value.message


@pytest.mark.parametrize(
    "target", ["web-1", "web-1.example.com", "10.0.0.1:9100", "user@host", "a=b", "Pod_7", "9"]
)
def test_safe_targets_pass(target: str) -> None:
    assert render("{target}", context(target=target)) == target


def test_negative_number_may_not_start_a_longer_string() -> None:
    with pytest.raises(PluginFailed, match="reads as an option"):
        render("{params.n}x", context(n=-1))
    assert render("x{params.n}", context(n=-1)) == "x-1"


def test_missing_param_is_a_permanent_failure_naming_it() -> None:
    with pytest.raises(PluginFailed) as raised:
        render({"argv": ["kubectl", "--replicas={params.replicas}"]}, context())
    assert raised.value.retryable is False
    assert "no param 'replicas'" in raised.value.message


@pytest.mark.parametrize(
    ("options", "where", "name"),
    [
        ({"argv": ["x", "{host}"]}, "with.argv[1]", "{host}"),
        ({"body": {"text": "hi {targets}"}}, "with.body.text", "{targets}"),
        ({"url": "{params.}"}, "with.url", "{params.}"),
        ({"url": "{params.a/b}"}, "with.url", "{params.a/b}"),
        ({"x": "{ target }"}, "with.x", "{ target }"),
        ({"x": '{"json": 1}'}, "with.x", '{"json": 1}'),
        ({"x": "{tags.}"}, "with.x", "{tags.}"),
        ({"x": "{tags.a..b}"}, "with.x", "{tags.a..b}"),
        ({"x": "{tags.service.}"}, "with.x", "{tags.service.}"),
        ({"x": "{tags..service}"}, "with.x", "{tags..service}"),
        ({"x": "{tags.a/b}"}, "with.x", "{tags.a/b}"),
        ({"x": "{tags.-a}"}, "with.x", "{tags.-a}"),
        ({"x": "{tag.service}"}, "with.x", "{tag.service}"),
    ],
)
def test_unknown_placeholders_are_refused_at_load(
    options: dict[str, Any], where: str, name: str
) -> None:
    with pytest.raises(PlaceholderError) as raised:
        check_templates(options, where="with")
    assert str(raised.value).startswith(f"{where}: unknown placeholder {name}")


def test_known_placeholders_pass_the_load_check() -> None:
    check_templates(
        {
            "a": ["{target}", "{action}", "{action_id}", "{attempt}", "{params.x_1-y}", "{{z}}"],
            "b": ["{tags.service}", "{tags.service.name}", "{tags.k8s.pod-name_2}", "{tags.0}"],
        },
        where="with",
    )


def test_has_placeholder_ignores_escapes() -> None:
    assert has_placeholder("{target}")
    assert has_placeholder("/usr/bin/{params.x}")
    assert not has_placeholder("{{target}}")
    assert not has_placeholder("/usr/bin/systemctl")


def test_tags_are_substituted_whole_or_in_text() -> None:
    ctx = tagged(**{"service": "nginx", "service.name": "checkout", "replicas": "3"})
    options = {
        "argv": ["systemctl", "restart", "{tags.service}"],
        "body": {"svc": "{tags.service.name}", "n": "{tags.replicas}"},
        "url": "https://hooks.example/{tags.service}/{target}",
    }
    assert render(options, ctx) == {
        "argv": ["systemctl", "restart", "nginx"],
        "body": {"svc": "checkout", "n": "3"},  # a tag is text: it stays a string
        "url": "https://hooks.example/nginx/web-1",
    }


@pytest.mark.parametrize("value", ["-rf", "../etc", "a;b", "$(x)", "a b", "a\nb", "", "x/y"])
def test_unsafe_tags_are_refused_permanently(value: str) -> None:
    for template in ("{tags.service}", "--unit={tags.service}"):
        with pytest.raises(PluginFailed) as raised:
            render({"argv": ["x", template]}, tagged(service=value))
        assert raised.value.retryable is False
        assert "{tags.service}" in raised.value.message


def test_missing_tag_is_a_permanent_failure_naming_it() -> None:
    with pytest.raises(PluginFailed) as raised:
        render({"argv": ["systemctl", "restart", "{tags.service}"]}, tagged(region="eu"))
    assert raised.value.retryable is False
    assert "no tag 'service'" in raised.value.message
    assert raised.value.details == {"missing_tag": "service"}
    # a param of the same name does not stand in for the tag
    with pytest.raises(PluginFailed, match="no tag 'service'"):
        render("{tags.service}", context(service="nginx"))
