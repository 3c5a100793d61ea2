"""`hgbench sweep`: plan files, engine errors, dry runs, the driver's retries and Ctrl-C (with a fake engine), and the
local engine end to end (a run going NaN, a worker dying mid-run); Ray and submitit are in test_sweep_engines.py."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from hgbench import cli
from hgbench.errors import HGBenchError
from hgbench.spec.config import RunConfig
from hgbench.sweep import driver
from hgbench.sweep.engines import Ended, Job
from hgbench.sweep.submitit_engine import SubmititEngine
from hgbench.sweep.worker import DIE_ONCE_ENV
from hgbench.train import compile_probe


def sweep_argv(tmp_path: Path, data_dir: Path, *extra: str) -> list[str]:
    """`hgbench sweep` at the size of conftest's `tiny_config`: hg1 at 64 px on 8 + 6 synthetic people, 1 epoch."""
    return [
        "sweep",
        *("--device", "cpu", "--workers", "0", "--data-dir", str(data_dir)),
        *("--epochs", "1", "--batch", "4", "--test-batch", "4", "--input-res", "64"),
        *("--limit-train", "8", "--limit-val", "6", "--no-flip-test"),
        *("--out", str(tmp_path / "results"), "--checkpoint-dir", str(tmp_path / "runs")),
        *extra,
    ]


def records(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "results").rglob("*.json"))]


