"""Tests of the documents a user's clone holds: README's links resolve inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_readme_links_resolve_inside_the_repository() -> None:
    links = [t for t in re.findall(r"\]\(([^)#]+)", README) if not t.startswith(("http://", "https://"))]
    assert "docs/protocol.md" in links
    missing = [t for t in links if not (REPO / t).exists()]
    assert missing == []


def test_readme_cites_nothing_a_clone_lacks() -> None:
    """The project's shared/ folder is not part of a clone; the protocol lives in docs/protocol.md."""
    assert "shared/spec" not in README
    protocol = (REPO / "docs" / "protocol.md").read_text()
    for fact in ("22,246", "2,958", "c[1] += 15 * s", "0.6 x", "Mean", "366 annotated joints"):
        assert fact in protocol, fact


def test_the_docs_cite_only_example_folders_a_clone_holds() -> None:
    """A `results/published/...` or `tests/data/...` path quoted in README or docs/ exists (placeholders aside)."""
    cited = {
        path
        for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
        for path in re.findall(r"`((?:results/published|tests/data)/[^`\s]*)`", doc.read_text())
        if not any(mark in path for mark in "<*{")
    }
    assert "results/published/cpu-amd-epyc-2c-pt2.14.1/" in cited
    assert sorted(p for p in cited if not (REPO / p).exists()) == []
