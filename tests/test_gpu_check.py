"""`python -m hgbench.gpu_check`: the step runner (budgets, every step run, one report) with fake steps, and the real
checks on a machine without CUDA (each skips, saying so). The GPU measurements themselves run only on a GPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers.cuda_standin import CudaStandin

from hgbench.gpu_check import __main__ as cli
from hgbench.gpu_check import checks
from hgbench.gpu_check.catalogue import STEPS, TOTAL_BUDGET_S, Step
from hgbench.gpu_check.checks import env, runs, speed
from hgbench.gpu_check.protocol import Outcome, StepContext
from hgbench.gpu_check.runner import render_markdown, run_check, run_step
from hgbench.gpu_check.step import run_check_fn

REPO = Path(__file__).resolve().parents[1]
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens without a CUDA device")


def fake(name: str, body: str, *, budget: float = 60, needs_cuda: bool = False, compiles: bool = False) -> Step:
    """A step whose subprocess runs `body` with `ctx` (its StepContext) and `Outcome` at hand."""
    script = textwrap.dedent(
        """
        import os, sys, time
        from pathlib import Path
        from hgbench.gpu_check.protocol import RESULT_ENV, WORK_ENV, Outcome, StepContext
        ctx = StepContext(Path(os.environ[RESULT_ENV]), Path(os.environ[WORK_ENV]))
        """
    ) + textwrap.dedent(body)
    more = {"compiles": True} if compiles else {}
    return Step(
        name, f"the claim of {name}", budget, needs_cuda=needs_cuda, command=(sys.executable, "-c", script), **more
    )


PASSES = fake("passes", "ctx.update(speedup=3.5)\nctx.finish(Outcome('pass', None, '3.5x'))")
FAILS = fake("fails", "print('boom | half-way')\nsys.exit(1)")
SLOW = fake("slow", "ctx.update(eager=92.0)\nprint('compiling', flush=True)\ntime.sleep(60)", budget=1)
SKIPS = fake("skips", "ctx.finish(Outcome('skipped', 'pytest not installed'))")


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's parent here may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# ------------------------------------------------------------------------------------------------------ the runner
def test_every_step_runs_and_one_report_says_what_each_did(tmp_path: Path) -> None:
    lines: list[str] = []
    report, folder = run_check([FAILS, SLOW, PASSES, SKIPS], tmp_path, echo=lines.append)

    assert [s["name"] for s in report["steps"]] == ["fails", "slow", "passes", "skips"]  # a failure stops nothing
    by = {s["name"]: s for s in report["steps"]}
    assert by["fails"]["status"] == "fail"
    assert "exited with code 1 without a result" in by["fails"]["reason"]
    assert "boom | half-way" in by["fails"]["output_tail"]
    assert by["slow"]["status"] == "timeout"
    assert "ran past its 1 s budget" in by["slow"]["reason"]
    assert by["slow"]["figures"] == {"eager": 92.0}  # what it measured before it was stopped
    assert "compiling" in by["slow"]["output_tail"]
    assert by["passes"]["status"] == "pass"
    assert by["passes"]["figures"] == {"speedup": 3.5}
    assert by["passes"]["summary"] == "3.5x"
    assert by["passes"]["output_tail"] is None
    assert (by["skips"]["status"], by["skips"]["reason"]) == ("skipped", "pytest not installed")
    assert report["counts"] == {"pass": 1, "fail": 1, "timeout": 1, "skipped": 1}
    assert report["ok"] is False
    assert by["passes"]["claim"] == "the claim of passes"

    assert folder.parent == tmp_path
    assert json.loads((folder / "report.json").read_text()) == report
    md = (folder / "report.md").read_text()
    assert md == render_markdown(report)
    for name, status in (("fails", "fail"), ("slow", "timeout"), ("passes", "pass"), ("skips", "skipped")):
        assert re.search(rf"^\| {name} \| .* \| \*\*{status}\*\* \|", md, re.MULTILINE), name
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert {len(re.findall(r"(?<!\\)\|", row)) for row in rows} == {6}  # a '|' in output is escaped in a cell
    assert (folder / by["fails"]["log"]).read_text().startswith("boom")
    # Written atomically, staged elsewhere: nothing but the machine's folder is left.
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert sorted(p.name for p in folder.iterdir()) == ["logs", "report.json", "report.md", "work"]
    assert sum("in " in line for line in lines) == 4


def test_a_step_past_its_budget_is_stopped_with_all_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    body = f"""
        import subprocess
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        Path({str(pid_file)!r}).write_text(str(child.pid))
        time.sleep(60)
    """
    result = run_step(fake("spawns", body, budget=1), logs=tmp_path / "logs", work=tmp_path / "work")
    assert result.status == "timeout"
    assert not _alive(int(pid_file.read_text()))


def test_steps_needing_cuda_are_skipped_once_the_environment_finds_none(tmp_path: Path) -> None:
    env = fake("env", "ctx.update(cuda_available=False, machine_id='box-pt2.11.0', cuda_reason='no CUDA device (x)')")
    never = fake("never", "sys.exit(3)", needs_cuda=True)
    report, folder = run_check([env, never], tmp_path, echo=lambda _: None)
    assert folder == tmp_path / "box-pt2.11.0"  # named by the environment step
    step = report["steps"][1]
    assert (step["status"], step["reason"], step["seconds"]) == ("skipped", "no CUDA device (x)", 0.0)
    # The environment step wrote figures but no verdict: a step without a verdict failed.
    assert report["steps"][0]["status"] == "fail"


def test_the_whole_check_is_held_to_its_total_budget(tmp_path: Path) -> None:
    late = fake("late", "ctx.finish(Outcome('pass'))")
    report, _ = run_check([SLOW, late], tmp_path, total_budget_s=3.2, budgets={"slow": 60}, echo=lambda _: None)
    first, second = report["steps"]
    assert first["status"] == "timeout"
    assert first["budget_s"] < 2  # what was left of the total, not its own 60 s
    assert second["status"] == "timeout"
    assert second["reason"] == "not started: the check's 3.2 s were spent"


def test_every_step_compiles_into_one_cache_of_the_checks_own_that_no_report_keeps(tmp_path: Path) -> None:
    """inductor's and Triton's caches point at one folder of this check for every step (what `fast_vs_eager`
    compiles, `data_wait` finds), never at a user's warm cache (compile seconds start cold), and leave with it."""
    body = """
        ctx.update(inductor=os.environ.get("TORCHINDUCTOR_CACHE_DIR"), triton=os.environ.get("TRITON_CACHE_DIR"))
        ctx.finish(Outcome("pass"))
    """
    steps = [fake("compiles", body), fake("later", body)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "users-own"))
        report, folder = run_check(steps, tmp_path / "out", echo=lambda _: None)
    first, second = (s["figures"] for s in report["steps"])
    assert first == second
    inductor, triton = Path(first["inductor"]), Path(first["triton"])
    assert inductor.parent == triton.parent
    assert inductor.parent.parent.parent == tmp_path / "out"  # the check's staging folder under --out
    assert not inductor.parent.exists()  # gone with it
    assert sorted(p.name for p in folder.iterdir()) == ["logs", "report.json", "report.md", "work"]


