"""The measurements behind each GPU check: one function per `hgbench.gpu_check.catalogue` step.

Each runs in a subprocess of its own (`hgbench.gpu_check.step`), measures with hgbench's own code (the runner, the
StepTimer, the NVML sampler, the bench, the loaders), writes its figures as it goes and returns pass, fail (with the
measured figure against the claim's target) or skipped (no CUDA device, no pytest). Nothing is estimated: a figure
that could not be measured is absent or null, and the verdict says why.
"""

from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hgbench.gpu_check.protocol import Outcome, StepContext

if TYPE_CHECKING:
    import torch

REPO_ROOT = Path(__file__).resolve().parents[2]

# Every package hgbench imports somewhere (pyproject's dependencies), by import name and pip name.
PACKAGES: tuple[tuple[str, str], ...] = (
    ("torch", "torch"),
    ("torchvision", "torchvision"),
    ("numpy", "numpy"),
    ("pandas", "pandas"),
    ("scipy", "scipy"),
    ("rich", "rich"),
    ("pynvml", "nvidia-ml-py"),
    ("cv2", "opencv-python-headless"),
    ("matplotlib", "matplotlib"),
)

# The targets README states (Speed: "the issue-7 targets"), and the tolerances of the clock and energy checks.
FAST_SPEEDUP_TARGET = 3.0
CONV_PEAK_PCT_TARGET = 40.0
DATA_WAIT_PCT_TARGET = 5.0
EVENT_TIMER_TOLERANCE = 0.10  # event-timed sleep vs the host's synchronised wall time of the same sleep
ENERGY_TOLERANCE = 0.15  # energy counter vs mean power x time over the same steady load
CROP_MEAN_LEVELS = 3.0  # nvjpeg vs libjpeg differ by a level or two in IDCT and chroma upsampling; a wrong crop: tens


# torch is imported inside each check, so that the environment check reports a missing torch with the rest.


def _no_cuda() -> Outcome | None:
    import torch

    if torch.cuda.is_available():
        return None
    return Outcome("skipped", "no CUDA device (torch.cuda.is_available() is False)")


def _release() -> None:
    import torch

    torch._dynamo.reset()
    gc.collect()
    torch.cuda.empty_cache()


def _torch_range() -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The (lowest, first unsupported) torch versions pyproject.toml declares, e.g. ((2, 11), (2, 15))."""
    try:
        import tomllib

        deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    except (OSError, KeyError, ValueError):
        return None
    for dep in deps:
        m = re.fullmatch(r"torch\s*>=\s*([\d.]+)\s*,\s*<\s*([\d.]+)", dep.strip())
        if m:
            return tuple(map(int, m[1].split("."))), tuple(map(int, m[2].split(".")))
    return None


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text.split("+")[0])[:3])


def _import_problem(module: str) -> str | None:
    """None when the module imports; "not installed"; or why an installed one does not (a missing shared library)."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return "not installed"
        return f"does not import: {exc}"
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError of a shared library, anything: say which
        return f"does not import: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:200]
    return None


