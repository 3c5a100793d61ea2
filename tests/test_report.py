"""Tests of the reporter (hgbench/report/): the table and its formats, the README rewrite, compare, the plot."""

from __future__ import annotations

import copy
import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from hgbench.errors import HGBenchError
from hgbench.report import (
    COMPARE_COLUMNS,
    README_END,
    README_START,
    REFERENCE_COLUMNS,
    SMOKE_MARK,
    TABLE_COLUMNS,
    TIMING_CAVEAT,
    compare_rich_table,
    compare_runs,
    comparison_table,
    frontier_panels,
    plot_frontier,
    rewrite_readme,
    to_csv,
    to_markdown,
)
from hgbench.run.results import RunSummary, load_records, summarize
from hgbench.spec.cases import PUBLISHED, PUBLISHED_HARDWARE

RECORDS = Path(__file__).parent / "data" / "records"
CPU_DIR = RECORDS / "cpu-pt2.14.1"

# The CSV header is a contract with tools: changing it must be deliberate (and documented in hgbench/report/table.py).
EXPECTED_HEADER = (
    "case,as_built,description,runs,seeds,device,setting,smoke,timing,params,gflops,gflops_input_res,steady_epochs,"
    "min_per_epoch,min_per_epoch_std,min_per_epoch_low,min_per_epoch_high,data_wait_pct,data_wait_pct_std,pckh_mean,pckh_mean_std,pckh_mean_ci95_low,pckh_mean_ci95_high,"
    "heatmap_acc,heatmap_acc_std,"
    "inference_min,inference_min_std,inference_min_low,inference_min_high,inference_device_min,inference_device_min_std,"
    "images_per_s,images_per_s_std,energy_j_per_epoch,energy_j_per_epoch_std"
)
EXPECTED_REFERENCE_HEADER = (
    EXPECTED_HEADER + ",published_min_per_epoch,published_val_acc,published_inference_min,min_per_epoch_ratio,"
    "inference_min_ratio,ratio_note"
)


@pytest.fixture(scope="module")
def summaries() -> list[RunSummary]:
    found, warnings = load_records([RECORDS])
    assert len(warnings) == 2  # the corrupt and the foreign file
    return found


@pytest.fixture(scope="module")
def cpu_only(summaries: list[RunSummary]) -> list[RunSummary]:
    return [s for s in summaries if s.device.startswith("CPU")]


def variant(name: str, **changes: object) -> RunSummary:
    """A summary of a golden record with some fields changed (e.g. another seed and accuracy)."""
    record = json.loads((CPU_DIR / name).read_text())
    summary = summarize(copy.deepcopy(record), CPU_DIR / name)
    for key, value in changes.items():
        setattr(summary, key, value)
    return summary


# ------------------------------------------------------------------------------------------------------ table
def test_table_rows_in_case_order_with_seed_statistics(cpu_only: list[RunSummary]) -> None:
    df = comparison_table(cpu_only)
    assert list(df.columns) == list(TABLE_COLUMNS)
    assert [(r.case, r.as_built) for r in df.itertuples()] == [("1", False), ("3", False), ("5", True)]
    case3 = df[df["case"] == "3"].iloc[0]
    assert case3["runs"] == 2
    assert case3["seeds"] == "0 1"
    assert case3["pckh_mean"] == pytest.approx(42.0)  # 41.0 and 43.0
    assert case3["pckh_mean_std"] == pytest.approx(math.sqrt(2))  # sample std, ddof=1
    case1 = df[df["case"] == "1"].iloc[0]
    assert case1["runs"] == 1
    assert math.isnan(case1["pckh_mean_std"])
    assert math.isnan(case1["energy_j_per_epoch"])  # not measured on the CPU stays empty, never 0
    assert df.attrs["warnings"] == []
    assert any("0005_case2_seed0 (interrupted)" in n for n in df.attrs["notes"])
    assert "2" not in set(df["case"])  # the interrupted run is not in the table


def test_table_mixed_devices_warns_and_keeps_rows_apart(summaries: list[RunSummary]) -> None:
    df = comparison_table(summaries)
    case1 = df[df["case"] == "1"]
    assert sorted(case1["device"]) == ["CPU: AMD EPYC 7B13", "NVIDIA H100 80GB HBM3"]  # never averaged together
    assert len(df.attrs["warnings"]) == 1
    assert "2 different devices" in df.attrs["warnings"][0]
    md = to_markdown(df)
    assert "> **Warning:** These runs come from 2 different devices" in md


