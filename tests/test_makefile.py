"""Tests of the Makefile's aliases: what `make install`, `make run`, `make table` and `make lint` run."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def recipe(target: str) -> list[str]:
    """The command lines of a Makefile target (tab-indented lines under ``target:``)."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}\s*:", line))
    body = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        body.append(line.strip())
    return body


def test_install_brings_every_tool_the_targets_use() -> None:
    """`make lint` runs ruff and the sweep tests run Ray and submitit, so the install step installs the dev extra (ruff
    and the test tools) and the engines' extras."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "ruff" in extras["dev"]
    assert "hgbench[test]" in extras["dev"]
    assert any(dep.startswith("ray") for dep in extras["ray"])
    assert any(dep.startswith("submitit") for dep in extras["slurm"])
    assert any("pip install" in line and "'.[dev,ray,slurm]'" in line for line in recipe("$(STAMP)"))
    assert recipe("lint") == ["$(BIN)/ruff check hgbench tests benchmarks"]


def test_run_measures_this_machine_and_table_renders_the_published_example() -> None:
    """`make run` prints the user's runs (the default scan leaves results/published out); `make table` the README's."""
    (run,) = recipe("run")
    assert run == "$(BIN)/hgbench run --case all --smoke && $(BIN)/hgbench table --reference"
    (table,) = recipe("table")
    assert "--results results/published" in table
    assert "--readme README.md" in table