def environment(ctx: StepContext) -> Outcome:
    """The Python, torch and packages at hand; the machine's name; whether there is a CUDA device."""
    versions: dict[str, str | None] = {}
    missing = []
    for module, dist in PACKAGES:
        problem = _import_problem(module)
        if problem is not None:
            versions[dist] = None
            missing.append(f"{module} (pip install {dist})" if problem == "not installed" else f"{module} ({problem})")
            continue
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "present"  # importable, installed without metadata (a site build)
    versions["pytest"] = importlib.metadata.version("pytest") if importlib.util.find_spec("pytest") else None
    ctx.update(python=platform.python_version(), packages=versions)
    if versions["torch"] is None:
        ctx.update(cuda_available=False, cuda_reason="torch does not import (pip install torch)")
        return Outcome("fail", f"missing {', '.join(missing)}", f"Python {platform.python_version()}, no torch")
    import torch

    cuda = torch.cuda.is_available()
    ctx.update(python=platform.python_version(), packages=versions, cuda_available=cuda, torch=torch.__version__)
    if not cuda:
        ctx.update(cuda_reason="no CUDA device (torch.cuda.is_available() is False)")
    from hgbench.environment import collect_environment, machine_id

    info = collect_environment(torch.device("cuda" if cuda else "cpu"))
    ctx.update(
        machine_id=machine_id(info),
        gpu_name=info.get("gpu_name"),
        cuda=info.get("cuda"),
        driver=info.get("driver"),
        cudnn=info.get("cudnn"),
    )
    problems = [f"missing {', '.join(missing)}"] if missing else []
    bounds = _torch_range()
    have = _version_tuple(torch.__version__)
    if bounds and not bounds[0] <= have[: len(bounds[0])] < bounds[1]:
        low, high = (".".join(map(str, b)) for b in bounds)
        problems.append(f"torch {torch.__version__} is outside the supported range >={low},<{high}")
    summary = f"Python {platform.python_version()}, torch {torch.__version__}, " + (
        f"{info.get('gpu_name')}, CUDA {info.get('cuda')}" if cuda else "no CUDA device"
    )
    return Outcome("fail" if problems else "pass", "; ".join(problems) or None, summary)


# ---------------------------------------------------------------------------------------------------- hgbench run


def _only_record(folder: Path) -> dict[str, Any] | None:
    records = sorted(folder.rglob("*.json"))
    return json.loads(records[-1].read_text()) if records else None


def _hgbench_run(ctx: StepContext, name: str, args: list[str]) -> tuple[int, dict[str, Any] | None]:
    """`hgbench run` with these arguments in this process, its record in the work folder, checkpoints discarded."""
    from hgbench.cli import main

    out = ctx.work / name
    with tempfile.TemporaryDirectory(prefix="gpu-check-ckpt-") as ckpt:
        rc = main(["run", *args, "--out", str(out), "--checkpoint-dir", ckpt, "--quiet"])
    record = _only_record(out)
    return rc, record


def tiny_run(ctx: StepContext) -> Outcome:
    """A default `hgbench run` (smoke scale) on the GPU: it finishes, with CUDA-event times and NVML telemetry."""
    if skip := _no_cuda():
        return skip
    rc, record = _hgbench_run(ctx, "tiny_run", ["--case", "1", "--smoke", "--device", "cuda"])
    if record is None:
        return Outcome("fail", f"hgbench run exited with code {rc} and wrote no record")
    epochs = record["results"]["epochs"]
    train = record["results"].get("train") or {}
    telemetry = record["results"].get("telemetry") or {}
    plain = (record["results"].get("inference") or {}).get("plain") or {}
    ctx.update(
        exit_code=rc,
        status=record["status"],
        status_reason=record.get("status_reason"),
        epochs=[
            {k: e.get(k) for k in ("wall_s", "compute_s", "data_wait_s", "device_idle_s", "energy_j")} for e in epochs
        ],
        data_wait_fraction=train.get("data_wait_fraction"),
        energy_j_per_epoch=train.get("energy_j_per_epoch"),
        inference_device_min=plain.get("device_min"),
        telemetry_available=telemetry.get("available"),
        telemetry_reason=telemetry.get("reason"),
    )
    problems = []
    if rc != 0 or record["status"] != "finished":
        problems.append(f"run {record['status']} (exit {rc}): {record.get('status_reason')}")
    if not epochs or any(e.get("device_idle_s") is None for e in epochs) or plain.get("device_min") is None:
        problems.append("no CUDA-event figures in the record")
    if not telemetry.get("available"):
        problems.append(f"no NVML telemetry: {telemetry.get('reason')}")
    energy = train.get("energy_j_per_epoch")
    summary = f"{len(epochs)} epochs, data wait {100 * (train.get('data_wait_fraction') or 0):.1f}%, " + (
        f"{energy:.0f} J/epoch" if energy is not None else "no energy"
    )
    return Outcome("fail" if problems else "pass", "; ".join(problems) or None, summary)