def test_inference_headline_is_the_wall_clock_pass_on_every_device(summaries: list[RunSummary]) -> None:
    """GPU and CPU rows share one clock in "inference min"; the GPU's own compute is a separate, labelled column."""
    df = comparison_table(summaries)
    gpu = df[df["device"] == "NVIDIA H100 80GB HBM3"].iloc[0]
    record = json.loads((RECORDS / "nvidia-h100-80gb-hbm3-pt2.14.1-cu13.0" / "0001_case1_seed0.json").read_text())
    plain = record["results"]["inference"]["plain"]
    assert gpu["inference_min"] == pytest.approx(plain["wall_min"])
    assert gpu["inference_device_min"] == pytest.approx(plain["device_min"])
    cpu = df[df["device"].str.startswith("CPU")]
    assert cpu["inference_device_min"].isna().all()  # no GPU clock on a CPU: not measured, never the wall figure
    md = to_markdown(df)
    header = next(line for line in md.splitlines() if line.startswith("| case"))
    assert "| inference min |" in header
    assert "| GPU compute min |" in header
    assert "inference min is one plain pass over the validation set on the wall clock" in md


def mpii_run(name: str, **changes: object) -> RunSummary:
    """A golden record turned into the study's setting: full MPII, 50 epochs, 256 px (config changes on top)."""
    base = variant(name)
    info = {**base.dataset_info, "name": "mpii", "train_size": 22_246, "val_size": 2_958, "fingerprint": "mpii-full"}
    config = {**base.config, "epochs": 50, "input_res": 256, **changes.pop("config", {})}
    return variant(name, **{"dataset": "mpii", "dataset_info": info, "config": config, **changes})


def test_table_reference_columns(cpu_only: list[RunSummary]) -> None:
    df = comparison_table(cpu_only, reference=True)
    assert list(df.columns) == [*TABLE_COLUMNS, *REFERENCE_COLUMNS]
    assert sorted(set(df["case"]), key=int) == [str(i) for i in range(1, 9)]  # every published case is shown
    case3 = df[df["case"] == "3"].iloc[0]
    assert case3["published_min_per_epoch"] == PUBLISHED["3"].min_per_epoch
    assert case3["published_val_acc"] == PUBLISHED["3"].val_acc
    case7 = df[df["case"] == "7"].iloc[0]
    assert case7["runs"] == 0
    assert math.isnan(case7["min_per_epoch_ratio"])
    md = to_markdown(df)
    assert "published min/epoch" in md
    assert "published val. acc" in md
    assert PUBLISHED_HARDWARE in md


def test_reference_ratio_only_for_the_studys_setting() -> None:
    """A ratio sets our minutes against the study's only for full MPII epochs at 256 px."""
    full = mpii_run("0001_case1_seed0.json")
    df = comparison_table([full], reference=True)
    case1 = df[df["case"] == "1"].iloc[0]
    assert case1["min_per_epoch_ratio"] == pytest.approx(full.min_per_epoch / PUBLISHED["1"].min_per_epoch)
    assert case1["inference_min_ratio"] == pytest.approx(full.inference_min / PUBLISHED["1"].inference_min)
    assert case1["ratio_note"] == ""
    assert "our runs are not the study's setting" not in to_markdown(df)

    small = mpii_run("0001_case1_seed0.json", config={"input_res": 128})
    limited = mpii_run("0002_case3_seed0.json", dataset_info={**full.dataset_info, "train_size": 24, "val_size": 12})
    df = comparison_table([small, limited], reference=True)
    case1, case3 = (df[df["case"] == c].iloc[0] for c in ("1", "3"))
    assert math.isnan(case1["min_per_epoch_ratio"])
    assert math.isnan(case1["inference_min_ratio"])
    assert case1["ratio_note"] == "not the study's setting: 128 px input"
    assert math.isnan(case3["min_per_epoch_ratio"])
    assert case3["ratio_note"] == "not the study's setting: 24 train people, 12 val people"
    md = to_markdown(df)
    assert "our runs are not the study's setting (128 px input, 24 train people, 12 val people)" in md


