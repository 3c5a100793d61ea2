"""The table's time figures say how far to trust them: a spread beside every time, warnings for too few steady
epochs, overlapping ranges and contended or shared-GPU runs, which never pool with runs measured alone."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from hgbench.report import comparison_table, to_csv, to_markdown
from hgbench.report.time_trust import CONTENDED_MARK
from hgbench.run.results import RunSummary, summarize

CPU_DIR = Path(__file__).parent / "data" / "records" / "cpu-pt2.14.1"


def run_of(name: str, **changes: object) -> RunSummary:
    record = json.loads((CPU_DIR / name).read_text())
    summary = summarize(copy.deepcopy(record), CPU_DIR / name)
    for key, value in changes.items():
        setattr(summary, key, value)
    return summary


def warnings_of(runs: list[RunSummary]) -> str:
    return " ".join(comparison_table(runs).attrs["warnings"])


def test_a_contended_run_is_a_row_of_its_own_marked_and_warned() -> None:
    alone = run_of("0002_case3_seed0.json")
    busy = run_of("0003_case3_seed1.json", contended=True, contention_reasons=["other processes took 60%"])
    df = comparison_table([alone, busy])
    assert list(df["runs"]) == [1, 1]  # never pooled
    assert list(df["timing"]) == ["", "contended"]
    assert "case 3 (contended) were measured while the machine was busy" in warnings_of([alone, busy])
    md = to_markdown(df)
    contended_line = next(line for line in md.splitlines() if line.startswith("| 3 ") and "contended" in line)
    assert CONTENDED_MARK in contended_line
    assert "timing" in to_csv(df).splitlines()[0]


def test_a_run_on_a_shared_gpu_is_never_pooled_with_one_alone() -> None:
    alone = run_of("0002_case3_seed0.json")
    shared = run_of("0003_case3_seed1.json", shared_gpu=True)
    df = comparison_table([alone, shared])
    assert list(df["timing"]) == ["", "shared GPU"]
    assert "GPU shared with other runs" in warnings_of([alone, shared])


def test_each_time_carries_its_range_over_steady_epochs_and_runs() -> None:
    a = run_of("0002_case3_seed0.json", epoch_minutes=[0.40, 0.50], inference_min=0.05)
    b = run_of("0003_case3_seed1.json", epoch_minutes=[0.45, 0.60], inference_min=0.07)
    row = comparison_table([a, b]).iloc[0]
    assert (row["min_per_epoch_low"], row["min_per_epoch_high"]) == (0.40, 0.60)
    assert (row["inference_min_low"], row["inference_min_high"]) == (0.05, 0.07)
    assert row["steady_epochs"] == 2
    assert "(0.400–0.600)" in to_markdown(comparison_table([a, b]))


def test_fewer_than_two_steady_epochs_is_warned() -> None:
    one = run_of("0001_case1_seed0.json", epoch_minutes=[0.6])
    text = warnings_of([one])
    assert "The min/epoch of case 1 rests on fewer than 2 steady epochs" in text
    assert comparison_table([one]).iloc[0]["min_per_epoch_low"] != comparison_table([one]).iloc[0]["min_per_epoch_low"]


def test_overlapping_time_ranges_are_warned_and_apart_ones_are_not() -> None:
    fast = run_of("0001_case1_seed0.json", epoch_minutes=[0.20, 0.90], min_per_epoch=0.55)
    slow = run_of("0002_case3_seed0.json", epoch_minutes=[0.85, 0.95], min_per_epoch=0.9)
    assert "Time ranges overlap (min/epoch of case 1 and case 3)" in warnings_of([fast, slow])
    apart = run_of("0001_case1_seed0.json", epoch_minutes=[0.20, 0.25], min_per_epoch=0.225)
    assert "overlap" not in warnings_of([apart, slow]).replace("intervals of every row overlap", "")


def test_a_run_on_a_mig_slice_is_never_pooled_with_one_on_a_whole_gpu() -> None:
    whole = run_of("0002_case3_seed0.json")
    sliced = run_of("0003_case3_seed1.json", mig_slice=True)
    df = comparison_table([whole, sliced])
    assert list(df["runs"]) == [1, 1]
    assert list(df["timing"]) == ["", "MIG slice"]
    assert "on a MIG slice of one (energy, power and memory then the whole board's)" in warnings_of([whole, sliced])
    line = next(x for x in to_markdown(df).splitlines() if x.startswith("| 3 ") and "MIG slice" in x)
    assert CONTENDED_MARK in line


def test_compare_says_which_side_ran_on_a_mig_slice() -> None:
    from hgbench.report.compare import compare_runs

    whole = run_of("0002_case3_seed0.json")
    sliced = run_of("0003_case3_seed1.json", mig_slice=True)
    notes = " ".join(compare_runs([whole], [sliced]).attrs["notes"])
    assert "B: 1 finished run(s) on CPU" in notes
    assert "(on a MIG slice: the slice's times, the whole board's energy, power and memory)" in notes
    mixed = " ".join(compare_runs([whole, sliced], [whole]).attrs["notes"])
    assert "1 of them on a MIG slice, the others on whole GPUs" in mixed