# ---------------------------------------------------------------------------------------------------- clocks


def _sleep_seconds(cycles: int, device: torch.device) -> float:
    """Host wall time of one device sleep, bracketed by synchronisations."""
    import torch

    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    torch.cuda._sleep(cycles)
    torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def event_timer(ctx: StepContext) -> Outcome:
    """The StepTimer's CUDA events against a known device sleep (`torch.cuda._sleep`) timed by the host."""
    if skip := _no_cuda():
        return skip
    import torch

    from hgbench.timing import StepTimer

    dev = torch.device("cuda", torch.cuda.current_device())
    _sleep_seconds(1_000_000, dev)  # context and clocks up
    probe = 20_000_000
    cycles = int(probe * 0.05 / _sleep_seconds(probe, dev))  # about 50 ms at the clock the GPU runs now
    reference_ms = 1000 * statistics.median(_sleep_seconds(cycles, dev) for _ in range(5))
    timer = StepTimer(dev, capacity=5)
    for _ in range(5):
        timer.data_start()
        timer.data_end()
        timer.compute_start()
        torch.cuda._sleep(cycles)
        timer.compute_end()
    s = timer.summary()
    event_ms = statistics.median(s["per_step_compute_ms"])
    error = event_ms / reference_ms - 1
    ctx.update(
        sleep_cycles=cycles,
        reference_ms=reference_ms,
        event_ms=s["per_step_compute_ms"],
        error_pct=100 * error,
        device_idle_ms=1000 * s["device_idle_s"],
        clock=s["clock"],
        implied_clock_mhz=cycles / reference_ms / 1000,  # the sleep counts SM cycles: near NVML's SM clock
    )
    from hgbench.nvml import device_facts

    ctx.update(nvml_sm_clock_mhz=(device_facts(dev).get("gpu_state") or {}).get("sm_clock_mhz"))
    summary = f"sleep {reference_ms:.1f} ms (host), {event_ms:.1f} ms (events), {100 * error:+.1f}%"
    if s["clock"] != "cuda_event" or abs(error) > EVENT_TIMER_TOLERANCE:
        return Outcome("fail", f"events differ from the host clock by {100 * error:+.1f}% (> 10%)", summary)
    return Outcome("pass", None, summary)


def nvml_energy(ctx: StepContext) -> Outcome:
    """NVML's energy over 8 s of steady matrix products against the sampled mean power x the same time."""
    if skip := _no_cuda():
        return skip
    import torch

    from hgbench.nvml import NvmlSampler

    dev = torch.device("cuda", torch.cuda.current_device())
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.empty_like(a)

    def load(seconds: float) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(10):
                torch.mm(a, a, out=b)
            torch.cuda.synchronize(dev)

    with NvmlSampler(dev, interval_s=0.05) as sampler:
        if not sampler.available:
            return Outcome("fail", f"NVML unavailable: {sampler.reason}")
        load(3.0)  # power settles (NVML's power reading averages over about a second)
        sampler.mark("a")
        t0 = time.perf_counter()
        load(8.0)
        sampler.mark("b")
        elapsed = time.perf_counter() - t0
        w = sampler.window("a", "b")
    expected = (w["power_mean_w"] or 0.0) * elapsed
    ctx.update(
        energy_j=w["energy_j"],
        energy_method=w["energy_method"],
        power_mean_w=w["power_mean_w"],
        seconds=elapsed,
        power_x_time_j=expected,
        samples=w["samples"],
        gpu_util_mean=w["gpu_util_mean"],
    )
    if w["energy_j"] is None or not expected:
        return Outcome("fail", "NVML gave no energy or no power over the window")
    error = w["energy_j"] / expected - 1
    ctx.update(error_pct=100 * error)
    summary = f"{w['energy_j']:.0f} J ({w['energy_method']}) vs {w['power_mean_w']:.0f} W x {elapsed:.1f} s, "
    summary += f"{100 * error:+.1f}%"
    if abs(error) > ENERGY_TOLERANCE:
        return Outcome("fail", f"energy differs from power x time by {100 * error:+.1f}% (> 15%)", summary)
    note = None if w["energy_method"] == "counter" else "no energy counter on this GPU: energy is the power integral"
    return Outcome("pass", note, summary)


