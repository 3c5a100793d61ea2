"""MkDocs hook: the manual shows the published example's pictures from where they are committed, results/published/.

A page links them as `../results/published/NAME.png`, which resolves on GitHub and in a clone. MkDocs serves only its
docs_dir, so this hook adds each results/published/*.png to the site as `published/NAME.png` and points those links
there; no PNG is copied into docs/ by hand, and `hgbench plot` rewrites only the committed ones.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

PUBLISHED = Path(__file__).resolve().parents[1] / "results" / "published"
SITE_FOLDER = "published"
# A Markdown link or image target ending in .png that leads (relative to its page) into results/published/.
PNG_LINK = re.compile(r"\]\(((?:\.\./)+results/published/([^)/\s]+\.png))\)")


def on_files(files: Files, config) -> Files:
    for png in sorted(PUBLISHED.glob("*.png")):
        files.append(File.generated(config, f"{SITE_FOLDER}/{png.name}", abs_src_path=str(png)))
    return files


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    page_dir = Path(page.file.abs_src_path).parent

    def to_site(match: re.Match[str]) -> str:
        target, name = match.group(1), match.group(2)
        if (page_dir / target).resolve() != PUBLISHED / name:
            return match.group(0)  # not the committed pictures: left for MkDocs to validate as written
        site_path = posixpath.relpath(f"{SITE_FOLDER}/{name}", posixpath.dirname(page.file.src_uri) or ".")
        return f"]({site_path})"

    return PNG_LINK.sub(to_site, markdown)
