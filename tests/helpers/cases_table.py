"""The cases table of README.md and docs/cases.md (the one whose header starts `| case | described as |`), as rows of
cells, for the tests that hold it to the registry and to `hgbench list`."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEADER = "| case | described as |"


def cases_table(text: str) -> list[list[str]]:
    """The table's rows under its header and separator, each a list of stripped cells, up to the first other line."""
    rows = []
    for line in text.split(HEADER, 1)[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def readme_cases() -> dict[str, tuple[int, str]]:
    """README's table as case id -> (params, GFLOPs as printed)."""
    rows = cases_table((REPO / "README.md").read_text())
    return {row[0]: (int(row[8].replace(",", "")), row[9]) for row in rows}