# ---------------------------------------------------------------------------------------------------- speed


def _fast_settings(dev: torch.device) -> Any:
    """The settings `hgbench run --fast` picks on this device (channels_last, bf16, compile on CUDA)."""
    from hgbench.speed_modes import ModeSettings, best_mode

    rule = best_mode(dev)
    return ModeSettings(channels_last=bool(rule["channels_last"]), amp=bool(rule["amp"]), compile=bool(rule["compile"]))


def _phase(result: dict[str, Any]) -> dict[str, Any]:
    keep = ("images_per_s", "ms_per_step_median", "tflops", "pct_conv_peak", "peak_memory_mib", "warmup_s")
    return {k: result.get(k) for k in keep}


def fast_vs_eager(ctx: StepContext) -> Outcome:
    """Case 1 at batch 6 (256 px): training images/s of `--fast`'s settings over eager fp32, in one process."""
    if skip := _no_cuda():
        return skip
    import torch

    from hgbench.bench import bench_mode
    from hgbench.cases import get_spec
    from hgbench.models import measure_cost
    from hgbench.speed_modes import MIN_WARMUP, ModeSettings

    dev = torch.device("cuda", torch.cuda.current_device())
    spec = get_spec("1")
    gflops = measure_cost(spec, input_res=256).gflops
    fast = _fast_settings(dev)
    common = {"batch": 6, "steps": 10, "input_res": 256, "device": dev, "gflops_per_image": gflops}
    eager = bench_mode(spec, ModeSettings(), warmup=2, **common)
    ctx.update(eager_train=_phase(eager["train"]), eager_infer=_phase(eager["infer"]), fast_label=fast.label())
    _release()
    quick = bench_mode(spec, fast, warmup=MIN_WARMUP["compile"] if fast.compile else 2, **common)
    ratio = quick["train"]["images_per_s"] / eager["train"]["images_per_s"]
    infer_ratio = quick["infer"]["images_per_s"] / eager["infer"]["images_per_s"]
    ctx.update(
        fast_train=_phase(quick["train"]), fast_infer=_phase(quick["infer"]), speedup=ratio, infer_speedup=infer_ratio
    )
    summary = (
        f"{fast.label()} {ratio:.2f}x eager ({quick['train']['images_per_s']:.0f} vs "
        f"{eager['train']['images_per_s']:.0f} images/s training; inference {infer_ratio:.2f}x)"
    )
    if ratio < FAST_SPEEDUP_TARGET:
        return Outcome("fail", f"fast is {ratio:.2f}x eager, below the 3x target", summary)
    return Outcome("pass", None, summary)


def conv_peak(ctx: StepContext) -> Outcome:
    """Case 1's training step at batch 32 in `--fast`'s settings, as % of the measured bf16 3x3 conv peak."""
    if skip := _no_cuda():
        return skip
    from hgbench.bench import bench_mode, measure_peak_conv_tflops
    from hgbench.cases import get_spec
    from hgbench.models import measure_cost
    from hgbench.speed_modes import MIN_WARMUP

    dev = torch.device("cuda", torch.cuda.current_device())
    peak = measure_peak_conv_tflops(dev)
    ctx.update(peak_conv_tflops=peak)
    _release()
    spec = get_spec("1")
    fast = _fast_settings(dev)
    result = bench_mode(
        spec,
        fast,
        batch=32,
        steps=5,
        warmup=MIN_WARMUP["compile"] if fast.compile else 2,
        input_res=256,
        device=dev,
        gflops_per_image=measure_cost(spec, input_res=256).gflops,
        peak_conv=peak,
    )
    pct = result["train"]["pct_conv_peak"]
    ctx.update(settings=fast.label(), train=_phase(result["train"]), infer=_phase(result["infer"]), pct=pct)
    summary = f"{result['train']['tflops']:.1f} of {peak:.1f} TFLOP/s = {pct:.1f}% ({fast.label()}, training)"
    if pct < CONV_PEAK_PCT_TARGET:
        return Outcome("fail", f"{pct:.1f}% of the conv peak, below the 40% target", summary)
    return Outcome("pass", None, summary)


