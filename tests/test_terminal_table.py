"""`hgbench table` in a terminal: a rich table that fits about 120 columns (`--wide`: every column); Markdown and
CSV unchanged."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from hgbench.cli import main
from hgbench.report import comparison_table
from hgbench.report.terminal import to_rich
from hgbench.run.results import load_records

REPO = Path(__file__).resolve().parents[1]


def rendered(width: int, *, wide: bool) -> str:
    summaries, _ = load_records([REPO / "results" / "published"])
    buf = io.StringIO()
    Console(width=width, file=buf, force_terminal=False).print(to_rich(comparison_table(summaries), wide=wide))
    return buf.getvalue()


def test_the_terminal_table_fits_120_columns_and_says_what_it_leaves_out() -> None:
    text = rendered(120, wide=False)
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "min/epoch" in text
    assert "inference min" in text
    assert "Not shown (--wide shows them):" in text
    assert "energy J/epoch" in text.split("Not shown", 1)[1]


def test_wide_shows_every_column(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table", "--wide", "--results", str(REPO / "results" / "published")]) == 0
    out = capsys.readouterr().out
    assert "Not shown" not in out
    assert "seeds" in out
    assert "device" in out
    assert "|---" not in out  # not Markdown


def test_wide_with_a_file_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["table", "--wide", "--format", "md"])
    assert exit_info.value.code == 2
    assert "--wide is for the terminal table" in capsys.readouterr().err


def test_not_a_terminal_still_gets_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table", "--results", str(REPO / "results" / "published")]) == 0
    assert "|:---|" in capsys.readouterr().out