def test_compile_heavy_steps_share_what_earlier_steps_left_of_their_budgets(tmp_path: Path) -> None:
    done = "ctx.finish(Outcome('pass'))"
    steps = [
        fake("quick", done, budget=40),
        fake("compiles_a", done, budget=10, compiles=True),
        fake("plain", done, budget=7),
        fake("compiles_b", done, budget=30, compiles=True),
    ]
    report, _ = run_check(steps, tmp_path, echo=lambda _: None)
    quick, a, plain, b = report["steps"]
    spare = 40 - quick["seconds"]
    assert a["budget_s"] == pytest.approx(10 + spare * 10 / 40, abs=0.05)  # its share: 10 of the 40 s still to run
    assert plain["budget_s"] == 7  # its own only
    spare += (10 - a["seconds"]) + (7 - plain["seconds"])
    assert b["budget_s"] == pytest.approx(30 + spare, abs=0.05)  # the last compile-heavy step: all that is left
    # Nothing is borrowed from steps still to run: every step's budget ends by the time the steps up to it would have
    # ended on their own budgets, so the check ends within the sum of the catalogue's.
    own = [40, 10, 7, 30]
    for k, step in enumerate(report["steps"]):
        elapsed = sum(s["seconds"] for s in report["steps"][:k])
        assert elapsed + step["budget_s"] <= sum(own[: k + 1]) + 0.05, step["name"]


def test_a_relative_report_folder_is_the_callers_not_the_checkouts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the steps themselves run in the checkout
    report, folder = run_check([PASSES], "reports", echo=lambda _: None)
    assert report["steps"][0]["status"] == "pass"
    assert folder.parent == tmp_path / "reports"


