"""Plugin discovery through the ``vigil.plugins`` entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from vigil.remediation.plugins.command import CommandPlugin
from vigil.remediation.plugins.log import LogPlugin
from vigil.remediation.registry import GROUP, PluginLoadError, load_plugins


def entry(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=GROUP)


def test_the_installed_plugins_include_log_and_command() -> None:
    plugins = load_plugins()
    assert isinstance(plugins["log"], LogPlugin)
    assert isinstance(plugins["command"], CommandPlugin)
    for name, plugin in plugins.items():
        assert plugin.name == name


def test_a_plugin_that_cannot_be_imported_is_reported_by_name() -> None:
    entries = [
        entry("log", "vigil.remediation.plugins.log:LogPlugin"),
        entry("broken", "vigil.remediation.plugins.no_such_module:Plugin"),
    ]
    with pytest.raises(PluginLoadError) as raised:
        load_plugins(entries)
    message = raised.value.message
    assert "plugin 'broken' (vigil.remediation.plugins.no_such_module:Plugin)" in message
    assert "ModuleNotFoundError" in message


def test_a_missing_class_and_a_name_mismatch_are_reported() -> None:
    with pytest.raises(PluginLoadError, match=r"'gone'.*AttributeError"):
        load_plugins([entry("gone", "vigil.remediation.plugins.log:NoSuchPlugin")])
    with pytest.raises(PluginLoadError, match="calls itself 'log'"):
        load_plugins([entry("dry-run", "vigil.remediation.plugins.log:LogPlugin")])


def test_a_name_registered_twice_is_refused() -> None:
    twice = [entry("log", "vigil.remediation.plugins.log:LogPlugin")] * 2
    with pytest.raises(PluginLoadError, match="registered more than once"):
        load_plugins(twice)