def test_reference_table_at_smoke_scale_shows_no_ratio(cpu_only: list[RunSummary]) -> None:
    """Synthetic data is never the study's epoch: both ratio columns read —, and the footnote says why."""
    df = comparison_table(cpu_only, reference=True)
    assert df["min_per_epoch_ratio"].isna().all()
    assert df["inference_min_ratio"].isna().all()
    md = to_markdown(df)
    header = md.splitlines()[0]
    assert "| train ratio |" in header
    assert "| infer ratio |" in header
    assert "| ratio |" not in header
    case3 = next(ln for ln in md.splitlines() if ln.startswith("| 3 "))
    assert "×" not in case3
    assert "not the study's setting (synthetic data, 120 train people, 40 val people)" in md


def test_smoke_accuracies_are_marked_in_the_table(cpu_only: list[RunSummary]) -> None:
    md = to_markdown(comparison_table(cpu_only, reference=True))
    case3 = next(ln for ln in md.splitlines() if ln.startswith("| 3 "))
    assert f"42.0 ± 1.4 (—) {SMOKE_MARK}" in case3  # these golden records hold no per-person data: no interval
    assert f"0.500 ± 0.000 {SMOKE_MARK}" in case3  # the heatmap accuracy too
    assert "| 83.13 |" in case3  # the published figure is not ours: no mark
    assert f"- {SMOKE_MARK} smoke accuracy (synthetic data, 3 epochs, 40 val people)" in md

    few_epochs = mpii_run("0001_case1_seed0.json", config={"epochs": 2})
    study = mpii_run("0002_case3_seed0.json")
    df = comparison_table([few_epochs, study])
    assert df.set_index("case").loc["1", "smoke"] == "2 epochs"
    assert df.set_index("case").loc["3", "smoke"] == ""
    md = to_markdown(df)
    assert f"41.0 (—) {SMOKE_MARK}" not in md
    assert f"42.5 (—) {SMOKE_MARK}" in md


def test_gflops_header_names_the_input_size(cpu_only: list[RunSummary]) -> None:
    assert "| GFLOPs @256px |" in to_markdown(comparison_table(cpu_only))
    small = variant(
        "0001_case1_seed0.json", config={**cpu_only[0].config, "input_res": 128}, gflops=14.05, gflops_input_res=128
    )
    md = to_markdown(comparison_table([*cpu_only, small]))
    assert "| GFLOPs |" in md
    assert "| 14.05 @128px |" in md
    assert "| 56.19 @256px |" in md


def test_table_setting_column_when_configs_differ(cpu_only: list[RunSummary]) -> None:
    smoke = variant("0001_case1_seed0.json", config={**cpu_only[0].config, "epochs": 1}, pckh_mean=5.0)
    df = comparison_table([*cpu_only, smoke])
    case1 = df[df["case"] == "1"]
    assert sorted(case1["setting"]) == ["epochs=1", "epochs=3"]  # a smoke run is not averaged with a real one
    assert "| setting |" in to_markdown(df)
    assert "| setting |" not in to_markdown(comparison_table(cpu_only))
    elsewhere = variant("0001_case1_seed0.json", config={**cpu_only[0].config, "workers": 8, "data_dir": "/x"})
    assert comparison_table([*cpu_only, elsewhere])["runs"].tolist() == [2, 2, 1]  # paths and workers do not split


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        ({"hgbench_version": "0.2.0"}, "hgbench=0.2.0"),
        ({"machine_id": "cpu-amd-epyc-7b13-2c-pt2.14.1"}, "machine=cpu-amd-epyc-7b13-2c-pt2.14.1"),
        (
            {
                "dataset_info": {
                    "name": "synthetic",
                    "train_size": 120,
                    "val_size": 40,
                    "fingerprint": "0123456789abcdef",
                }
            },
            "fingerprint=01234567",
        ),
        ({"config_changes": {"lr": 0.001}}, "lr=0.001"),
        ({"config_changes": {"limit_train": 24}}, "limit_train=24"),
    ],
)
def test_rows_pool_only_runs_that_differ_in_seed_alone(changes: dict, shown: str) -> None:
    """Case 3's two seeds pool; a third run differing in anything but the seed is its own row, named by a warning."""
    changes = dict(changes)
    base = variant("0002_case3_seed0.json")
    if "config_changes" in changes:
        changes["config"] = {**base.config, **changes.pop("config_changes")}
    other = variant("0002_case3_seed0.json", seed=2, **changes)
    df = comparison_table([base, variant("0003_case3_seed1.json"), other])
    assert sorted(df["runs"]) == [1, 2]
    assert df.loc[df["runs"] == 1, "setting"].item() == shown
    key = shown.split("=")[0]
    assert any(w.startswith(f"The runs differ in more than case and form: {key}.") for w in df.attrs["warnings"])
    assert f"| {shown} |" in to_markdown(df)


