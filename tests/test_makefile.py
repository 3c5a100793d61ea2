"""Tests of the Makefile's aliases: what `make install`, `make run`, `make table` and `make lint` run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
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
    assert any(dep.startswith("mlflow") for dep in extras["mlflow"])  # the MLflow tests start a real server
    assert any("pip install" in line and "'.[dev,ray,slurm,mlflow]'" in line for line in recipe("$(STAMP)"))
    assert recipe("lint") == ["$(BIN)/ruff check hgbench tests benchmarks tools"]  # tools/: the manual's hook


def test_a_new_version_reinstalls_once(tmp_path: Path) -> None:
    """The editable install's metadata (`pip show hgbench`) holds the version from install time: a version bump must
    re-run the install, and an up-to-date install must not. Checked with make's own dry run on a scratch copy."""
    for name in ("Makefile", "pyproject.toml", "constraints.txt", "hgbench/_version.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((REPO / name).read_bytes())
    stamp = tmp_path / ".venv" / ".installed"
    stamp.parent.mkdir()
    stamp.touch()
    later = time.time() + 60

    def dry_install() -> str:
        return subprocess.run(
            ["make", "-n", "install"], cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    os.utime(stamp, (later, later))
    assert "pip install" not in dry_install()
    os.utime(tmp_path / "hgbench" / "_version.py", (later + 60, later + 60))
    assert "pip install" in dry_install()


def test_run_measures_this_machine_and_table_renders_the_published_example() -> None:
    """`make run` prints the user's runs (the default scan leaves results/published out); `make table` the README's,
    and the same table on the manual's Reports page."""
    (run,) = recipe("run")
    assert run == "$(BIN)/hgbench run --case all --smoke && $(BIN)/hgbench table --reference"
    (table,) = recipe("table")
    assert "--results results/published" in table
    assert "--readme README.md" in table
    assert "--readme docs/reports.md" in table


def test_docs_builds_the_manual_strictly_into_the_ignored_site_folder() -> None:
    """`make docs` is MkDocs with --strict (a broken link or anchor fails it), into site/, which git ignores."""
    (docs,) = recipe("docs")
    assert "$(BIN)/mkdocs build --strict --site-dir site" in docs
    assert "site/" in (REPO / ".gitignore").read_text().splitlines()
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "hgbench[docs]" in extras["dev"]  # make install's dev extra brings MkDocs


def _loops_of(banner: str) -> list[int]:
    """The busy loops' pids from .ci/loaded's first line."""
    match = re.search(r"busy loops \(pids ([\d ]+)\)", banner)
    assert match, banner
    return [int(pid) for pid in match.group(1).split()]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_test_loaded_runs_make_test_beside_busy_loops_that_end_with_it() -> None:
    """`make test-loaded` is `make test` itself beside busy loops; the loops end with the command, and its exit status
    is the target's (a failing suite fails the target)."""
    assert recipe("test-loaded") == [".ci/loaded $(MAKE) test"]
    env = {**os.environ, "HGBENCH_LOAD_PROCS": "2"}
    proc = subprocess.run(
        [str(REPO / ".ci" / "loaded"), "sh", "-c", "exit 3"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3
    loops = _loops_of(proc.stdout)
    assert len(loops) == 2
    assert all(_gone(pid) for pid in loops)


def _wait_for_child(parent: int, name: str, deadline_s: float = 120.0) -> None:
    """Until a child of `parent` runs the program `name` (its exec done), polling ``/proc``."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue  # the process ended while we looked
            comm, _, rest = text[text.index("(") + 1 :].rpartition(")")
            if comm == name and int(rest.split()[1]) == parent:
                return
        time.sleep(0.05)
    raise AssertionError(f"no child {name!r} of {parent} after {deadline_s} s")


def test_test_loaded_stops_its_busy_loops_on_ctrl_c() -> None:
    env = {**os.environ, "HGBENCH_LOAD_PROCS": "2"}
    proc = subprocess.Popen(
        [str(REPO / ".ci" / "loaded"), "sleep", "600"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # As from a terminal's shell: a suite started in the background (`make test-loaded &`, nohup, a CI runner)
        # inherits SIGINT ignored, and bash can neither trap nor reset a signal ignored on entry.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    loops = _loops_of(proc.stdout.readline())
    _wait_for_child(proc.pid, "sleep")  # Ctrl-C once the command runs, as a person's would
    os.killpg(proc.pid, signal.SIGINT)  # as the terminal's Ctrl-C: the whole foreground group
    assert proc.wait(timeout=60) != 0
    assert all(_gone(pid) for pid in loops)


def test_make_test_never_collects_the_cluster_tests_and_test_cluster_runs_them_after_it_on_ci() -> None:
    """tests/cluster/ needs a cluster (`make test-cluster` brings one up): `make test`'s pytest never enters the
    folder, pytest given the folder collects it, and CI runs `make test` then `make test-cluster`."""
    import sys

    assert recipe("test-cluster") == [".ci/test-cluster"]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert ci == ["make test", "make test-cluster"]

    def collected(*args: str) -> str:
        argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args]
        return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300).stdout

    assert "tests/cluster/" not in collected("--ignore-glob=tests/test_*.py")  # the default run, less the top level
    assert "tests/cluster/test_slurm.py::" in collected("tests/cluster")
