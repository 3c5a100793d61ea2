"""The command line imports only the module of the command it runs, so a machine with torch and torchvision but
without rich, pandas or OpenCV (a GPU node's own Python, where `make gpu-check` runs) still runs what needs none of
them, and a command or GPU check that needs a missing package names it."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hgbench.commands
from hgbench import cli
from hgbench.gpu_check.catalogue import STEPS, Step
from hgbench.gpu_check.runner import run_check

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("rich", "pandas", "cv2")


@pytest.fixture
def blocked(tmp_path: Path) -> dict[str, str]:
    """An environment in which rich, pandas and cv2 do not import (a folder ahead of site-packages whose modules of
    those names raise what Python raises for a package that is not installed)."""
    folder = tmp_path / "blocked"
    folder.mkdir()
    blocker = 'raise ModuleNotFoundError(f"No module named {__name__!r}", name=__name__)\n'
    for name in BLOCKED:
        (folder / f"{name}.py").write_text(blocker)
    return {**os.environ, "PYTHONPATH": str(folder), "COLUMNS": "100"}


def _python(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=env, check=False)


def test_every_command_module_is_in_the_table_with_its_own_help_line() -> None:
    """A subcommand joins with one line in `cli.COMMANDS`; the line `hgbench --help` shows without importing the
    module is the one the module gives its own parser."""
    modules = {m.name for m in pkgutil.iter_modules(hgbench.commands.__path__) if not m.name.startswith("_")}
    assert set(cli.command_modules()) == modules
    full = cli.make_parser()  # every module imported
    (sub,) = [a for a in full._actions if a.dest == "command"]
    shown = {a.dest: a.help for a in sub._choices_actions}
    assert shown == {c.name: c.help for c in cli.COMMANDS}


def test_help_and_run_need_none_of_rich_pandas_or_opencv(
    blocked: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    top = _python(["-m", "hgbench.cli", "--help"], blocked)
    assert top.returncode == 0, top.stderr
    assert top.stdout == cli.make_parser().format_help()  # reads as the parser with every command's module does
    for argv in (["-m", "hgbench.cli", "run", "--help"], ["-m", "hgbench.gpu_check", "--help"]):
        proc = _python(argv, blocked)
        assert proc.returncode == 0, proc.stderr
    assert "--fast" in _python(["-m", "hgbench.cli", "run", "--help"], blocked).stdout


@pytest.mark.parametrize(("command", "package"), [("list", "rich"), ("table", "pandas"), ("synth", "cv2")])
def test_a_command_whose_package_is_missing_names_it_in_one_line(
    command: str, package: str, blocked: dict[str, str], tmp_path: Path
) -> None:
    args = ["--out", str(tmp_path / "synth")] if command == "synth" else []
    proc = _python(["-m", "hgbench.cli", command, *args], blocked)
    pip = {"cv2": "opencv-python-headless"}.get(package, package)
    assert (proc.returncode, proc.stderr) == (2, f"hgbench: error: missing package: {package} (pip install {pip})\n")


def test_a_run_trains_without_rich_pandas_or_opencv_and_the_worker_crop_names_opencv(
    blocked: dict[str, str], synthetic_root: Path, tmp_path: Path
) -> None:
    """`--decode device` needs torchvision's decoder only (the data generated beforehand); the worker path's crop is
    OpenCV's, and the run that needs it stops naming it."""
    common = ["-m", "hgbench.cli", "run", "--case", "hg1", "--data-dir", str(synthetic_root), "--device", "cpu"]
    common += ["--epochs", "1", "--input-res", "64", "--batch", "4", "--limit-train", "8", "--limit-val", "4"]
    common += ["--workers", "1", "--no-flip-test", "--quiet", "--checkpoint-dir", str(tmp_path / "runs")]
    ok = _python([*common, "--decode", "device", "--out", str(tmp_path / "device")], blocked)
    assert ok.returncode == 0, ok.stderr
    (record,) = (tmp_path / "device").rglob("*.json")
    assert json.loads(record.read_text())["status"] == "finished"
    failed = _python([*common, "--decode", "workers", "--out", str(tmp_path / "workers")], blocked)
    assert failed.returncode != 0
    (record,) = (tmp_path / "workers").rglob("*.json")
    reason = json.loads(record.read_text())["status_reason"]
    assert reason == "stopped in epoch 1: missing package: cv2 (pip install opencv-python-headless)"


def test_gpu_check_steps_name_a_missing_package_even_from_a_process_they_started(
    blocked: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment step names every missing package; a step whose child process fails on an import (as
    torchrun's worker would) gets that package added to its one-line reason."""
    monkeypatch.setenv("PYTHONPATH", blocked["PYTHONPATH"])
    script = textwrap.dedent(
        f"""
        import os, subprocess, sys
        from pathlib import Path
        from hgbench.gpu_check.protocol import RESULT_ENV, WORK_ENV, Outcome, StepContext
        ctx = StepContext(Path(os.environ[RESULT_ENV]), Path(os.environ[WORK_ENV]))
        out = {str(tmp_path / "synth")!r}
        proc = subprocess.run([sys.executable, "-m", "hgbench.cli", "synth", "--out", out], capture_output=True,
                              text=True)
        sys.stdout.write(proc.stdout + proc.stderr)
        ctx.finish(Outcome("fail", f"the child exited with code {{proc.returncode}}; no record"))
        """
    )
    child = Step("child", "a claim", 120, needs_cuda=False, command=(sys.executable, "-c", script))
    report, _ = run_check([STEPS[0], child], tmp_path / "report", echo=lambda _: None)
    environment, step = report["steps"]
    assert environment["status"] == "fail"
    for package in ("pandas (pip install pandas)", "rich (pip install rich)", "cv2 (pip install opencv-python"):
        assert package in environment["reason"]
    assert step["reason"] == (
        "the child exited with code 2; no record; missing package: cv2 (pip install opencv-python-headless)"
    )
