"""Docs travel with code: every setting is documented and in .env.example."""

from __future__ import annotations

from pathlib import Path

from vigil.settings import Settings, setting_env_name

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    example = (ROOT / ".env.example").read_text()
    for field in Settings.model_fields:
        name = setting_env_name(field)
        assert f"`{name}`" in reference, f"{name} is missing from docs/configuration.md"
        assert f"{name}=" in example, f"{name} is missing from .env.example"