def test_a_rerun_of_one_seed_is_shown_as_runs_not_seeds() -> None:
    first, rerun = variant("0002_case3_seed0.json"), variant("0002_case3_seed0.json", pckh_mean=40.0)
    df = comparison_table([first, rerun])
    row = df.iloc[0]
    assert (row["runs"], row["seeds"]) == (2, "0 0")
    notes = " ".join(df.attrs["notes"])
    assert "seeds lists each run's seed" in notes
    assert "A seed listed twice is a rerun" in notes
    assert "(seeds)" not in notes
    assert "| 3 | 6 stacks | 2 | 0 0 |" in to_markdown(df)
    single = comparison_table([first])
    assert not any("pools several runs" in n for n in single.attrs["notes"])


def test_frontier_panels_never_join_two_settings(cpu_only: list[RunSummary]) -> None:
    """A 1-epoch smoke run of case 1 and the 3-epoch runs are drawn in separate panels, each with its own line."""
    smoke = variant("0001_case1_seed0.json", config={**cpu_only[0].config, "epochs": 1}, pckh_mean=5.0)
    panels, left_out = frontier_panels([s for s in [*cpu_only, smoke] if s.finished])
    assert [(p.device, p.setting) for p in panels] == [
        ("CPU: AMD EPYC 7B13", "epochs=1"),
        ("CPU: AMD EPYC 7B13", "epochs=3"),
    ]
    assert panels[0].rows["case"].tolist() == ["1"]
    assert panels[0].runs == [smoke]
    assert panels[1].rows["case"].tolist() == ["1", "3", "5"]
    assert left_out == []
    one, _ = frontier_panels([s for s in cpu_only if s.finished])
    assert [p.setting for p in one] == [""]


def test_table_empty() -> None:
    df = comparison_table([])
    assert len(df) == 0
    assert list(df.columns) == list(TABLE_COLUMNS)
    md = to_markdown(df)
    assert sum(ln.startswith("| ") for ln in md.splitlines()) == 1  # the header row only
    assert "No finished runs yet" in md
    assert to_csv(df).strip() == EXPECTED_HEADER
    ref = comparison_table([], reference=True)
    assert len(ref) == 8
    assert (ref["runs"] == 0).all()


def test_csv_header_is_stable_and_parses_back(summaries: list[RunSummary]) -> None:
    text = to_csv(comparison_table(summaries))
    assert text.splitlines()[0] == EXPECTED_HEADER
    assert to_csv(comparison_table(summaries, reference=True)).splitlines()[0] == EXPECTED_REFERENCE_HEADER
    back = pd.read_csv(io.StringIO(text), dtype={"case": str, "seeds": str})
    assert len(back) == 4
    assert set(back["as_built"]) == {True, False}
    row = back[back["case"] == "3"].iloc[0]
    assert row["pckh_mean"] == pytest.approx(42.0)
    assert row["runs"] == 2
    assert row["params"] == 19_306_720
    assert pd.isna(back[back["case"] == "5"].iloc[0]["energy_j_per_epoch"])  # null -> empty cell


def test_markdown_shape_and_mean_std(cpu_only: list[RunSummary]) -> None:
    md = to_markdown(comparison_table(cpu_only), title="Results")
    lines = md.splitlines()
    table = [ln for ln in lines if ln.startswith("|")]
    assert len(table) == 2 + 3  # header, rule, one line per row
    assert len({ln.count(" | ") for ln in table if not ln.startswith("|:") and not ln.startswith("|-")}) == 1
    assert lines[0] == "**Results**"
    case3 = next(ln for ln in table if ln.startswith("| 3 "))
    assert "42.0 ± 1.4 (—)" in case3
    assert "| 2 |" in case3
    assert "| 5 (as built) |" in md
    assert md == to_markdown(comparison_table(cpu_only), title="Results")  # deterministic


