"""The example commands of README, of the manual (every `sh` block of docs/*.md) and of `compare --help`: every one
parses, names no machine folder this machine may not write, and the cheap ones (table, compare) run as written from a
clone whose results/ holds the published example and one machine's own folder; `table --machines` names that folder
as compare takes it."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from hgbench.cli import main, make_parser
from hgbench.commands.compare import EXAMPLES as COMPARE_EXAMPLES

REPO = Path(__file__).resolve().parents[1]
CHEAP = ("table", "compare")  # `list` counts every case's FLOPs: minutes on a busy 2-core machine


def _commands(text: str) -> list[str]:
    """`hgbench ...` lines of a text (continuations joined, comments and [optional] parts dropped); lines with
    placeholders (<run>, A.json, a|b choices) are left out."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line.strip())
        for command in line.split(" && "):  # `hgbench data mpii DIR && hgbench run ...`: each one checked
            command = command.strip()
            if not command.startswith("hgbench "):
                continue
            command = re.sub(r"\[[^\]]*\]", "", command).strip()
            if any(mark in command for mark in ("<", "A.json", "|", "...")):
                continue
            found.append(command)
    return found


def _sh_blocks(path: Path) -> str:
    """The fenced `sh` blocks of a Markdown file, one after another."""
    return "\n".join(re.findall(r"^```sh\n(.*?)^```", path.read_text(), flags=re.DOTALL | re.MULTILINE))


DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXAMPLES = list(dict.fromkeys(c for doc in DOCUMENTS for c in _commands(_sh_blocks(doc)))) + _commands(COMPARE_EXAMPLES)


def test_the_examples_are_found() -> None:
    """README's quick start and each page's examples are read: the regex that finds them finds them."""
    assert len(EXAMPLES) >= 35
    assert "hgbench data mpii /data/mpii" in EXAMPLES  # README's quick start, the half before its &&
    assert any(c.startswith("hgbench sweep --plan study.toml --engine slurm") for c in EXAMPLES)  # docs/distributed.md
    assert "hgbench list --case variants/three96.toml" in EXAMPLES  # docs/variants.md
    assert "hgbench compare results/published 'results/cpu-*'" in EXAMPLES
    assert "hgbench table --machines" in EXAMPLES  # what README and the help point at for a machine's folder name


def test_no_example_names_a_machine_folder_this_machine_may_not_write() -> None:
    """A results/<machine> name depends on how the CPU names itself: examples use a glob or results/published."""
    for command in EXAMPLES:
        for arg in shlex.split(command):
            parts = Path(arg).parts
            if parts[:1] == ("results",) and len(parts) > 1 and parts[1] != "published":
                assert any(c in parts[1] for c in "*?["), f"{command!r} names results/{parts[1]}"


@pytest.mark.parametrize("command", EXAMPLES)
def test_every_example_parses(command: str) -> None:
    argv = shlex.split(command)[1:]
    try:
        make_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's usage error
        pytest.fail(f"{command!r} does not parse (exit {exc.code})")


# `table --bench` reads `hgbench bench` records, which a clone has none of until bench runs.
@pytest.mark.parametrize("command", [c for c in EXAMPLES if shlex.split(c)[1] in CHEAP and "--bench" not in c])
def test_the_cheap_examples_run_as_written(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    published = REPO / "results" / "published"
    shutil.copytree(published, tmp_path / "results" / "published")
    machine = next(p for p in published.iterdir() if p.is_dir())
    shutil.copytree(machine, tmp_path / "results" / machine.name)  # this machine's own records, as make run leaves
    monkeypatch.chdir(tmp_path)
    code = main(shlex.split(command)[1:])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out
    if "--machines" in command:  # the folder it names is what the other commands take
        (line,) = out.splitlines()
        assert line.startswith(f"results/{machine.name}: 8 records, 8 finished; torch ")
        assert main(["compare", "results/published", out.split(":", 1)[0]]) == 0
