"""Docs travel with code: every setting is documented and in .env.example; every metric is
listed in docs/api.md; every link in the docs leads to a file (and heading) of this
repository or to the web; and nothing in the tree speaks of how it was made."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "DEVELOPERS.md",
    ROOT / "deploy" / "prometheus" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub makes them."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", path.read_text(), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_stays_in_the_repository(document: Path) -> None:
    for target in LINK.findall(document.read_text()):
        if target.startswith(("https://", "http://", "mailto:")):
            continue
        where, _, anchor = target.partition("#")
        path = (document.parent / where).resolve() if where else document
        assert path.is_relative_to(ROOT), f"{document.name} links outside: {target}"
        assert path.exists(), f"{document.name} links to a missing file: {target}"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{document.name} links to a missing anchor: {target}"


def test_the_tree_speaks_of_the_product_only() -> None:
    pattern = re.compile(r"issue [0-9]|the\sseed|seed (action|story|document)|\.\./shared", re.I)
    for top in ("src", "tests", "docs", "README.md"):
        base = ROOT / top
        for path in [base] if base.is_file() else sorted(base.rglob("*")):
            if path.suffix not in (".py", ".md", ".yaml", ".yml", ".txt", ".toml"):
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                assert not pattern.search(line), f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