def write_plan(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


# --- the runs a sweep plans --------------------------------------------------------------------------------------


def test_dry_run_prints_the_grid_and_what_it_asks_for_and_runs_nothing(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = sweep_argv(tmp_path, synthetic_root, "--cases", "1,hg1", "--seeds", "0,1", "--dry-run")
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "sweep of 4 runs, 4 to run; local: one run at a time" in out
    for label in ("case 1 seed 0", "case 1 seed 1", "hg1 seed 0", "hg1 seed 1"):
        assert f"] {label}: 1 epochs, input 64, batch 4" in out
    assert not (tmp_path / "results").exists()


def test_a_plan_file_gives_each_run_its_own_settings_over_the_defaults(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write_plan(
        tmp_path,
        "[defaults]\nlr = 0.001\nepochs = 3\n\n[[run]]\ncase = 3\nseed = 2\n\n"
        '[[run]]\ncase = "3"\nas_built = true\nlr = 0.002\n',
    )
    # A flag on the command line applies to every run and overrides [defaults]; a run's own setting wins over both.
    argv = sweep_argv(tmp_path, synthetic_root, "--plan", str(plan), "--dry-run")
    argv[argv.index("--epochs") + 1] = "2"
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "case 3 seed 2: 2 epochs, input 64, batch 4, lr 0.001," in out
    assert "case 3 (as built) seed 0: 2 epochs, input 64, batch 4, lr 0.002," in out


def test_the_manual_s_plan_example_reads(tmp_path: Path) -> None:
    from hgbench.commands.sweep import run_options
    from hgbench.sweep.plan import read_plan

    manual = (Path(__file__).resolve().parents[1] / "docs" / "distributed.md").read_text()
    blocks = [block.split("```", 1)[0] for block in manual.split("```toml\n")[1:]]
    example = next(block for block in blocks if "[[run]]" in block)  # the manual's plan file example
    defaults, runs = read_plan(write_plan(tmp_path, example), run_options())
    assert defaults == {"epochs": 50, "data_dir": "/shared/mpii"}
    assert runs == [{"case": "3", "seed": 0}, {"case": "3", "as_built": True, "lr": 2.5e-4}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[run]]\ncase = 1\nlearning_rate = 0.1\n", "run 1: unknown key 'learning_rate'; allowed: "),
        ("[defaults]\nepochs = 'many'\n[[run]]\ncase = 1\n", "defaults: epochs: expected an integer, got 'many'"),
        ("[[run]]\ncase = 1\noptim = 'sgd'\n", "run 1: optim: expected one of adam, rmsprop, got 'sgd'"),
        ("[[run]]\ncase = 1\n[[run]]\nseed = 1\n", "run 2 has no case"),
        ("[[runs]]\ncase = 1\n", "unknown table or key 'runs'"),
        ("[defaults]\nepochs = 2\n", "no runs; add a [[run]] table"),
        ("[[run]]\ncase = \n", "not valid TOML"),
        ("[[run]]\ncase = 9\n", "unknown case '9'"),
        ("[[run]]\ncase = 'hg1'\nworkers = -1\n", "run of case hg1, seed 0: --workers must be 0 or more, got -1"),
    ],
)
def test_a_bad_plan_file_is_one_line_naming_the_file_and_key(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    plan = write_plan(tmp_path, text)
    assert cli.main(sweep_argv(tmp_path, synthetic_root, "--plan", str(plan), "--dry-run")) == 2
    err = capsys.readouterr().err
    assert err.startswith("hgbench: error: ")
    assert err.count("\n") == 1, err
    assert message.lower() in err.lower()
    if "TOML" in message or "key" in message:
        assert str(plan) in err


def test_one_run_listed_twice_is_an_error(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(sweep_argv(tmp_path, synthetic_root, "--cases", "hg1,hg1", "--dry-run")) == 2
    assert "lists one run twice: hg1 seed 0 and hg1 seed 0" in capsys.readouterr().err


@pytest.mark.parametrize(("engine", "module", "extra"), [("ray", "ray", "ray"), ("slurm", "submitit", "slurm")])
def test_an_engine_whose_package_is_missing_says_what_to_install(
    tmp_path: Path,
    synthetic_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    engine: str,
    module: str,
    extra: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    argv = sweep_argv(tmp_path, synthetic_root, "--cases", "hg1", "--engine", engine, "--dry-run")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err == f"hgbench: error: --engine {engine} needs the {module} package, which is not installed: "
        f"pip install 'hgbench[{extra}]'\n"
    )


def test_a_flag_of_another_engine_is_refused(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.main(sweep_argv(tmp_path, synthetic_root, "--cases", "hg1", "--slurm-partition", "gpu"))
    assert "--slurm-partition is for --engine slurm" in capsys.readouterr().err


def _fake_slurm(folder: Path) -> Path:
    """`sbatch` (keeps the script it is given, answers a job id) and `srun` stand-ins: submitit needs both on PATH."""
    folder.mkdir()
    (folder / "sbatch").write_text(
        '#!/bin/sh\ncp "$1" "$(dirname "$0")/submitted.sh"\necho "Submitted batch job 4242"\n'
    )
    (folder / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (folder / tool).chmod(0o755)
    return folder


def test_slurm_jobs_go_out_as_one_array_asking_for_the_resources_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("submitit")
    slurm = _fake_slurm(tmp_path / "bin")
    engine = SubmititEngine(
        folder=tmp_path / "submitit", local=False, partition="gpu", time_min=600, gpus=1, cpus=4, array_parallelism=3
    )
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch: an error, never a quiet run on this machine
    with pytest.raises(HGBenchError, match="no Slurm on this machine .* add --slurm-local"):
        engine.start()
    monkeypatch.setenv("PATH", f"{slurm}{os.pathsep}{path}")
    engine.start()
    handles = engine.submit([Job(f"run{i}", {}, True, None) for i in range(4)])
    assert [h.job_id for h in handles] == ["4242_0", "4242_1", "4242_2", "4242_3"]
    script = (slurm / "submitted.sh").read_text()
    for line in ("array=0-3%3", "partition=gpu", "time=600", "gpus-per-node=1", "cpus-per-task=4", "job-name=hgbench"):
        assert f"#SBATCH --{line}" in script


# --- the driver, with a fake engine ------------------------------------------------------------------------------


class FakeEngine:
    """Ends each submission with the next scripted outcome of its run; records what was submitted and cancelled."""

    name = "fake"

    def __init__(self, script: dict[str, list[Ended | None]]) -> None:
        self.script = script
        self.submitted: list[str] = []
        self.cancelled: list[str] = []

    def submit(self, jobs: list[Any]) -> list[Any]:
        self.submitted += [job.name for job in jobs]
        return [job.name for job in jobs]

    def poll(self, handle: str) -> Ended | None:
        step = self.script[handle].pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    def cancel(self, handles: list[str]) -> None:
        self.cancelled += handles


class Notes:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def changed(self, run: driver.SweepRun, note: str | None = None) -> None:
        self.lines.append(f"{run.label}: {note or run.status}")


def fake_runs(*seeds: int) -> list[driver.SweepRun]:
    return [driver.SweepRun(RunConfig(case="hg1", seed=s), identity=None, keep_checkpoint=True) for s in seeds]


def finished(record: str) -> Ended:
    return Ended({"status": "finished", "record": record, "reason": None})


def test_a_dead_worker_is_retried_and_a_failed_run_is_not() -> None:
    runs = fake_runs(0, 1, 2)
    engine = FakeEngine(
        {
            "hg1-seed-0": [None, Ended(None, "exit code -9"), finished("a.json")],
            "hg1-seed-1": [Ended({"status": "failed", "record": None, "reason": "loss is NaN at epoch 1"})],
            "hg1-seed-2": [Ended(None, "exit code -9"), Ended(None, "exit code -9")],
        }
    )
    notes = Notes()
    assert driver.drive(runs, engine, retries=1, view=notes, poll_s=0) is False
    assert [r.status for r in runs] == ["finished", "failed", "failed"]
    assert engine.submitted.count("hg1-seed-0") == 2
    assert runs[0].record == "a.json"
    assert engine.submitted.count("hg1-seed-1") == 1  # failed on its own terms: not retried
    assert runs[1].reason == "loss is NaN at epoch 1"
    assert runs[2].reason == "worker died (exit code -9); no retries left (--retries 1)"
    assert "hg1 seed 0: worker died (exit code -9); retry 1 of 1, from its checkpoint" in notes.lines


def test_ctrl_c_cancels_every_run_not_ended_and_keeps_the_ended() -> None:
    runs = fake_runs(0, 1, 2)
    engine = FakeEngine(
        {
            "hg1-seed-0": [finished("a.json")],
            "hg1-seed-1": [None, finished("b.json")],  # ends while the cancel waits
            "hg1-seed-2": [KeyboardInterrupt(), Ended({"status": "interrupted", "record": None, "reason": "Ctrl-C"})],
        }
    )
    assert driver.drive(runs, engine, retries=1, view=Notes(), poll_s=0) is True
    assert engine.cancelled == ["hg1-seed-1", "hg1-seed-2"]
    # Seed 1 finished before the cancel reached it; seed 2's worker stopped (its record says interrupted).
    assert [r.status for r in runs] == ["finished", "finished", "cancelled"]
    assert runs[1].record == "b.json"
    assert runs[2].reason == "cancelled by Ctrl-C; the same sweep again resumes it"


def test_ctrl_c_cancels_the_queued_runs_before_the_running_ones() -> None:
    """A running job that stops frees its slot; were the queued jobs still there, the scheduler (a Slurm array two at
    a time) would start one of them before its own cancel arrived."""
    runs = fake_runs(0, 1, 2, 3)
    interrupted = Ended({"status": "interrupted", "record": None, "reason": "Ctrl-C"})
    engine = FakeEngine({f"hg1-seed-{seed}": [interrupted] for seed in range(4)})
    for run, status in zip(runs, ("running", "queued", "running", "queued"), strict=True):
        run.status, run.handle = status, f"hg1-seed-{run.config.seed}"
    driver._cancel(runs, engine, Notes())
    assert engine.cancelled == ["hg1-seed-1", "hg1-seed-3", "hg1-seed-0", "hg1-seed-2"]
    assert {run.status for run in runs} == {"cancelled"}


# --- the local engine end to end ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_local_sweep_retries_a_killed_worker_and_reports_a_nan_run_failed(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run 1's worker dies after its first epoch (its process exits at once); run 2's loss goes NaN. The sweep runs
    run 2 and resumes run 1 from its checkpoint to a true finished record, and exits non-zero naming run 2."""
    plan = write_plan(tmp_path, "[[run]]\ncase = 'hg1'\nepochs = 2\n\n[[run]]\ncase = 'hg1'\nseed = 1\nlr = 1e12\n")
    monkeypatch.setenv(DIE_ONCE_ENV, str(tmp_path / "died-once"))
    assert cli.main(sweep_argv(tmp_path, synthetic_root, "--plan", str(plan), "--cpus-per-run", "1")) == 1
    out, err = capsys.readouterr()
    assert (tmp_path / "died-once").exists()
    assert "hg1 seed 0: worker died (worker process exited with code 137); retry 1 of 1" in out
    assert "hgbench: sweep of 2 runs: 1 finished, 1 failed" in out
    assert err.strip().endswith("1 of 2 runs failed: hg1 seed 1")
    assert "Traceback" not in out + err
    by_seed = {r["config"]["seed"]: r for r in records(tmp_path)}
    assert len(by_seed) == 2
    resumed = by_seed[0]
    assert resumed["status"] == "finished"
    assert [e["epoch"] for e in resumed["results"]["epochs"]] == [1, 2]
    assert by_seed[1]["status"] == "failed"
    assert "NaN" in by_seed[1]["status_reason"] or "nan" in by_seed[1]["status_reason"].lower()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
def test_a_local_child_is_stopped_when_its_sweep_driver_is_killed(tmp_path: Path) -> None:
    """A `kill -9`'d driver must not leave its run training on: the child gets the SIGTERM the runner turns into an
    "interrupted" record. Here the child only notes the signal, so the test needs no run."""
    import subprocess
    import time

    marker = tmp_path / "child-got-sigterm"
    child_code = (
        "import os, signal, sys, time\n"
        "from hgbench.sweep.engines import end_with_parent\n"
        f"signal.signal(signal.SIGTERM, lambda *_: (open({str(marker)!r}, 'w').close(), sys.exit(0)))\n"
        "end_with_parent(int(sys.argv[1]))\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    driver_code = (
        "import os, subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {child_code!r}, str(os.getpid())], stdout=sys.stdout)\n"
        "time.sleep(60)\n"
    )
    driver_process = subprocess.Popen([sys.executable, "-c", driver_code], stdout=subprocess.PIPE, text=True)
    assert driver_process.stdout.readline().strip().isdigit()  # the child has armed the signal by now
    driver_process.kill()
    driver_process.wait()
    deadline = time.monotonic() + 120  # liveness only: a loaded machine may take a while to run the child's handler
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the child outlived its killed parent without a SIGTERM"


# --- the identity a driver plans for workers elsewhere -----------------------------------------------------------


@pytest.fixture
def probe_calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """The --fast CPU probe turned on (fresh cache), its measurements counted instead of timed."""
    from hgbench.train import mode_probe

    calls: list[str] = []

    def measure_step(spec: Any, *, batch: int, input_res: int) -> Any:
        def measure(settings: Any) -> float:
            calls.append(settings.label())
            return 1.0

        return measure

    monkeypatch.setenv(mode_probe.PROBE_ENV, "1")
    monkeypatch.setenv("HGBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(mode_probe, "measure_step", measure_step)
    return calls


def _fast_auto(tmp_path: Path, data_dir: Path) -> RunConfig:
    from conftest import tiny_config

    return tiny_config(tmp_path, data_dir, device="auto", fast=True)


def test_a_driver_plans_gpu_workers_identity_without_probing_its_own_cpu(
    tmp_path: Path, synthetic_root: Path, probe_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A login node without a GPU: `--device auto --fast` must be planned as the GPU worker will resolve it."""
    import torch

    from hgbench.run.plan import planned_identity

    cfg = _fast_auto(tmp_path, synthetic_root)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (run,) = driver.plan_runs([(cfg, True)], machine_id=None, workers=driver.Workers("cuda"))
    assert probe_calls == []
    # The worker: a GPU with native bf16, planning its own run (hgbench.sweep.worker.run_one does this).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    # ... where torch.compile works (its tiny compile, `hgbench.train.compile_probe`, needs a real GPU to run).
    monkeypatch.setattr(compile_probe, "probe_compile", lambda device: compile_probe.CompileProbe(True, 0.1))
    assert run.identity == planned_identity(cfg)
    assert probe_calls == []


def test_a_fast_run_on_workers_of_unknown_device_is_left_to_the_worker(
    tmp_path: Path, synthetic_root: Path, probe_calls: list[str]
) -> None:
    cfg = _fast_auto(tmp_path, synthetic_root)
    for workers in (driver.Workers(None), driver.Workers("cpu")):  # a Ray cluster's; CPU workers elsewhere
        (run,) = driver.plan_runs([(cfg, True)], machine_id=None, workers=workers)
        assert run.identity is None
    assert probe_calls == []


@pytest.mark.parametrize(
    ("flags", "device", "here"),
    [
        ({"engine": "local"}, None, True),
        ({"engine": "slurm"}, "cuda", False),
        ({"engine": "slurm", "device": "cpu"}, "cpu", False),
        ({"engine": "slurm", "slurm_gpus_per_run": 0}, "cpu", False),
        ({"engine": "slurm", "slurm_local": True}, None, True),
        ({"engine": "ray", "address": "auto"}, None, False),
        ({"engine": "ray", "address": "auto", "gpus_per_run": 0.5}, "cuda", False),
        ({"engine": "ray", "gpus_per_run": 0.0}, "cpu", True),
    ],
)
def test_the_sweep_knows_its_workers_device_from_the_gpus_each_run_asks_for(
    flags: dict[str, Any], device: str | None, here: bool
) -> None:
    import argparse

    from hgbench.commands.sweep import workers_of

    defaults = {"device": "auto", "address": None, "gpus_per_run": None, "slurm_gpus_per_run": None}
    args = argparse.Namespace(**{**defaults, "slurm_local": False, **flags})
    assert workers_of(args) == driver.Workers(device, here=here)


# --- --force: measure finished runs again ---------------------------------------------------------------------------


def test_force_plans_the_finished_runs_again_and_the_skip_says_how(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("hgbench.run.results.find_finished", lambda *a, **k: tmp_path / "old.json")
    argv = sweep_argv(tmp_path, synthetic_root, "--cases", "hg1", "--seeds", "0,1", "--dry-run")
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "sweep of 2 runs, 0 to run" in out
    assert "skip: already finished" in out
    assert "--force measures it again" in out
    assert cli.main([*argv, "--force"]) == 0
    out = capsys.readouterr().out
    assert "sweep of 2 runs, 2 to run" in out
    assert "skip" not in out


def test_a_forced_worker_starts_a_new_run_instead_of_skipping_or_resuming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hgbench.run.runner import RunOutcome
    from hgbench.sweep.worker import run_one

    calls: list[dict] = []

    def fake_run(cfg: RunConfig, **kwargs: Any) -> RunOutcome:
        calls.append(kwargs)
        return RunOutcome("finished", tmp_path / "new.json", None, None)

    monkeypatch.setattr("hgbench.run.results.find_finished", lambda *a, **k: tmp_path / "old.json")
    monkeypatch.setattr("hgbench.run.runner.run", fake_run)
    config = RunConfig(device="cpu", out=str(tmp_path / "results")).to_dict()
    assert run_one(config, keep_checkpoint=False)["status"] == "skipped"
    assert calls == []
    result = run_one({**config, "force": True}, keep_checkpoint=False)
    assert result == {"status": "finished", "record": str(tmp_path / "new.json"), "reason": None}
    assert calls[0]["resume"] is False  # resuming would complete the old record instead of keeping it


def test_the_summary_names_each_stopped_runs_record_and_the_next_step() -> None:
    from hgbench.sweep import view

    runs = fake_runs(0, 1, 2)
    runs[0].status, runs[0].record = "finished", "results/m/0001.json"
    runs[1].status, runs[1].reason, runs[1].record = "failed", "loss is NaN at epoch 1", "results/m/0002.json"
    runs[2].status, runs[2].reason = "cancelled", "cancelled by Ctrl-C; the same sweep again resumes it"
    lines = view.summary(runs)
    assert lines[0].startswith("hgbench: hg1 seed 1: failed: loss is NaN at epoch 1; record results/m/0002.json (log ")
    assert lines[1].startswith("hgbench: hg1 seed 2: cancelled: cancelled by Ctrl-C")
    assert lines[2] == "hgbench: sweep of 3 runs: 1 finished, 1 failed, 1 cancelled"
    assert lines[3].startswith("hgbench: next: the same sweep command again resumes the cancelled runs")
    assert "`hgbench table` and `hgbench plot` show the records" in lines[3]


# --- what a sweep says: twins, cost, --quiet ------------------------------------------------------------------------


def test_as_built_both_runs_a_network_the_study_built_as_described_once(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = sweep_argv(tmp_path, synthetic_root, "--cases", "1,3", "--as-built", "both", "--dry-run")
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "sweep of 3 runs, 3 to run" in out  # 1, 3 and 3 as built; 1 as built is case 1's network
    assert "as built, case(s) 1 build the same network as described: each runs once" in out
    assert "case 3 (as built) seed 0" in out
    assert "case 1 (as built)" not in out
    assert "3 epochs in all; no estimate: no earlier record of these settings" in out


def test_the_dry_run_estimate_comes_from_earlier_records_of_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hgbench.run.results import summarize
    from hgbench.sweep import estimate

    record_path = Path(__file__).parent / "data" / "records" / "cpu-pt2.14.1" / "0001_case1_seed0.json"
    earlier = summarize(json.loads(record_path.read_text()), record_path)
    base = RunConfig(case="1", epochs=2, out=str(tmp_path))
    earlier.config, earlier.min_per_epoch, earlier.inference_min = base.to_dict(), 0.5, 0.1
    monkeypatch.setattr(estimate, "load_records", lambda sources: ([earlier], []))
    runs = [
        driver.SweepRun(RunConfig(case="1", epochs=10, seed=1, out=str(tmp_path)), None, True),  # seed: same speed
        driver.SweepRun(RunConfig(case="3", epochs=10, out=str(tmp_path)), None, True),  # no record of case 3
        driver.SweepRun(RunConfig(case="1", epochs=10, input_res=128, out=str(tmp_path)), None, True),  # smaller
    ]
    assert estimate.estimate_minutes(runs) == (pytest.approx(10 * 0.5 + 2 * 0.1), 2)
    assert estimate.cost_line(runs) == (
        "hgbench: 30 epochs in all; about 5 min for 1 run(s) on the machines that measured the earlier records of the "
        "same settings; 2 run(s) have no earlier record, not counted"
    )


def test_quiet_says_only_how_runs_end(capsys: pytest.CaptureFixture[str]) -> None:
    from hgbench.sweep.view import make_view

    runs = fake_runs(0)
    with make_view(runs, quiet=True) as shown:
        runs[0].status, runs[0].epochs_done = "running", 1
        shown.changed(runs[0])
        runs[0].status = "finished"
        shown.changed(runs[0])
    assert capsys.readouterr().out.splitlines() == ["hgbench: [1/1] hg1 seed 0: finished, epoch 1 of 50"]