def test_markdown_escapes_pipes() -> None:
    s = variant("0001_case1_seed0.json", description="a | b")
    assert "a \\| b" in to_markdown(comparison_table([s]))


# ----------------------------------------------------------------------------------------------------- README
README = f"""# project

Intro text, **kept**  as is.\t

## Results

{README_START}
old table
{README_END}

## After
trailing text without newline"""


def test_rewrite_readme_changes_only_between_markers_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_bytes(README.encode())
    assert rewrite_readme(path, "| a |\n|---|\n| 1 |\n") is True
    text = path.read_text()
    before, after = README.split(README_START)[0], README.split(README_END)[1]
    assert text.startswith(before + README_START + "\n| a |\n|---|\n| 1 |\n" + README_END)
    assert text.endswith(README_END + after)  # byte for byte, including the missing final newline
    mtime = path.stat().st_mtime_ns
    assert rewrite_readme(path, "| a |\n|---|\n| 1 |\n") is False  # twice: nothing changes, not even the file
    assert path.stat().st_mtime_ns == mtime
    assert rewrite_readme(path, "new") is True
    assert "old table" not in path.read_text()


def test_rewrite_readme_keeps_crlf(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_bytes(README.replace("\n", "\r\n").encode())
    rewrite_readme(path, "line 1\nline 2\n")
    raw = path.read_bytes()
    assert b"\r\nline 1\r\nline 2\r\n" + README_END.encode() in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("# no markers\n", "marker <!-- hgbench:results:start --> missing"),
        (f"{README_START}\n{README_START}\n{README_END}\n", "found 2 times"),
        (f"{README_START}\n", "<!-- hgbench:results:end --> missing"),
        (f"{README_END}\nx\n{README_START}\n", "comes before"),
    ],
)
def test_rewrite_readme_bad_markers(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "README.md"
    path.write_text(text)
    with pytest.raises(HGBenchError, match=match) as info:
        rewrite_readme(path, "table")
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)
    assert path.read_text() == text


def test_rewrite_readme_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HGBenchError, match="README not found"):
        rewrite_readme(tmp_path / "README.md", "table")


@pytest.mark.parametrize("document", ["README.md", "docs/reports.md"])
def test_repository_readme_has_the_markers(document: str) -> None:
    """README and the manual's Reports page each hold the published table once (`make table` rewrites both)."""
    text = (Path(__file__).parents[1] / document).read_text()
    assert text.count(README_START) == 1
    assert text.count(README_END) == 1
    assert text.index(README_START) < text.index(README_END)


# ---------------------------------------------------------------------------------------------------- compare
def seeds(name: str, pckhs: list[float], minutes: list[float]) -> list[RunSummary]:
    pairs = enumerate(zip(pckhs, minutes, strict=True))
    return [variant(name, seed=i, pckh_mean=p, min_per_epoch=m) for i, (p, m) in pairs]


def test_compare_two_single_runs_deltas_and_no_p(cpu_only: list[RunSummary]) -> None:
    a = [s for s in cpu_only if s.case == "1"]
    b = [variant("0001_case1_seed0.json", pckh_mean=45.0, min_per_epoch=0.5, epoch_minutes=[])]
    df = compare_runs(a, b)
    assert list(df.columns) == list(COMPARE_COLUMNS)
    row = df.set_index("metric").loc["PCKh@0.5 Mean"]
    assert row["group"] == "case 1"
    assert row["delta"] == pytest.approx(45.0 - 42.5)
    assert row["delta_pct"] == pytest.approx(100 * 2.5 / 42.5)
    assert math.isnan(row["p_value"])
    assert "needs 2+ seeds per side (A has 1, B has 1)" in row["p_note"]
    t = df.set_index("metric").loc["min/epoch"]
    assert t["delta"] == pytest.approx(0.5 - 0.62)
    assert math.isnan(t["p_value"])
    assert df.set_index("metric").loc["images/s", "p_note"] == "not tested"


