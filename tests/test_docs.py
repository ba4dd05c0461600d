"""Docs travel with code: every setting is documented and in .env.example; every metric is
listed in docs/api.md."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import vigil_metric_series
from vigil.settings import NOT_SETTINGS, Settings, setting_env_name

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    example = (ROOT / ".env.example").read_text()
    for field in Settings.model_fields:
        name = setting_env_name(field)
        assert f"`{name}`" in reference, f"{name} is missing from docs/configuration.md"
        assert f"{name}=" in example, f"{name} is missing from .env.example"


def test_every_documented_setting_exists() -> None:
    known = {setting_env_name(field) for field in Settings.model_fields}
    example = (ROOT / ".env.example").read_text()
    documented = set(
        re.findall(r"^#?\s*((?:VIGIL_|DATABASE_URL|REDIS_URL|CORS_ORIGINS)\w*)=", example, re.M)
    )
    assert documented, "no settings found in .env.example"
    assert documented <= known, f"documented but not settings: {sorted(documented - known)}"
    reference = (ROOT / "docs" / "configuration.md").read_text()
    in_reference = set(
        re.findall(r"`((?:VIGIL_[A-Z_]+|DATABASE_URL|REDIS_URL|CORS_ORIGINS))`", reference)
    )
    # The test suite's own variables are named too, as the ones Vigil does not read.
    test_variables = {name for name in in_reference if name.startswith(NOT_SETTINGS)}
    assert test_variables == {"VIGIL_TEST_", "VIGIL_REQUIRE_SERVICES", "VIGIL_CHAOS_SECONDS"}
    in_reference -= test_variables
    assert in_reference <= known, f"documented but not settings: {sorted(in_reference - known)}"


def test_every_metric_is_documented() -> None:
    section = (ROOT / "docs" / "api.md").read_text().split("## Health and metrics", 1)[1]
    section = section.split("\n## ", 1)[0]
    for name in vigil_metric_series():
        assert f"`{name}`" in section, f"{name} is missing from docs/api.md, Health and metrics"


def test_every_documented_metric_exists() -> None:
    known = set(vigil_metric_series()).union(*vigil_metric_series().values())
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        named = set(re.findall(r"\bvigil_[a-z0-9_]*[a-z0-9]\b", path.read_text()))
        assert named <= known, f"{path.name} names unknown metrics: {sorted(named - known)}"