def test_a_step_that_cannot_start_is_a_failed_step(tmp_path: Path) -> None:
    step = Step("missing", "claim", 5, needs_cuda=False, command=(str(tmp_path / "no-such-python"),))
    report, _ = run_check([step], tmp_path, echo=lambda _: None)
    assert report["steps"][0]["status"] == "fail"
    assert report["steps"][0]["reason"].startswith("could not start")


# ------------------------------------------------------------------------------------------------------ a step
def _ctx(tmp_path: Path) -> StepContext:
    return StepContext(tmp_path / "result.json", tmp_path)


def test_a_missing_package_is_a_failed_step_naming_it(tmp_path: Path) -> None:
    def needs_cv2(ctx: StepContext) -> Outcome:
        ctx.update(before=1)
        raise ModuleNotFoundError("No module named 'cv2'", name="cv2")

    outcome = run_check_fn(needs_cv2, _ctx(tmp_path))
    assert outcome == Outcome("fail", "missing package: cv2 (pip install opencv-python-headless)")
    written = json.loads((tmp_path / "result.json").read_text())
    assert written["status"] == "fail"
    assert written["figures"] == {"before": 1}


def test_a_crashing_check_is_a_failed_step_with_its_first_line(tmp_path: Path) -> None:
    def crashes(ctx: StepContext) -> Outcome:
        raise RuntimeError("CUDA error: out of memory\nmore detail")

    assert run_check_fn(crashes, _ctx(tmp_path)).reason == "RuntimeError: CUDA error: out of memory"


def test_an_unknown_step_name_is_a_failed_step(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hgbench.gpu_check.step", "nope"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HGBENCH_GPU_CHECK_RESULT": str(tmp_path / "r.json")},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no GPU check named 'nope'" in json.loads((tmp_path / "r.json").read_text())["reason"]


# ------------------------------------------------------------------------------------------------------ the checks
def test_the_catalogue_fits_eight_minutes_and_names_every_check() -> None:
    assert TOTAL_BUDGET_S <= 8 * 60
    assert sum(s.budget_s for s in STEPS) <= TOTAL_BUDGET_S  # with what compile-heavy steps borrow: never more
    # In this order: data_wait finds fast_vs_eager's batch-6 graphs in the shared cache; conv_peak, which compiles
    # batch 32 afresh, comes last of them and so gets all that earlier steps left unspent.
    assert [s.name for s in STEPS if s.compiles] == ["fast_vs_eager", "data_wait", "conv_peak"]
    assert [s.name for s in STEPS] == list(checks.CHECKS)
    assert STEPS[0].name == "environment"
    assert not STEPS[0].needs_cuda


def test_every_claim_is_quoted_from_the_readme_or_the_manual() -> None:
    """Each step's claim is README's or a page of the manual's (docs/*.md) own words."""
    documents = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    texts = [" ".join(doc.read_text().replace("**", "").split()) for doc in documents]
    for step in STEPS:
        assert any(" ".join(step.claim.split()) in text for text in texts), step.name


@needs_no_cuda
@pytest.mark.parametrize("name", [s.name for s in STEPS if s.needs_cuda])
def test_each_gpu_check_skips_without_cuda(name: str, tmp_path: Path) -> None:
    outcome = checks.CHECKS[name](_ctx(tmp_path))
    assert outcome == Outcome("skipped", "no CUDA device (torch.cuda.is_available() is False)")