def test_compare_seeds_gives_welch_p_value() -> None:
    from scipy.stats import ttest_ind

    a = seeds("0001_case1_seed0.json", [83.0, 83.4, 82.9], [18.0, 18.2, 17.9])
    b = seeds("0004_case5-asbuilt_seed0.json", [78.8, 79.1], [14.7, 14.6])
    df = compare_runs(a, b).set_index("metric")
    pckh = df.loc["PCKh@0.5 Mean"]
    assert pckh["group"] == "case 1 vs case 5 (as built)"
    expected = ttest_ind([83.0, 83.4, 82.9], [78.8, 79.1], equal_var=False).pvalue
    assert pckh["p_value"] == pytest.approx(expected)
    assert pckh["p_value"] < 0.05
    assert (pckh["a_n"], pckh["b_n"]) == (3, 2)
    assert "Welch" in pckh["p_note"]
    assert df.loc["min/epoch", "p_value"] == pytest.approx(
        ttest_ind([18.0, 18.2, 17.9], [14.7, 14.6], equal_var=False).pvalue
    )
    assert math.isnan(df.loc["data-wait %", "p_value"])


def test_compare_timing_p_value_alone_is_not_a_speed_difference() -> None:
    """Two seeds a side, 2% apart in min/epoch with tiny spread: p is low, yet the verdict is noise, with the caveat."""
    a = seeds("0001_case1_seed0.json", [42.0, 42.5], [0.1710, 0.1712])
    b = seeds("0001_case1_seed0.json", [42.2, 42.4], [0.1750, 0.1752])
    df = compare_runs(a, b)
    timing = df.set_index("metric").loc["min/epoch"]
    assert timing["p_value"] < 0.05
    assert abs(timing["delta_pct"]) < 5
    assert not timing["significant"]
    assert "a timing: significant only with a change of 5%+" in timing["p_note"]
    assert TIMING_CAVEAT in df.attrs["notes"]
    assert "noise of the machine, not a speed difference of the code" in TIMING_CAVEAT
    console = Console(width=160, record=True)
    console.print(compare_rich_table(df))
    line = next(ln for ln in console.export_text().splitlines() if ln.lstrip("│ ").startswith("min/epoch"))
    assert "within noise (< 5%)" in line


def test_compare_significance_needs_p_and_for_timings_a_large_change() -> None:
    a = seeds("0001_case1_seed0.json", [83.0, 83.4, 82.9], [18.0, 18.2, 17.9])
    b = seeds("0004_case5-asbuilt_seed0.json", [78.8, 79.1], [14.7, 14.6])
    df = compare_runs(a, b).set_index("metric")
    assert df.loc["PCKh@0.5 Mean", "significant"]
    assert df.loc["min/epoch", "significant"]  # -19%: a speed difference the machine's noise does not explain
    assert pd.isna(df.loc["images/s", "significant"])  # not tested
    same = compare_runs(a, seeds("0001_case1_seed0.json", [83.1, 83.2], [18.1, 18.0])).set_index("metric")
    assert not same.loc["PCKh@0.5 Mean", "significant"]
    single = compare_runs(*([variant("0001_case1_seed0.json", epoch_minutes=[])],) * 2)
    assert TIMING_CAVEAT not in single.attrs["notes"]  # no timing was tested, no caveat


def test_compare_one_seed_against_many_has_null_p_with_reason() -> None:
    a = seeds("0001_case1_seed0.json", [83.0], [18.0])
    b = seeds("0001_case1_seed0.json", [83.1, 83.3], [18.1, 18.0])
    row = compare_runs(a, b).set_index("metric").loc["PCKh@0.5 Mean"]
    assert math.isnan(row["p_value"])
    assert row["p_note"] == "needs 2+ seeds per side (A has 1, B has 2)"


def test_compare_folders_pairs_common_cases(summaries: list[RunSummary]) -> None:
    cpu = [s for s in summaries if s.device.startswith("CPU")]
    gpu = [s for s in summaries if not s.device.startswith("CPU")]
    df = compare_runs(cpu, [*gpu, variant("0002_case3_seed0.json")])
    assert set(df["group"]) == {"case 1", "case 3"}
    notes = " ".join(df.attrs["notes"])
    assert "Only in A, not compared: case 5 (as built)" in notes
    assert "0005_case2_seed0" in notes
    assert "NVIDIA H100 80GB HBM3" in notes
    rich = compare_rich_table(df)
    assert len(rich.renderables) == 2


