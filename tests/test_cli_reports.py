"""Tests of `hgbench table`, `hgbench compare` and `hgbench plot` through the real entry point (`hgbench.cli.main`)."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from hgbench import cli
from hgbench.report import README_END, README_START

RECORDS = Path(__file__).parent / "data" / "records"
CPU_DIR = RECORDS / "cpu-pt2.14.1"


@pytest.fixture(autouse=True)
def _only_report_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build the parser from these three commands only, so the tests do not depend on the other subcommands."""
    monkeypatch.setattr(cli, "command_modules", lambda: ["table", "compare", "plot"])


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_table_markdown_warns_about_bad_files_and_still_renders(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["table", "--results", str(RECORDS)], capsys)
    assert code == 0
    assert out.startswith("> **Warning:** These runs come from 2 different devices")
    assert "| 3 | 6 stacks | 2 |" in out
    warnings = err.splitlines()
    assert len(warnings) == 2
    assert all(w.startswith("hgbench: warning: ") for w in warnings)
    assert "0006_case8_seed0.json" in err
    assert "foreign.json" in err


def test_table_csv(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["table", "--format", "csv", "--reference", "--results", str(CPU_DIR)], capsys)
    lines = out.splitlines()
    assert code == 0
    assert lines[0].startswith("case,as_built,description,runs,seeds,device,setting,smoke,timing,params,gflops,")
    assert lines[0].endswith(",min_per_epoch_ratio,inference_min_ratio,ratio_note")
    assert len(lines) == 1 + 8


def test_table_missing_folder_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["table", "--results", str(tmp_path / "results")], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("hgbench: error: results not found: ")


def test_table_empty_folder_prints_header_and_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["table", "--results", str(tmp_path)], capsys)
    assert code == 0
    assert err == ""
    assert out.startswith("| case |")
    assert "No finished runs yet" in out


def test_table_readme_rewrite_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    head, tail = "# title\n\n## Results\n\n", "\n## Licence\n\nMIT\n"
    readme.write_text(f"{head}{README_START}\n_No results yet._\n{README_END}{tail}")
    argv = ["table", "--reference", "--readme", str(readme), "--results", str(CPU_DIR)]
    code, out, _ = run(argv, capsys)
    assert code == 0
    assert "results section updated" in out
    text = readme.read_text()
    assert text.startswith(head + README_START + "\n| case |")
    assert text.endswith(README_END + tail)
    assert "published val. acc" in text
    code, out, _ = run(argv, capsys)
    assert code == 0
    assert "already up to date" in out
    assert readme.read_text() == text


def test_table_readme_twice_rewrites_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`make table` keeps README's table and the manual's copy in step: `--readme` repeats, each file rewritten."""
    readme, page = tmp_path / "README.md", tmp_path / "docs" / "reports.md"
    page.parent.mkdir()
    readme.write_text(f"# r\n\n{README_START}\nold\n{README_END}\n")
    page.write_text(f"# Reports\n\ntext\n\n{README_START}\n_No results yet._\n{README_END}\n\nafter\n")
    argv = ["table", "--reference", "--results", str(CPU_DIR), "--readme", str(readme), "--readme", str(page)]
    code, out, _ = run(argv, capsys)  # stderr: the test records' deliberate bad files, named
    assert code == 0
    assert out.splitlines() == [f"{readme}: results section updated", f"{page}: results section updated"]
    table = readme.read_text().split(README_START, 1)[1].split(README_END, 1)[0]
    assert table.startswith("\n| case |")
    assert page.read_text() == f"# Reports\n\ntext\n\n{README_START}{table}{README_END}\n\nafter\n"


def test_table_readme_without_markers_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    code, _, err = run(["table", "--readme", str(readme), "--results", str(CPU_DIR)], capsys)
    assert code == 2
    assert err.splitlines()[-1].startswith("hgbench: error: ")
    assert "marker" in err
    assert readme.read_text() == "# no markers here\n"


def test_table_readme_and_csv_conflict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["table", "--format", "csv", "--readme", str(tmp_path / "R.md")])
    assert info.value.code == 2
    assert "--readme writes Markdown" in capsys.readouterr().err


def test_compare_files_and_globs(capsys: pytest.CaptureFixture[str]) -> None:
    a = str(CPU_DIR / "0001_case1_seed0.json")
    b = str(CPU_DIR / "000[23]_case3_*.json")
    code, out, err = run(["compare", a, b, "--format", "csv"], capsys)
    assert code == 0
    assert err == ""
    assert out.splitlines()[0] == (
        "group,metric,a_mean,a_std,a_n,b_mean,b_std,b_n,delta,delta_pct,delta_ci95_low,delta_ci95_high,p_value,"
        "p_note,significant"
    )
    assert "case 1 vs case 3,PCKh@0.5 Mean,42.5,,1,42,1.414213562,2,-0.5," in out
    code, out, _ = run(["compare", a, b], capsys)
    assert code == 0
    assert "case 1 vs case 3" in out
    assert "min/epoch" in out
    assert "A: 1 finished run(s)" in out


def test_compare_missing_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["compare", str(CPU_DIR), str(tmp_path / "nope")], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert "nope" in err
    assert "--results" not in err  # compare has no such option
    assert "A and B are record files, folders or quoted globs" in err


def test_compare_help_example_names_files_that_exist() -> None:
    """The first example of `hgbench compare --help` runs as written from the repository root."""
    from hgbench.commands.compare import EXAMPLES

    repo = Path(__file__).resolve().parents[1]
    named = [w for w in EXAMPLES.split() if w.startswith("results/published/") and w.endswith(".json")]
    assert len(named) == 2
    assert all((repo / w).is_file() for w in named), named
    assert {"0001_case1_seed0_smoke.json", "0008_case8_seed0_smoke.json"} == {Path(w).name for w in named}


def test_plot_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(CPU_DIR, tmp_path / "results" / CPU_DIR.name)
    out_png = tmp_path / "out" / "frontier.png"
    code, out, err = run(["plot", "--results", str(tmp_path / "results"), "--out", str(out_png)], capsys)
    assert code == 0
    assert out.strip() == f"wrote {out_png}"
    assert "0006_case8_seed0.json" in err
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_make_table_renders_the_readme_table_from_the_published_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make table`'s own command line, run on a copy of the repository, leaves README.md and the manual's Reports page
    as committed: both show the published example's current table."""
    repo = Path(__file__).resolve().parents[1]
    recipe = (repo / "Makefile").read_text().split("\ntable:", 1)[1].split("\n")[1]
    argv = shlex.split(recipe.strip())
    assert argv[0] == "$(BIN)/hgbench"
    assert "results/published" in argv
    shutil.copytree(repo / "results", tmp_path / "results")
    shutil.copy(repo / "README.md", tmp_path / "README.md")
    (tmp_path / "docs").mkdir()
    shutil.copy(repo / "docs" / "reports.md", tmp_path / "docs" / "reports.md")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(argv[1:], capsys)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "README.md: results section already up to date",
        "docs/reports.md: results section already up to date",
    ]


def test_table_on_a_fresh_clone_shows_no_run_as_the_users(
    fresh_clone_results: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before `make run`, `hgbench table` shows nothing as this machine's; the published example is one flag away."""
    monkeypatch.chdir(fresh_clone_results.parent)
    code, out, err = run(["table", "--reference"], capsys)
    assert (code, err) == (0, "")
    assert "No finished runs yet" in out
    assert "CPU: AMD EPYC" not in out
    code, out, _ = run(["table", "--reference", "--results", "results/published"], capsys)
    assert code == 0
    assert out.count("| CPU: AMD EPYC |") == 8