# ---------------------------------------------------------------------------------------------------- data


def decode_crops(ctx: StepContext) -> Outcome:
    """`--decode device` batches (nvjpeg, side stream) against the worker path's, while the GPU is kept busy."""
    if skip := _no_cuda():
        return skip
    import torch

    from hgbench.data.loader import make_loader
    from hgbench.data.mpii import MPIIDataset
    from hgbench.data.synthetic import default_dataset

    dev = torch.device("cuda", torch.cuda.current_device())
    root = default_dataset(people=120)  # the synthetic set `--smoke` uses (cached once generated)
    common = {"input_res": 256, "seed": 0}
    by_workers = MPIIDataset(root, "train", **common)
    by_device = MPIIDataset(root, "train", decode="device", **common)
    on_cpu = make_loader(by_workers, 6, shuffle=True, workers=2, pin_memory=False, drop_last=True, seed=1)
    on_gpu = make_loader(by_device, 6, shuffle=True, workers=2, pin_memory=True, drop_last=True, seed=1, device=dev)
    load = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16)
    means, maxes, targets_equal, batches = [], [], True, 0
    for epoch in (1, 2):
        on_cpu.set_epoch(epoch)
        on_gpu.set_epoch(epoch)
        for a, b in zip(on_cpu, on_gpu, strict=True):
            # Read at once on the default stream, as a training step would: a batch handed over before the side
            # stream finished it shows here.
            seen = b["image"].clone()
            for _ in range(30):  # then the GPU busy while the side stream decodes and crops the next batch
                load = (load @ load).clamp_(-1, 1)
            # And the batch again after that: memory the side stream reused too early shows here.
            for image in (seen, b["image"]):
                levels = (image.cpu() - a["image"]).abs() * 255
                means.append(levels.mean().item())
                maxes.append(levels.max().item())
            targets_equal &= torch.allclose(b["target"].cpu(), a["target"], rtol=1.3e-6, atol=1e-5)
            batches += 1
    worst = max(means)
    ctx.update(batches=batches, mean_levels=means, max_levels=maxes, targets_equal=targets_equal)
    summary = f"{batches} batches under load: worst batch mean {worst:.2f} grey levels, max {max(maxes):.0f}"
    summary += ", targets equal" if targets_equal else ", targets differ"
    if worst >= CROP_MEAN_LEVELS or not targets_equal:
        return Outcome("fail", "device batches differ from the worker path's", summary)
    return Outcome("pass", None, summary)


def data_wait(ctx: StepContext) -> Outcome:
    """The data-wait share of the epochs after warm-up of a `--fast --decode device` run of case 1 at 256 px."""
    if skip := _no_cuda():
        return skip
    args = ["--case", "1", "--fast", "--decode", "device", "--device", "cuda", "--epochs", "3", "--synthetic", "120"]
    args += ["--limit-val", "12", "--no-flip-test", "--workers", "4"]
    rc, record = _hgbench_run(ctx, "data_wait", args)
    if record is None:
        return Outcome("fail", f"hgbench run exited with code {rc} and wrote no record")
    train = record["results"].get("train") or {}
    epochs = record["results"]["epochs"]
    fraction = train.get("data_wait_fraction")
    ctx.update(
        exit_code=rc,
        status=record["status"],
        decode=record["config"].get("decode"),
        settings={k: record["config"].get(k) for k in ("amp", "channels_last", "compile")},
        epochs=[{k: e.get(k) for k in ("wall_s", "data_wait_s", "device_idle_s", "warmup")} for e in epochs],
        data_wait_pct=None if fraction is None else 100 * fraction,
    )
    if rc != 0 or record["status"] != "finished" or fraction is None:
        return Outcome("fail", f"run {record['status']} (exit {rc}): {record.get('status_reason')}")
    summary = f"data wait {100 * fraction:.1f}% of the epochs after warm-up ({len(epochs)} epochs)"
    if 100 * fraction >= DATA_WAIT_PCT_TARGET:
        return Outcome("fail", f"data wait {100 * fraction:.1f}%, above the 5% target", summary)
    return Outcome("pass", None, summary)


