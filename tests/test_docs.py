"""Tests of the documents a user's clone holds: README's links resolve inside the repository (anchors included), the
manual (mkdocs.yml, docs/) builds with --strict, and --strict really fails on a broken link, a dangling anchor or a
page outside the nav."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cases_table import cases_table

from hgbench.spec.cases import get_spec

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
MANUAL = sorted((REPO / "docs").glob("*.md"))


def _links(text: str) -> list[str]:
    """The relative link targets of a Markdown text (web links left out)."""
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("http://", "https://"))]


def _anchors(markdown: str) -> set[str]:
    """The anchors of a page's headings as GitHub and MkDocs's toc both make them (lower case, punctuation dropped,
    spaces to hyphens); fenced code is not a heading."""
    prose = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", prose, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).strip().replace(" ", "-") for h in headings}


def test_readme_links_resolve_inside_the_repository() -> None:
    links = [t.split("#", 1)[0] for t in _links(README) if not t.startswith("#")]
    assert "docs/protocol.md" in links
    missing = [t for t in links if not (REPO / t).exists()]
    assert missing == []


def test_readme_links_into_the_manual_name_anchors_its_pages_have() -> None:
    """README's `docs/page.md#anchor` links land on a heading of that page (GitHub makes the same anchors)."""
    anchored = [t for t in _links(README) if "#" in t and t.startswith("docs/")]
    assert "docs/cases.md#described-vs-as-built" in anchored
    dangling = [t for t in anchored if t.split("#")[1] not in _anchors((REPO / t.split("#")[0]).read_text())]
    assert dangling == []


def test_readme_links_every_page_of_the_manual() -> None:
    """README is the front door: each page of the manual is one link away from it."""
    linked = {Path(t.split("#", 1)[0]) for t in _links(README)}
    assert [p.name for p in MANUAL if p.relative_to(REPO) not in linked] == []


def test_the_manual_links_outside_docs_only_to_files_a_clone_holds() -> None:
    """A page's link out of docs/ (the published pictures) resolves in a clone as on GitHub; the site build serves
    those pictures through tools/mkdocs_published.py."""
    outside = [(page, t) for page in MANUAL for t in _links(page.read_text()) if t.startswith("../")]
    assert ("reports.md", "../results/published/frontier.png") in [(p.name, t) for p, t in outside]
    assert [t for page, t in outside if not (page.parent / t).resolve().is_file()] == []


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
        for doc in [REPO / "README.md", *MANUAL]
        for path in re.findall(r"`((?:results/published|tests/data)/[^`\s]*)`", doc.read_text())
        if not any(mark in path for mark in "<*{")
    }
    assert "results/published/cpu-amd-epyc-2c-pt2.14.1/" in cited
    assert sorted(p for p in cited if not (REPO / p).exists()) == []


def test_the_cases_table_is_the_same_in_readme_and_manual_and_pins_each_case_s_parameters() -> None:
    """README's and docs/cases.md's tables are one table, and each row's params are the count the registry pins
    (`CaseSpec.expected_params`, which tests/test_cases.py checks against the built network; that file also checks
    the table's params and GFLOPs against `hgbench list`)."""
    rows = cases_table(README)
    assert rows == cases_table((REPO / "docs" / "cases.md").read_text())
    assert [r[0] for r in rows] == [*map(str, range(1, 9)), "hg1", "hg2", "hg8"]
    assert {r[0]: int(r[8].replace(",", "")) for r in rows} == {r[0]: get_spec(r[0]).expected_params for r in rows}


def _mkdocs_build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(root / "mkdocs.yml")]
    env = {"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(argv + ["--site-dir", str(site)], capture_output=True, text=True, timeout=600, env=env)


def test_the_manual_builds_strictly_with_the_published_pictures_and_table(tmp_path: Path) -> None:
    """`mkdocs build --strict` passes: every link, anchor and nav entry resolves; the API page is generated from the
    docstrings; the Reports page shows the published table and its three pictures, served from results/published/."""
    proc = _mkdocs_build(REPO, tmp_path / "site")
    assert proc.returncode == 0, proc.stderr
    site = tmp_path / "site"
    for name in ("frontier.png", "curves.png", "time.png"):
        assert (site / "published" / name).read_bytes() == (REPO / "results" / "published" / name).read_bytes()
    reports = (site / "reports" / "index.html").read_text()
    assert reports.count('src="../published/') == 3
    assert "<table>" in reports
    assert "published min/epoch" in reports
    api = (site / "api" / "index.html").read_text()
    documented = {i.rsplit(".", 1)[1] for i in re.findall(r'id="(hgbench\.[\w.]+)"', api)}
    assert {"create_model", "RunSummary", "summarize", "validate_record", "load_records", "read_record"} <= documented
    assert "keyword-only options" in api  # create_model's docstring, rendered


def _copy_of_the_manual(root: Path) -> Path:
    root.mkdir()
    for name in ("mkdocs.yml", "docs", "tools"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    (root / "results" / "published").mkdir(parents=True)
    for png in (REPO / "results" / "published").glob("*.png"):
        shutil.copy(png, root / "results" / "published" / png.name)
    return root


@pytest.mark.parametrize(
    ("fault", "warning"),
    [
        ("[a page](no-such-page.md)", "contains a link 'no-such-page.md', but the target is not found"),
        ("[a section](cases.md#no-such-heading)", "does not contain an anchor '#no-such-heading'"),
        ("[here](#no-such-heading)", "contains a link '#no-such-heading', but there is no such anchor on this page"),
        (None, "are not included in the \"nav\" configuration"),
    ],
)
def test_the_strict_build_fails_on_a_broken_link_a_dangling_anchor_or_a_page_outside_the_nav(
    tmp_path: Path, fault: str | None, warning: str
) -> None:
    root = _copy_of_the_manual(tmp_path / "repo")
    if fault is None:
        (root / "docs" / "orphan.md").write_text("# A page nobody listed\n")
    else:
        index = root / "docs" / "index.md"
        index.write_text(index.read_text() + f"\nSee {fault}.\n")
    proc = _mkdocs_build(root, tmp_path / "site")
    assert proc.returncode != 0
    assert warning in proc.stderr
