"""Tests for `hgbench bench`, hgbench.run.bench and hgbench.train.speed_modes: mode planning, the fast-path choice, the
record, and CLI errors.

Only eager and channels_last run here (hg1 at 64x64, batch 2): torch.compile of even hg1 takes minutes on this CPU
when its cache is cold, so compile is checked to be planned and listed, not timed.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from hgbench.cli import main
from hgbench.errors import HGBenchError
from hgbench.measure.timing import time_fn
from hgbench.run import bench, progress
from hgbench.run.bench import BenchConfig, run_bench
from hgbench.spec.cases import get_spec
from hgbench.train import speed_modes
from hgbench.train.speed_modes import MODES, ModeSettings, best_mode, parse_modes, plan_modes

STAT_KEYS = {"min", "max", "mean", "stddev", "median", "iqr", "rounds", "data"}
TINY = ["--case", "hg1", "--input-res", "64", "--batch", "2", "--steps", "2", "--warmup", "1", "--device", "cpu"]


# ------------------------------------------------------------------------------------------------------ planning
def test_parse_modes() -> None:
    assert parse_modes("eager, channels-last") == ["eager", "channels_last"]
    assert parse_modes("all") == list(MODES)
    assert parse_modes("eager,eager") == ["eager"]
    with pytest.raises(HGBenchError, match="unknown mode 'turbo'.*valid modes: eager"):
        parse_modes("eager,turbo")
    with pytest.raises(HGBenchError, match="no mode"):
        parse_modes(" , ")


@pytest.mark.parametrize("native_bf16", [False, True])
def test_plan_modes_on_cpu_is_a_ladder_with_reasons(monkeypatch: pytest.MonkeyPatch, native_bf16: bool) -> None:
    monkeypatch.setattr(speed_modes, "cpu_has_native_bf16", lambda: native_bf16)
    plans = {p.mode: p for p in plan_modes(MODES, "cpu")}
    assert list(plans) == list(MODES)  # nothing silently dropped
    assert plans["eager"].settings == ModeSettings()
    assert plans["channels_last"].settings == ModeSettings(channels_last=True)
    assert plans["cudagraphs"].settings is None
    assert "CUDA" in plans["cudagraphs"].skip_reason
    if native_bf16:
        assert plans["bf16"].settings == ModeSettings(channels_last=True, amp=True)
    else:
        assert plans["bf16"].settings is None
        assert "bf16" in plans["bf16"].skip_reason
    compiled = plans["compile"].settings
    assert compiled is not None
    assert compiled.compile
    assert compiled.channels_last
    assert compiled.amp == native_bf16
    for p in plans.values():
        assert (p.settings is None) == (p.skip_reason is not None)


def test_compile_skipped_without_a_cpu_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed_modes.shutil, "which", lambda name: None)
    (plan,) = plan_modes(["compile"], "cpu")
    assert plan.settings is None
    assert "C++ compiler" in plan.skip_reason


def test_mode_labels() -> None:
    assert ModeSettings().label() == "fp32"
    assert ModeSettings(channels_last=True, amp=True, compile=True).label() == "channels_last+bf16+compile"
    assert ModeSettings(True, True, True, True).label() == "channels_last+bf16+cudagraphs"


@pytest.mark.parametrize("native_bf16", [False, True])
def test_best_mode_rule_on_cpu_adds_bf16_only_where_native(monkeypatch: pytest.MonkeyPatch, native_bf16: bool) -> None:
    # The rule --fast falls back on where it does not measure (hgbench.train.mode_probe measures on the CPU).
    monkeypatch.setattr(speed_modes, "cpu_has_native_bf16", lambda: native_bf16)
    assert best_mode("cpu") == {"channels_last": True, "amp": native_bf16, "compile": False, "decode": "workers"}


def test_best_mode_cuda(cuda_device: torch.device) -> None:
    mode = best_mode(cuda_device)
    assert mode["channels_last"]
    assert mode["compile"]
    assert mode["decode"] == "device"


def test_peak_conv_is_none_on_cpu() -> None:
    assert bench.measure_peak_conv_tflops("cpu") is None


def test_peak_conv_cuda(cuda_device: torch.device) -> None:
    tflops = bench.measure_peak_conv_tflops(cuda_device, batch=4, iters=3)
    assert tflops is not None
    assert tflops > 0


# ------------------------------------------------------------------------------------------------------ run_bench
@pytest.fixture
def instant_modes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Replace the timed work with a no-op (the real thing runs in the CLI test); records (label, warmup) calls."""
    calls = []

    def fake(spec, settings, *, batch, steps, warmup, gflops_per_image, peak_conv, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append((settings.label(), warmup))
        if settings.channels_last:
            raise RuntimeError("compiler exploded\nsecond line")
        stats = time_fn(lambda: None, warmup=warmup, iters=steps, device="cpu")
        common = {"batch": batch, "gflops_per_image": gflops_per_image, "peak_conv": peak_conv, "peak_mem": None}
        return {
            "train": bench._phase_result(stats, factor=3, **common),
            "infer": bench._phase_result(stats, factor=1, **common),
        }

    monkeypatch.setattr(bench, "bench_mode", fake)
    return calls


def test_failed_mode_is_recorded_and_others_still_run(instant_modes: list[tuple[str, int]]) -> None:
    config = BenchConfig(
        case="hg1",
        as_built=False,
        batch_size=2,
        steps=1,
        warmup=0,
        input_res=64,
        device="cpu",
        modes=("eager", "channels_last", "cudagraphs"),
    )
    record = run_bench(get_spec("hg1"), config)
    res = record["results"]
    assert res["eager"]["status"] == "ok"
    assert res["eager"]["warmup"] == 1  # raised to the mode's minimum
    assert res["channels_last"]["status"] == "failed"
    assert res["channels_last"]["reason"] == "RuntimeError: compiler exploded"
    assert res["cudagraphs"]["status"] == "skipped"
    assert instant_modes == [("fp32", 1), ("channels_last", 1)]  # the skipped mode never ran


# ------------------------------------------------------------------------------------------------------ CLI
def test_bench_cli_writes_a_record_and_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench"
    assert main(["bench", *TINY, "--modes", "eager,channels_last", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "hgbench bench: hg1" in text
    assert "channels_last" in text
    assert "images/s" in text
    files = sorted(out.glob("*/*.json"))
    assert [f.name for f in files] == ["0001_bench_hg1.json"]
    record = json.loads(files[0].read_text())
    assert files[0].parent.name == record["machine_info"]["machine_id"]
    assert files[0].parent.name.startswith("cpu-")
    assert record["schema"] == "hgbench.bench/1"
    for key in ("hgbench_version", "datetime", "machine_info", "commit_info", "spec", "config", "model", "results"):
        assert key in record, key
    assert record["datetime"].endswith("+00:00")
    assert record["spec"]["name"] == "hg1"
    assert record["config"]["batch_size"] == 2
    assert list(record["results"]) == ["eager", "channels_last"]
    for mode in ("eager", "channels_last"):
        r = record["results"][mode]
        assert r["status"] == "ok"
        for phase in ("train", "infer"):
            s = r[phase]
            assert STAT_KEYS <= s.keys()
            assert s["rounds"] == 2
            assert len(s["data"]) == 2
            assert s["images_per_s"] == pytest.approx(2 / s["median"])
            assert s["tflops"] > 0
            assert s["peak_memory_mib"] is None
            assert s["pct_conv_peak"] is None
    gflops = record["model"]["gflops"]
    train = record["results"]["eager"]["train"]
    assert train["tflops"] == pytest.approx(3 * gflops * 2 / train["median"] / 1e3)
    assert record["device_peak"]["conv_tflops"] is None

    # Numbered, never overwritten.
    assert main(["bench", *TINY, "--modes", "eager", "--out", str(out)]) == 0
    assert sorted(f.name for f in out.glob("*/*.json")) == ["0001_bench_hg1.json", "0002_bench_hg1.json"]


def test_bench_cli_json_without_saving(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, instant_modes: list
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["bench", *TINY, "--steps", "1", "--modes", "eager,cudagraphs", "--format", "json", "--no-save"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["results"]["eager"]["status"] == "ok"
    assert record["results"]["cudagraphs"] == {
        "status": "skipped",
        "reason": "CUDA graphs need a CUDA device",
        "settings": None,
        "label": None,
        "warmup": None,
        "train": None,
        "infer": None,
    }
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--modes", "eager,warp"], "unknown mode 'warp'"),
        (["--case", "9"], "unknown case '9'"),
        (["--case", "5", "--modes", "eager"], "too small for instance norm"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--device", "tpu"], "device"),
    ],
)
def test_bench_cli_errors_are_one_line(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rc = main(["bench", *TINY, *extra, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc != 0
    assert message in err
    assert err.count("\n") == 1
    assert err.startswith("hgbench: error: ")
    assert not list(tmp_path.iterdir())


def test_bench_cli_cuda_requested_without_cuda(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["bench", *TINY[:-2], "--device", "cuda", "--out", str(tmp_path)]) != 0
    assert "no CUDA device" in capsys.readouterr().err


def test_bench_cli_cuda(cuda_device: torch.device, tmp_path: Path) -> None:
    options = "--case hg1 --input-res 64 --batch 2 --steps 2 --warmup 1 --device cuda --modes eager,channels_last,bf16"
    args = ["bench", *options.split(), "--out", str(tmp_path)]
    assert main(args) == 0
    (path,) = tmp_path.glob("*/*.json")
    record = json.loads(path.read_text())
    eager = record["results"]["eager"]
    assert eager["train"]["clock"] == "cuda_event"
    assert eager["train"]["peak_memory_mib"] > 0
    assert record["device_peak"]["conv_tflops"] > 0


def test_bench_records_render_through_the_reporter(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench"
    assert main(["bench", *TINY, "--modes", "eager,channels_last", "--out", str(out)]) == 0
    capsys.readouterr()
    (out / "foreign.json").write_text('{"schema": "something/else"}')  # other JSON beside them is left out
    assert main(["table", "--bench", "--results", str(out)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| hg1 ")]
    assert len(rows) == 4  # 2 modes x (train, infer)
    assert all("| 1.00 |" in r for r in rows if "| eager |" in r)  # speed-up over eager of eager itself
    assert all(re.search(r"\| \d+\.\d \| ok \|$", r) for r in rows)  # the warm-up seconds, before the status
    assert main(["table", "--bench", "--results", str(out), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("case,as_built,device,batch,input_res,mode,settings,phase,status,ms_per_step")
    assert len(lines) == 5


def test_bench_table_without_records_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["table", "--bench", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().startswith("hgbench: error: no hgbench bench records")


def _widest_record() -> dict:
    """A bench record with the widest figures and labels a real run prints (every mode on a GPU, one failed)."""
    phase = {
        "ms_per_step_median": 1234.5,
        "iqr": 0.1234,
        "images_per_s": 12345.6,
        "tflops": 1234.567,
        "pct_conv_peak": 100.0,
        "peak_memory_mib": 123456.0,
        "warmup_s": 1234.5,
    }
    labels = {
        "eager": "fp32",
        "channels_last": "channels_last",
        "bf16": "channels_last+bf16",
        "compile": "channels_last+bf16+compile",
        "cudagraphs": "channels_last+bf16+cudagraphs",
    }
    results = {
        mode: {"status": "ok", "label": label, "reason": None, "train": phase, "infer": phase}
        for mode, label in labels.items()
    }
    results["compile"] = {**results["compile"], "status": "failed", "reason": "RuntimeError: " + "x" * 200}
    return {
        "config": {"batch_size": 32, "input_res": 256, "steps": 10},
        "machine_info": {"gpu_name": "NVIDIA H100 80GB HBM3", "cpu": "AMD EPYC 7B13", "torch_threads": 2},
        "device_peak": {"conv_tflops": 989.4},
        "spec": {"name": "8", "as_built": True},
        "model": {"gflops": 88.77},
        "results": results,
    }


def test_bench_table_reads_in_full_at_120_columns() -> None:
    from rich.console import Console

    from hgbench.commands.bench import TABLE_WIDTH, bench_rich_table

    table, notes = bench_rich_table(_widest_record())
    console = Console(width=TABLE_WIDTH, record=True)
    console.print(table)
    text = console.export_text()
    assert "…" not in text
    for header in ("ms/step", "IQR ms", "images/s", "x eager", "TFLOP/s", "% peak", "peak MiB", "warm-up s"):
        assert header in text
    assert "1234.567" in text
    assert "channels_last" in text
    assert any("x" * 200 in n for n in notes)  # a failure's reason goes below the table, whole


def test_bench_table_prints_in_full_on_a_120_column_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hgbench.commands.bench import print_table

    monkeypatch.setenv("COLUMNS", "120")
    print_table(_widest_record())
    out = capsys.readouterr().out
    assert "…" not in out
    header = next(line for line in out.splitlines() if "ms/step" in line)
    assert len(header.rstrip()) <= 120
    for name in ("mode", "settings", "phase", "IQR ms", "images/s", "x eager", "TFLOP/s", "% peak", "peak MiB"):
        assert name in header


def test_bench_inference_memory_holds_no_optimizer_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adam's moments (twice the weights) are training's: the inference phase's peak memory must not count them."""
    works: list = []
    make = bench.make_workload
    monkeypatch.setattr(bench, "make_workload", lambda *a, **kw: works.append(make(*a, **kw)) or works[-1])
    held: list[int] = []
    monkeypatch.setattr(bench, "reset_peak_memory", lambda device: held.append(len(works[0].optimizer.state)))
    spec = get_spec("hg1")
    bench.bench_mode(spec, ModeSettings(), batch=2, steps=1, warmup=1, input_res=64, device="cpu", gflops_per_image=1.0)
    assert held == [0, 0]  # before training, and before inference (after training filled it)


def test_a_mode_without_bf16_on_a_tf32_gpu_is_labelled_tf32(
    instant_modes: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """cuDNN runs "fp32" convolutions as TF32 on an Ampere-or-newer GPU by default: the record must not say fp32."""
    real = bench.collect_environment

    def on_an_ampere(device: object) -> dict:
        info = real("cpu")
        info["float32_math"] = {**info["float32_math"], "cudnn_allow_tf32": True, "tf32_capable": True, "conv": "tf32"}
        return info

    monkeypatch.setattr(bench, "collect_environment", on_an_ampere)
    config = BenchConfig("hg1", False, 2, 1, 0, 64, "cpu", ("eager", "bf16"))
    res = run_bench(get_spec("hg1"), config)["results"]
    assert res["eager"]["label"] == "tf32"
    assert res["bf16"]["status"] == "skipped" or "tf32" not in res["bf16"]["label"]  # autocast: bf16, not TF32


def test_mode_labels_name_tf32() -> None:
    assert ModeSettings().label("tf32") == "tf32"
    assert ModeSettings(channels_last=True).label("tf32") == "channels_last+tf32"
    assert ModeSettings(channels_last=True, amp=True).label("tf32") == "channels_last+bf16"
    assert ModeSettings(channels_last=True).label() == "channels_last"


# ------------------------------------------------------------------------------------------------ slow warm-ups
def test_a_compiled_mode_says_its_warm_up_is_slow_and_keeps_a_heartbeat(
    instant_modes: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(speed_modes.shutil, "which", lambda name: "/usr/bin/c++")  # compile planned on this CPU
    said: list[str] = []
    watched: list[str] = []

    @contextlib.contextmanager
    def heartbeat(what: str) -> Iterator[None]:
        watched.append(what)
        said.append("<heartbeat starts>")
        try:
            yield
        finally:
            said.append("<heartbeat ends>")  # also when the mode fails (instant_modes fails every channels_last one)

    config = BenchConfig("hg1", False, 2, 1, 0, 64, "cpu", ("eager", "compile"))
    record = run_bench(get_spec("hg1"), config, progress=said.append, heartbeat=heartbeat)
    label = record["results"]["compile"]["label"]
    assert record["results"]["compile"]["status"] == "failed"
    assert watched == [f"compile ({label})"]  # eager needs none
    assert said[1:] == [
        f"compile ({label}): 2 warm-up + 1 timed steps",
        "compile: torch.compile compiles the model in its first warm-up steps, for training and again for inference; "
        "this can take minutes",
        "<heartbeat starts>",
        "<heartbeat ends>",
    ]


def test_the_cli_prints_a_heartbeat_to_a_log_while_a_mode_compiles(
    instant_modes: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(speed_modes.shutil, "which", lambda name: "/usr/bin/c++")
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.001)
    fast = bench.bench_mode

    def compiling(spec, settings, **kw):  # noqa: ANN001, ANN003, ANN202 - returns once the log has a heartbeat line
        if settings.compile:
            deadline = time.monotonic() + 60
            while "still going" not in sys.stderr.getvalue() and time.monotonic() < deadline:
                time.sleep(0.01)
        return fast(spec, settings, **kw)

    monkeypatch.setattr(bench, "bench_mode", compiling)
    assert main(["bench", *TINY, "--steps", "1", "--modes", "eager,compile", "--no-save"]) == 0
    err = capsys.readouterr().err
    assert "  compile: torch.compile compiles the model" in err
    assert "this can take minutes" in err
    assert re.search(r"^  compile \(.*\): still going \(\d+ s so far\)$", err, re.M), err
    assert err.index("this can take minutes") < err.index("still going")
