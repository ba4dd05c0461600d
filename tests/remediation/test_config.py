"""The remediations file: loading, refusals (each names file, entry and field), resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from vigil.remediation.config import (
    Remediation,
    Remediations,
    RemediationsInvalid,
    Retries,
    default_remediations_text,
    example_remediations_text,
    load_remediations,
    parse_remediations,
)
from vigil.remediation.plugins.base import Plugin, PluginConfigError
from vigil.remediation.plugins.command import CommandPlugin
from vigil.remediation.plugins.log import LogPlugin
from vigil.remediation.registry import load_plugins

SEED_ACTIONS = ("scale-up", "scale-down", "restart-service", "restart", "drain-pod", "custom")


class PickyPlugin:
    """A plugin whose check refuses any option called ``bad``."""

    name: ClassVar[str] = "picky"

    def check(self, options: dict[str, Any]) -> None:
        if "bad" in options:
            raise PluginConfigError("picky: `bad` is not allowed")

    async def run(self, call: Any) -> Any:  # pragma: no cover - never run here
        raise NotImplementedError


PLUGINS: dict[str, Plugin] = {
    "log": LogPlugin(),
    "command": CommandPlugin(),
    "picky": PickyPlugin(),
}


def parse(text: str) -> Remediations:
    return parse_remediations(text, source="test.yaml", plugins=PLUGINS)


ISSUE_EXAMPLE = """
remediations:
  - action: restart-service        # the policy's action name
    targets: "web-*"               # glob on the target; first match wins
    plugin: command
    with: {argv: ["systemctl", "restart", "{target}"], timeout: 30}
    retries: {max_attempts: 5, backoff_seconds: 2}