# ---------------------------------------------------------------------------------------------------- processes


def torchrun_nccl(ctx: StepContext) -> Outcome:
    """`torchrun --nproc_per_node 1 -m hgbench.cli run` on the GPU: NCCL's process group, one finished record."""
    if skip := _no_cuda():
        return skip
    out = ctx.work / "torchrun_nccl"
    with tempfile.TemporaryDirectory(prefix="gpu-check-ckpt-") as ckpt:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
        command += ["-m", "hgbench.cli", "run", "--case", "hg1", "--smoke", "--device", "cuda", "--quiet"]
        command += ["--out", str(out), "--checkpoint-dir", ckpt]
        env = {**os.environ, "NCCL_DEBUG": "VERSION"}  # NCCL prints its version when it starts
        proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    sys.stdout.write(proc.stdout + proc.stderr)
    nccl = re.search(r"NCCL version ([\w.+-]+)", proc.stdout + proc.stderr)
    record = _only_record(out)
    ctx.update(
        exit_code=proc.returncode,
        nccl_version=nccl[1] if nccl else None,
        status=None if record is None else record["status"],
        world_size=None if record is None else record["config"].get("world_size"),
    )
    if proc.returncode != 0 or record is None or record["status"] != "finished":
        why = "no record" if record is None else f"run {record['status']}: {record.get('status_reason')}"
        return Outcome("fail", f"torchrun exited with code {proc.returncode}; {why}")
    if nccl is None:
        return Outcome("fail", "the run finished but NCCL never started (no 'NCCL version' line)")
    return Outcome("pass", None, f"finished, world size {record['config'].get('world_size')}, NCCL {nccl[1]}")


def cuda_tests(ctx: StepContext) -> Outcome:
    """`pytest -m cuda` over the checkout's tests."""
    if importlib.util.find_spec("pytest") is None:
        return Outcome("skipped", "pytest not installed")
    if not (REPO_ROOT / "tests").is_dir():
        return Outcome("skipped", f"no tests/ beside {REPO_ROOT / 'hgbench'} (run from a checkout)")
    if skip := _no_cuda():
        return skip
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-v", "-rfE", "-p", "no:cacheprovider"]
    command += ["--continue-on-collection-errors", "tests"]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    sys.stdout.write(proc.stdout + proc.stderr)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", proc.stdout)}
    failed = [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    ctx.update(exit_code=proc.returncode, counts=counts, failed=failed)
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if k != "deselected") or "no summary"
    if proc.returncode != 0:
        return Outcome(
            "fail", f"pytest exited with code {proc.returncode}: {'; '.join(failed[:5]) or summary}", summary
        )
    return Outcome("pass", None, summary)


CHECKS: dict[str, Callable[[StepContext], Outcome]] = {
    "environment": environment,
    "tiny_run": tiny_run,
    "event_timer": event_timer,
    "nvml_energy": nvml_energy,
    "fast_vs_eager": fast_vs_eager,
    "conv_peak": conv_peak,
    "decode_crops": decode_crops,
    "data_wait": data_wait,
    "torchrun_nccl": torchrun_nccl,
    "cuda_tests": cuda_tests,
}

__all__ = ["CHECKS"]