def test_compare_errors(summaries: list[RunSummary]) -> None:
    interrupted = [s for s in summaries if not s.finished]
    with pytest.raises(HGBenchError, match="side A has no finished run"):
        compare_runs(interrupted, summaries)
    with pytest.raises(HGBenchError, match="side B has no finished run"):
        compare_runs(summaries, [])
    one = [variant("0001_case1_seed0.json"), variant("0002_case3_seed0.json")]
    other = [variant("0004_case5-asbuilt_seed0.json", case="7"), variant("0004_case5-asbuilt_seed0.json")]
    with pytest.raises(HGBenchError, match="A and B share no case"):
        compare_runs(one, other)


def test_compare_csv_header(cpu_only: list[RunSummary]) -> None:
    text = to_csv(compare_runs(cpu_only[:1], cpu_only[1:2]))
    assert text.splitlines()[0] == ",".join(COMPARE_COLUMNS)
    assert len(text.splitlines()) == 1 + 8 + 1  # one line per metric of COMPARE_METRICS, then the paired bootstrap
    assert text.splitlines()[0].endswith(",p_value,p_note,significant")


# ------------------------------------------------------------------------------------------------------- plot
def test_plot_frontier_writes_a_png(tmp_path: Path, summaries: list[RunSummary]) -> None:
    out = plot_frontier(summaries, tmp_path / "figs" / "frontier.png", reference=True)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    assert not [p for p in out.parent.iterdir() if p.suffix == ".tmp"]


def test_frontier_labels_avoid_the_markers_and_each_other() -> None:
    """Case 4's label must not sit on case 1's marker just to its right (the smoke plot's old flaw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hgbench.report.plot import _place_labels

    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=120)
    ax.set_xlim(0, 0.31)
    ax.set_ylim(-0.4, 2.9)
    labels, xs, ys = ["4", "1", "2", "5"], [0.198, 0.217, 0.103, 0.110], [0.0, 0.0, 2.38, 2.54]
    spots = _place_labels(labels, xs, ys, list(zip(xs, ys, strict=True)), ax)
    to_pt = 72.0 / fig.dpi
    pts = ax.transData.transform(list(zip(xs, ys, strict=True))) * to_pt
    boxes = []
    for (px, py), label, (dx, dy, ha) in zip(pts, labels, spots, strict=True):
        width = 0.6 * 8 * len(label)
        x0 = px + dx if ha == "left" else px + dx - width
        boxes.append((x0, py + dy - 4.8, x0 + width, py + dy + 4.8))
    for i, b in enumerate(boxes):
        for mx, my in pts:
            assert not (b[0] - 5 < mx < b[2] + 5 and b[1] - 5 < my < b[3] + 5), f"label {labels[i]} on a marker"
        for j, q in enumerate(boxes[:i]):
            assert not (b[0] < q[2] and q[0] < b[2] and b[1] < q[3] and q[1] < b[3]), (labels[i], labels[j])
    assert spots[1] == (8.0, 0.0, "left")  # a label with room stays where it always was
    plt.close(fig)


def test_plot_frontier_published_only_and_nothing(tmp_path: Path) -> None:
    out = plot_frontier([], tmp_path / "ref.png", reference=True)
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(HGBenchError, match="no finished run"):
        plot_frontier([], tmp_path / "none.png", reference=False)
    assert not (tmp_path / "none.png").exists()


def test_folder_against_folder_prints_a_line_per_case_first(capsys: pytest.CaptureFixture[str]) -> None:
    """Two result folders: one summary line per case (accuracy and time, each with its verdict), then the tables."""
    from hgbench.cli import main

    assert main(["compare", str(CPU_DIR), str(CPU_DIR)]) == 0
    out = capsys.readouterr().out
    head = out.split("\n\n", 1)[0].splitlines()
    assert [line.split(":", 1)[0] for line in head] == ["case 1", "case 3", "case 5 (as built)"]
    assert all("PCKh B - A" in line and "min/epoch B - A" in line for line in head)
    assert "case 3: PCKh B - A +0.0" in head[1]