"""


def test_the_issue_example_loads_with_timeout_moved_to_the_entry() -> None:
    remediations = parse(ISSUE_EXAMPLE)
    assert remediations.source == "test.yaml"
    assert remediations.entries == (
        Remediation(
            action="restart-service",
            targets="web-*",
            plugin="command",
            options={"argv": ["systemctl", "restart", "{target}"]},
            timeout=30.0,
            retries=Retries(max_attempts=5, backoff_seconds=2.0),
        ),
    )


def test_tag_placeholders_load() -> None:
    loaded = parse(
        "remediations:\n"
        "  - action: restart-service\n"
        "    plugin: command\n"
        "    with: {argv: [systemctl, restart, '{tags.service}', '--ns={tags.k8s.namespace}']}\n"
    )
    remediation = loaded.resolve("restart-service", "web-1")
    assert remediation is not None
    assert remediation.options["argv"][2] == "{tags.service}"


def test_defaults_and_durations() -> None:
    remediations = parse(
        "remediations:\n"
        "  - {action: a, plugin: log}\n"
        "  - {action: b, plugin: log, timeout: 2m, retries: {max_backoff_seconds: '1h'}}\n"
        "  - {action: c, plugin: log, timeout: 0.5}\n"
    )
    a, b, c = remediations.entries
    assert (a.targets, a.options, a.timeout, a.retries) == ("*", {}, 30.0, Retries())
    assert (b.timeout, b.retries.max_backoff_seconds) == (120.0, 3600.0)
    assert c.timeout == 0.5
    assert remediations.actions == ["a", "b", "c"]


def test_an_empty_list_is_valid() -> None:
    assert parse("remediations: []\n").entries == ()


def test_first_match_wins_and_globs_are_case_sensitive() -> None:
    remediations = parse(
        "remediations:\n"
        "  - {action: restart-service, targets: 'web-*', plugin: command,"
        "     with: {argv: [systemctl, restart, '{target}']}}\n"
        "  - {action: restart-service, targets: 'db-[0-9]', plugin: log,"
        "     with: {message: db}}\n"
        "  - {action: restart-service, plugin: log}\n"
        "  - {action: scale-up, targets: 'web-?', plugin: log}\n"
    )
    resolve = remediations.resolve
    assert resolve("restart-service", "web-1") is remediations.entries[0]
    assert resolve("restart-service", "db-3") is remediations.entries[1]
    assert resolve("restart-service", "db-33") is remediations.entries[2]
    assert resolve("restart-service", "WEB-1") is remediations.entries[2]
    assert resolve("scale-up", "web-1") is remediations.entries[3]
    assert resolve("scale-up", "web-12") is None
    assert resolve("scale-down", "web-1") is None
    assert remediations.knows("scale-up")
    assert remediations.knows("restart-service")
    assert not remediations.knows("scale-down")
    assert not remediations.knows("restart")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        # unknown keys, named with the likely intended one
        (
            "{action: a, plugin: log, plugins: x}",
            "remediations[1] (action 'a'): unknown field 'plugins' (did you mean 'plugin'?)",
        ),
        (
            "{action: a, plugin: log, retries: {attempts: 3}}",
            "remediations[1] (action 'a'): retries: unknown field 'attempts' "
            "(did you mean 'max_attempts'?)",
        ),
        (
            "{action: a, plugin: log, colour: red}",
            "remediations[1] (action 'a'): unknown field 'colour'",
        ),
        # missing and mistyped fields; strict: no coercion of strings or booleans
        ("{plugin: log}", "remediations[1]: action: Field required"),
        ("{action: a}", "remediations[1] (action 'a'): plugin: Field required"),
        ("{action: Bad_Name, plugin: log}", "(action 'Bad_Name'): action: String should match"),
        ("{action: a, plugin: log, retries: {max_attempts: '5'}}", "retries.max_attempts:"),
        ("{action: a, plugin: log, retries: {max_attempts: true}}", "retries.max_attempts:"),
        ("{action: a, plugin: log, retries: {max_attempts: 0}}", "retries.max_attempts:"),
        ("{action: a, plugin: log, retries: {backoff_seconds: soon}}", "invalid duration"),
        ("{action: a, plugin: log, timeout: 0}", "timeout: Input should be greater than 0"),
        ("{action: a, plugin: log, timeout: true}", "timeout: a duration is a number"),
        ("{action: a, plugin: log, targets: ''}", "targets: String should have at least 1"),
        ("{action: a, plugin: log, targets: 7}", "targets: Input should be a valid string"),
        ("{action: a, plugin: log, with: [1]}", "with: Input should be a valid dictionary"),
        ("not-a-mapping", "remediations[1]: an entry must be a mapping"),
        # the plugin
        (
            "{action: a, plugin: shell}",
            "(action 'a'): plugin: 'shell' is not an installed plugin "
            "(installed: command, log, picky)",
        ),
        ("{action: a, plugin: picky, with: {bad: 1}}", "(action 'a'): with: picky: `bad` is not"),
        (
            "{action: a, plugin: log, with: {msg: x}}",
            "with: log: unknown option 'msg' (did you mean 'message'?)",
        ),
        ("{action: a, plugin: command}", "with: command: `argv` is required"),
        ("{action: a, plugin: command, with: {argv: []}}", "with: command: `argv` is required"),
        ("{action: a, plugin: command, with: {argv: [ls, 1]}}", "`argv[1]` must be a string"),
        (
            "{action: a, plugin: command, with: {argv: ['{params.prog}']}}",
            "`argv[0]` (the program) must not be a placeholder",
        ),
        (
            "{action: a, plugin: command, with: {argv: ['/opt/{target}/run']}}",
            "`argv[0]` (the program) must not be a placeholder",
        ),
        (
            "{action: a, plugin: command, with: {argv: [ls], allowed_exit_codes: [0, '1']}}",
            "`allowed_exit_codes` must be a non-empty list",
        ),
        ("{action: a, plugin: command, with: {argv: [ls], shell: true}}", "unknown option 'shell'"),
        # placeholders
        (
            "{action: a, plugin: command, with: {argv: [ls, '{host}']}}",
            "(action 'a'): with.argv[1]: unknown placeholder {host}",
        ),
        (
            "{action: a, plugin: command, with: {argv: [ls, '{tags.service..name}']}}",
            "(action 'a'): with.argv[1]: unknown placeholder {tags.service..name}",
        ),
        # timeout in two places
        (
            "{action: a, plugin: command, timeout: 5, with: {argv: [ls], timeout: 30}}",
            "timeout: given both on the entry and inside 'with:'",
        ),
        (
            "{action: a, plugin: command, with: {argv: [ls], timeout: -1}}",
            "with.timeout: a duration must be",
        ),
        # an entry that can never match
        (
            "{action: first, targets: 'web-*', plugin: log}",
            "remediations[1] (action 'first'): targets: never used, because remediations[0] "
            "already matches action 'first' on targets '*'",
        ),
    ],
)
def test_invalid_entries_name_file_entry_and_field(entry: str, message: str) -> None:
    text = f"remediations:\n  - {{action: first, plugin: log}}\n  - {entry}\n"
    with pytest.raises(RemediationsInvalid) as raised:
        parse(text)
    assert raised.value.message.startswith("test.yaml: ")
    assert message in raised.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a mapping with a top-level 'remediations:' list"),
        ("- {action: a, plugin: log}\n", "expected a mapping"),
        ("policies: []\n", "expected a mapping"),
        ("remediations: []\nextra: 1\n", "unknown top-level key 'extra'"),
        (
            "remediation:\n  - {action: a, plugin: log}\n",
            "unknown top-level key 'remediation' (did you mean 'remediations'?)",
        ),
        ("remediations: {action: a}\n", "'remediations' must be a list"),
        ("remediations: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_files(text: str, message: str) -> None:
    with pytest.raises(RemediationsInvalid, match=r"^test\.yaml: ") as raised:
        parse(text)
    assert message in raised.value.message


def test_load_reads_a_file_and_names_an_unreadable_one(tmp_path: Path) -> None:
    path = tmp_path / "remediations.yaml"
    path.write_text(ISSUE_EXAMPLE)
    assert load_remediations(path, plugins=PLUGINS).source == str(path)

    with pytest.raises(RemediationsInvalid, match=r"cannot read remediations file .*missing"):
        load_remediations(tmp_path / "missing.yaml", plugins=PLUGINS)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(RemediationsInvalid, match="not UTF-8"):
        load_remediations(path, plugins=PLUGINS)

    path.write_text("remediations:\n  - {action: a, plugin: log, timeout: x}\n")
    with pytest.raises(RemediationsInvalid) as raised:
        load_remediations(path, plugins=PLUGINS)
    assert raised.value.message.startswith(f"{path}: remediations[0] (action 'a'): timeout:")
    assert raised.value.status_code == 422


def test_the_packaged_default_maps_every_seed_action_to_log() -> None:
    remediations = load_remediations(None)
    assert remediations.source == "packaged default remediations"
    for action in SEED_ACTIONS:
        entry = remediations.resolve(action, "any-target")
        assert entry is not None, action
        assert (entry.plugin, entry.targets) == ("log", "*")
    assert {entry.plugin for entry in remediations.entries} == {"log"}
    assert parse(default_remediations_text()).entries == remediations.entries


def test_the_packaged_example_loads_with_the_installed_plugins() -> None:
    pytest.importorskip("lightkube")  # the kubernetes plugin's check needs its extra
    remediations = parse_remediations(
        example_remediations_text(), source="example", plugins=load_plugins()
    )
    plugins = {entry.plugin for entry in remediations.entries}
    assert plugins == {"command", "log", "webhook", "kubernetes"}
    for action in SEED_ACTIONS:
        assert remediations.knows(action), action
    web = remediations.resolve("restart-service", "web-3")
    assert web is not None
    assert web.plugin == "command"
    assert web.options == {"argv": ["systemctl", "restart", "{target}"]}
    assert web.timeout == 30.0
    other = remediations.resolve("restart-service", "db-1")
    assert other is not None
    assert other.plugin == "log"