@pytest.mark.parametrize(("pct", "status"), [(45.0, "pass"), (30.0, "fail")])
def test_conv_peak_runs_on_a_cuda_device(
    pct: float, status: str, cuda_standin: CudaStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past its skip, on a (stand-in) GPU: the measurements themselves are stubbed (the stand-in's figures mean
    # nothing, and a batch-32 bench is minutes on a CPU); the check's own code runs, up to its verdict.
    import hgbench.models
    import hgbench.run.bench

    benched: dict[str, object] = {}

    def bench_mode(spec: object, settings: object, **kwargs: object) -> dict[str, dict[str, float]]:
        benched.update(kwargs)
        phase = {"images_per_s": 100.0, "ms_per_step_median": 320.0, "tflops": pct, "pct_conv_peak": pct}
        phase["warmup_s"] = 75.0 + kwargs["warmup"] * 0.32  # the first compile, then as many steady steps
        return {"train": phase} if kwargs.get("infer") is False else {"train": phase, "infer": dict(phase)}

    monkeypatch.setattr(hgbench.run.bench, "measure_peak_conv_tflops", lambda dev: 100.0)
    monkeypatch.setattr(hgbench.run.bench, "bench_mode", bench_mode)
    monkeypatch.setattr(hgbench.models, "measure_cost", lambda spec, input_res: SimpleNamespace(gflops=11.61))
    ctx = _ctx(tmp_path)
    outcome = speed.conv_peak(ctx)
    assert outcome.status == status, outcome
    assert outcome.summary.startswith(f"{pct:.1f} of 100.0 TFLOP/s = {pct:.1f}%")
    assert benched["device"] == torch.device("cuda", 0)
    assert benched["peak_conv"] == 100.0
    assert benched["batch"] == 32
    assert benched["infer"] is False  # the claim is training's: no inference graph compiled at batch 32
    assert ctx.figures["peak_conv_tflops"] == 100.0
    assert ctx.figures["pct"] == pct
    # The compile's seconds are reported beside the figure, never in it.
    assert ctx.figures["compile_s"] == pytest.approx(75.0)
    assert outcome.summary.endswith("; compile 75 s apart")


def test_fast_vs_eager_reports_its_compile_seconds_apart(
    cuda_standin: CudaStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hgbench.models
    import hgbench.run.bench

    def bench_mode(spec: object, settings: object, **kwargs: object) -> dict[str, dict[str, float]]:
        speed = 3.5 if settings.compile else 1.0
        phase = {"images_per_s": 30.0 * speed, "ms_per_step_median": 200.0 / speed, "tflops": 1.0}
        phase["warmup_s"] = (40.0 if settings.compile else 1.0) + kwargs["warmup"] * phase["ms_per_step_median"] / 1e3
        return {"train": phase, "infer": dict(phase)}

    monkeypatch.setattr(hgbench.run.bench, "bench_mode", bench_mode)
    monkeypatch.setattr(hgbench.models, "measure_cost", lambda spec, input_res: SimpleNamespace(gflops=11.61))
    ctx = _ctx(tmp_path)
    outcome = speed.fast_vs_eager(ctx)
    assert outcome.status == "pass", outcome
    assert ctx.figures["speedup"] == pytest.approx(3.5)  # steady steps only
    assert ctx.figures["compile_s"] == pytest.approx(80.0)  # training's and inference's first compiles
    assert outcome.summary.endswith("; compile 80 s apart")


def test_data_wait_reports_the_first_epochs_compile_and_the_decodes_host_time_apart(
    cuda_standin: CudaStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hgbench.gpu_check.checks import data

    ran: list[list[str]] = []

    def epoch(wall: float, val: float, wait: float, decode: float, warmup: bool) -> dict[str, object]:
        return {"wall_s": wall, "val_wall_s": val, "data_wait_s": wait, "decode_host_s": decode, "warmup": warmup}

    def hgbench_run(ctx: StepContext, name: str, args: list[str]) -> tuple[int, dict[str, object]]:
        ran.append(args)
        epochs = [
            epoch(90.0, 20.0, 1.0, 0.5, True),
            epoch(10.0, 1.0, 0.2, 0.3, False),
            epoch(10.0, 1.0, 0.2, 0.3, False),
        ]
        results = {"epochs": epochs, "train": {"data_wait_fraction": 0.02}}
        config = {"decode": "device", "amp": True, "channels_last": True, "compile": True}
        return 0, {"status": "finished", "results": results, "config": config}

    monkeypatch.setattr(data, "hgbench_run", hgbench_run)
    import hgbench.data.synthetic

    asked: dict[str, object] = {}
    monkeypatch.setattr(hgbench.data.synthetic, "default_dataset", lambda **kw: asked.update(kw) or tmp_path / "hd")
    ctx = _ctx(tmp_path)
    outcome = data.data_wait(ctx)
    assert outcome.status == "pass", outcome
    assert asked["image_size"] == (1280, 720)  # MPII-sized frames
    assert ran[0][ran[0].index("--data-dir") + 1] == str(tmp_path / "hd")
    assert ctx.figures["compile_s"] == pytest.approx(99.0)  # the first epoch beyond a later one, training and val
    assert ctx.figures["decode_host_pct"] == pytest.approx(3.0)
    assert outcome.summary == (
        "data wait 2.0% of the epochs after warm-up (3 epochs, 1280x720 frames; the decode held the host 3.0%); "
        "first epoch's compile and warm-up 99 s apart"
    )


@pytest.mark.slow
def test_the_nccl_step_passes_once_its_one_process_job_starts_nccl(
    cuda_standin: CudaStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step's own `torchrun --nproc_per_node 1`, its process on a stand-in GPU whose NCCL (gloo underneath)
    prints its version only when a collective starts it, as NCCL does: the step passes only if the one-process
    run created its process group and used it."""
    from helpers.standin_torchrun import NCCL_STANDIN_VERSION

    monkeypatch.setattr(runs, "RUN_MODULE", "helpers.standin_torchrun")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")])))
    ctx = _ctx(tmp_path)
    outcome = runs.torchrun_nccl(ctx)
    assert outcome.status == "pass", outcome
    assert ctx.figures["nccl_version"] == NCCL_STANDIN_VERSION
    assert (ctx.figures["status"], ctx.figures["world_size"]) == ("finished", 1)


def test_the_cuda_tests_say_when_pytest_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = runs.importlib.util.find_spec
    monkeypatch.setattr(runs.importlib.util, "find_spec", lambda n, *a: None if n == "pytest" else real(n, *a))
    assert runs.cuda_tests(_ctx(tmp_path)) == Outcome("skipped", "pytest not installed")


def test_the_environment_names_a_missing_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = env._import_problem
    monkeypatch.setattr(env, "_import_problem", lambda m: "not installed" if m == "cv2" else real(m))
    ctx = _ctx(tmp_path)
    outcome = env.environment(ctx)
    assert outcome.status == "fail"
    assert "cv2 (pip install opencv-python-headless)" in outcome.reason
    assert ctx.figures["packages"]["opencv-python-headless"] is None
    assert ctx.figures["machine_id"]
    assert ctx.figures["cuda_available"] is torch.cuda.is_available()


def test_without_torch_the_environment_says_so_and_the_gpu_steps_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = env._import_problem
    monkeypatch.setattr(env, "_import_problem", lambda m: "not installed" if m == "torch" else real(m))
    ctx = _ctx(tmp_path)
    outcome = env.environment(ctx)
    assert outcome.status == "fail"
    assert outcome.reason == "missing torch (pip install torch)"
    assert ctx.figures["cuda_available"] is False  # so the runner skips every GPU step, saying why
    assert ctx.figures["cuda_reason"] == "torch does not import (pip install torch)"


def test_an_installed_package_that_does_not_import_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As cv2 does where libGL is missing: installed, and its import raises.
    (tmp_path / "hgbench_broken_pkg.py").write_text("raise ImportError('libGL.so.1: cannot open shared object file')")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert env._import_problem("hgbench_broken_pkg") == (
        "does not import: ImportError: libGL.so.1: cannot open shared object file"
    )
    assert env._import_problem("hgbench_no_such_package") == "not installed"
    assert env._import_problem("json") is None


def test_the_environment_checks_torch_against_the_declared_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert env._torch_range() == ((2, 11), (2, 15))
    assert env.environment(_ctx(tmp_path)).status == "pass"  # this venv's torch is in the range
    monkeypatch.setattr(torch, "__version__", "2.10.0+cu128")
    outcome = env.environment(_ctx(tmp_path))
    assert outcome.reason == "torch 2.10.0+cu128 is outside the supported range >=2.11,<2.15"


@needs_no_cuda
@pytest.mark.slow
def test_the_whole_check_without_cuda_reports_every_step(tmp_path: Path) -> None:
    """What `make gpu-check` does on this machine: the environment step, then every GPU step skipped."""
    proc = subprocess.run(
        [sys.executable, "-m", "hgbench.gpu_check", "--out", str(tmp_path), "--budget", "environment=300"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (folder,) = tmp_path.iterdir()
    report = json.loads((folder / "report.json").read_text())
    assert folder.name == report["steps"][0]["figures"]["machine_id"]
    assert [s["name"] for s in report["steps"]] == [s.name for s in STEPS]
    assert report["steps"][0]["status"] == "pass"
    assert {s["status"] for s in report["steps"][1:]} == {"skipped"}
    assert {s["reason"] for s in report["steps"][1:]} == {"no CUDA device (torch.cuda.is_available() is False)"}
    assert f"report: {folder / 'report.md'}" in proc.stdout


@pytest.mark.parametrize("argv", [["--budget", "tiny_run"], ["--budget", "nope=5"], ["--budget", "tiny_run=-1"]])
def test_a_bad_budget_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "want STEP=SECONDS" in capsys.readouterr().err


def test_an_unknown_only_step_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--only", "tiny_run,warp_drive"]) == 2
    assert "unknown step 'warp_drive'" in capsys.readouterr().err
