"""Finding the installed plugins: every ``vigil.plugins`` entry point, by name."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points

from vigil.errors import VigilError
from vigil.remediation.plugins.base import Plugin

GROUP = "vigil.plugins"


class PluginLoadError(VigilError):
    """A registered plugin cannot be imported or built; the message names it and why."""


def load_plugins(entries: Iterable[EntryPoint] | None = None) -> dict[str, Plugin]:
    """One instance of each plugin registered under ``vigil.plugins`` (or of ``entries``).

    A plugin that fails to import or to build raises :class:`PluginLoadError` naming the
    entry point: a broken installation is reported when it starts, not at the first
    remediation that needs the plugin. (Optional dependencies, such as lightkube for the
    kubernetes plugin, are imported by the plugin when it runs, so a missing extra does not
    break discovery.)
    """
    if entries is None:
        entries = entry_points(group=GROUP)
    plugins: dict[str, Plugin] = {}
    for entry in entries:
        if entry.name in plugins:
            raise PluginLoadError(f"plugin {entry.name!r} is registered more than once")
        try:
            factory = entry.load()
            plugin = factory()
        except Exception as exc:
            raise PluginLoadError(
                f"plugin {entry.name!r} ({entry.value}) cannot be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        name = getattr(plugin, "name", None)
        if name != entry.name:
            raise PluginLoadError(
                f"plugin {entry.name!r} ({entry.value}) calls itself {name!r}; "
                "the entry point name and the plugin's name must agree"
            )
        plugins[entry.name] = plugin
    return plugins
