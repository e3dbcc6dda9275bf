"""The docs stay true to the tree: every relative link in README.md and docs/ resolves, and run
artefacts (tables, reports, plots) live under docs/runs/, not beside the prose."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "docs/runs/README.md"])
LINK = re.compile(r"\]\(([^)#\s]+)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    missing = [
        target
        for target in LINK.findall(page.read_text())
        if "://" not in target and not (page.parent / target).exists()
    ]
    assert missing == []


def test_run_artefacts_live_under_docs_runs():
    prose_dir = ROOT / "docs"
    stray = sorted(
        str(p.relative_to(ROOT))
        for p in prose_dir.rglob("*")
        if p.is_file() and p.suffix != ".md" and (prose_dir / "runs") not in p.parents
    )
    assert stray == []
    assert sorted(p.name for p in prose_dir.iterdir() if p.is_dir()) == ["runs"]


def test_every_run_folder_is_in_the_index():
    index = (ROOT / "docs/runs/README.md").read_text()
    for folder in sorted(p for p in (ROOT / "docs/runs").iterdir() if p.is_dir()):
        assert f"]({folder.name}/" in index, folder.name
