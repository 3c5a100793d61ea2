"""Tests for hgbench.measure.contention: the machine's load from synthetic /proc readings (never the real load), the
contended mark's thresholds, DDP ranks combined by host, and the record's run-level contention section."""

from __future__ import annotations

from pathlib import Path

import pytest

from hgbench.measure import contention
from hgbench.measure.contention import (
    OTHER_CPU_THRESHOLD,
    CpuReading,
    LoadMeter,
    combine_loads,
    contention_reasons,
    parse_loadavg,
    parse_proc_stat,
    run_contention,
    window_entry,
)
from hgbench.spec.config import RunConfig

PROC_STAT = """cpu  1000 0 500 8000 100 0 0 400 0 0
cpu0 500 0 250 4000 50 0 0 200 0 0
cpu1 500 0 250 4000 50 0 0 200 0 0
intr 1 2 3
"""


def test_proc_stat_and_loadavg_parse() -> None:
    busy, total, steal, cpus = parse_proc_stat(PROC_STAT, ticks_per_s=100)
    assert (busy, total, steal, cpus) == (15.0, 100.0, 4.0, 2)
    assert parse_loadavg("6.52 4.10 3.00 7/812 12345\n") == pytest.approx(6.52)
    with pytest.raises(ValueError, match="cpu"):
        parse_proc_stat("intr 1 2\n", 100)


def _reader(readings: list[CpuReading]):  # noqa: ANN202 - a test helper
    it = iter(readings)
    return lambda: next(it)


def test_a_busy_window_is_contended_and_a_quiet_one_is_not() -> None:
    """Two CPUs for 10 s = 20 CPU-seconds. Quiet: we take 9, others 1 (5%). Busy: we take 9, others 9 (45%)."""
    meter = LoadMeter(
        read=_reader(
            [
                CpuReading(0.0, busy_s=0, total_s=0, steal_s=0, own_s=0, load_avg_1m=0.5, cpus=2),
                CpuReading(10.0, busy_s=10, total_s=20, steal_s=0, own_s=9, load_avg_1m=1.1, cpus=2),
                CpuReading(20.0, busy_s=28, total_s=40, steal_s=0, own_s=18, load_avg_1m=6.0, cpus=2),
            ]
        )
    )
    for name in ("a", "b", "c"):
        meter.mark(name)
    quiet, busy = meter.window("a", "b"), meter.window("b", "c")
    assert quiet["other_cpu_frac"] == pytest.approx(0.05)
    assert busy["other_cpu_frac"] == pytest.approx(0.45)
    assert busy["load_avg_1m"] == 6.0
    assert busy["own_cpu_s"] == pytest.approx(9)
    assert window_entry(quiet, {})["contended"] is False
    entry = window_entry(busy, {"gpu_other_processes": None})
    assert entry["contended"] is True
    assert entry["contended_reasons"] == ["other processes took 45% of the CPU time"]
    with pytest.raises(KeyError, match="nope"):
        meter.window("a", "nope")


def test_thresholds_steal_and_gpu_processes() -> None:
    just_under = {"other_cpu_frac": OTHER_CPU_THRESHOLD, "steal_frac": 0.0}
    assert contention_reasons(just_under) == []
    assert contention_reasons({"other_cpu_frac": 0.0, "steal_frac": 0.2}) == [
        "the hypervisor stole 20% of the CPU time"
    ]
    assert contention_reasons({}, gpu_other_processes=1) == ["1 other process(es) on the GPU"]
    assert contention_reasons(None, gpu_other_processes=0) == []


def test_a_quarter_of_the_cpu_taken_by_others_is_contended_and_a_quiet_epoch_is_not() -> None:
    # The windows of one `make run` record on 2 cores: case 1's steady epoch took 26.4 s against about 16 s with
    # the run's own CPU time unchanged, while other processes took 24% of the CPU; its quiet epochs measured 1-3%.
    slowed = {"other_cpu_frac": 0.239, "steal_frac": 0.007}
    quiet = {"other_cpu_frac": 0.030, "steal_frac": 0.001}
    assert contention_reasons(slowed) == ["other processes took 24% of the CPU time"]
    assert contention_reasons(quiet) == []


def test_without_proc_nothing_is_called_contended(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contention, "_PROC", Path("/nonexistent-proc"))
    reading = contention.read_cpu()
    assert reading.busy_s is None
    window = contention.load_window(reading, reading)
    assert window["other_cpu_frac"] is None
    assert window_entry(window, {})["contended"] is False


def test_ddp_ranks_on_one_host_are_this_runs_cpu_not_others() -> None:
    rank0 = {"host": "h", "own_cpu_s": 10.0, "other_cpu_s": 12.0, "other_cpu_frac": 0.6}
    rank1 = {"host": "h", "own_cpu_s": 10.0, "other_cpu_s": 12.0, "other_cpu_frac": 0.6}
    elsewhere = {"host": "g", "own_cpu_s": 10.0}
    combined = combine_loads([rank0, rank1, elsewhere])
    assert combined["own_cpu_s"] == 20.0
    assert combined["other_cpu_s"] == pytest.approx(2.0)
    assert combined["other_cpu_frac"] == pytest.approx(0.1)


def test_run_contention_names_a_shared_gpu_and_counts_windows() -> None:
    quiet = {"load": {"contended": False, "contended_reasons": []}}
    busy = {"load": {"contended": True, "contended_reasons": ["2 other process(es) on the GPU"]}}
    summary = run_contention([quiet, busy], None, gpu_share=0.5)
    assert summary["contended"] is True
    assert summary["contended_windows"] == 1
    assert summary["windows"] == 2
    assert summary["reasons"] == ["2 other process(es) on the GPU"]
    assert summary["shared_gpu"] is True
    assert "whole GPU" in summary["board_wide"]
    assert run_contention([{}], None, gpu_share=1.0)["contended"] is None  # an older record: unknown
    assert run_contention([quiet], quiet["load"], gpu_share=1.0)["shared_gpu"] is False


def test_a_run_records_each_epochs_load_and_marks_itself_contended(
    tiny: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny run whose load readings say other processes took 75% of the CPUs: every window and the run are
    contended, and a run given half a GPU by the sweep says its GPU was shared."""
    from hgbench.run import runner

    clock = iter(range(10_000))

    def busy() -> CpuReading:
        t = float(next(clock))
        return CpuReading(t, busy_s=4 * t, total_s=4 * t, steal_s=0, own_s=t, load_avg_1m=8.0, cpus=4)

    monkeypatch.setattr(runner, "LoadMeter", lambda: LoadMeter(read=busy))
    outcome = runner.run(RunConfig(**{**tiny.to_dict(), "epochs": 2, "gpu_share": 0.5}), progress=False)
    record = outcome.record
    for epoch in record["results"]["epochs"]:
        assert epoch["load"]["other_cpu_frac"] == pytest.approx(0.75)
        assert epoch["load"]["contended"] is True
    assert record["results"]["inference"]["load"]["contended"] is True
    summary = record["results"]["contention"]
    assert summary["contended"] is True
    assert summary["windows"] == 2
    assert summary["shared_gpu"] is True
    assert summary["gpu_share"] == 0.5


def test_run_contention_names_a_mig_slice_board_wide() -> None:
    quiet = {"load": {"contended": False, "contended_reasons": []}}
    summary = run_contention([quiet], None, gpu_share=1.0, mig_slice=True)
    assert (summary["mig_slice"], summary["shared_gpu"], summary["contended"]) == (True, False, False)
    assert "MIG slice" in summary["board_wide"]
    both = run_contention([quiet], None, gpu_share=0.5, mig_slice=True)["board_wide"]
    assert "shared with other runs" in both
    assert "MIG slice" in both
    assert run_contention([quiet], None, gpu_share=1.0)["mig_slice"] is False
