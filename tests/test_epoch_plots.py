"""`hgbench plot --kind curves` and `--kind time`: the data each picture is drawn from, and the files written."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from hgbench import cli
from hgbench.report import curve_series, plot_curves, plot_time, time_bars
from hgbench.run.results import RunSummary, load_records, summarize

CPU_DIR = Path(__file__).parent / "data" / "records" / "cpu-pt2.14.1"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs() -> list[RunSummary]:
    found, _ = load_records([CPU_DIR])
    return found


def test_curves_are_the_mean_and_band_over_a_rows_seeds(runs: list[RunSummary]) -> None:
    series = {(s.label, s.metric): s for s in curve_series(runs)}
    assert {label for label, _ in series} == {"1", "3", "5 (as built)"}  # finished runs only, table rows
    case3 = series[("3", "pckh")]
    seeds = [r for r in runs if r.case == "3"]
    per_epoch = [[e["pckh"] for e in r.epochs] for r in seeds]
    assert case3.runs == 2
    assert case3.epochs == [1, 2, 3]
    assert case3.mean == pytest.approx([sum(v) / 2 for v in zip(*per_epoch, strict=True)])
    assert case3.low == pytest.approx([min(v) for v in zip(*per_epoch, strict=True)])
    assert case3.high == pytest.approx([max(v) for v in zip(*per_epoch, strict=True)])
    assert series[("1", "train_loss")].low == series[("1", "train_loss")].high  # one run: no band


def test_time_bars_split_a_steady_epoch(runs: list[RunSummary]) -> None:
    bars = time_bars(runs).set_index("label")
    case1 = next(r for r in runs if r.case == "1")
    steady = [e for e in case1.epochs if not e["warmup"]]
    row = bars.loc["1"]
    assert row["epochs"] == len(steady)
    assert row["wall_s"] == pytest.approx(sum(e["wall_s"] for e in steady) / len(steady))
    assert row["compute_s"] == pytest.approx(sum(e["compute_s"] for e in steady) / len(steady))
    assert math.isnan(row["device_idle_s"])  # a CPU run has no device clock
    assert row["compute_s"] + row["data_wait_s"] + row["other_s"] == pytest.approx(row["wall_s"])


def test_time_bars_show_gpu_idle_and_clip_the_rest(runs: list[RunSummary]) -> None:
    record = json.loads((CPU_DIR / "0001_case1_seed0.json").read_text())
    for e in record["results"]["epochs"]:
        e["device_idle_s"], e["compute_s"] = 2.0, e["wall_s"]  # overlap: the parts exceed the wall time
    gpu = summarize(copy.deepcopy(record), CPU_DIR / "gpu.json")
    row = time_bars([gpu]).iloc[0]
    assert row["device_idle_s"] == 2.0
    assert row["other_s"] == 0.0


def test_plots_write_pngs(tmp_path: Path, runs: list[RunSummary]) -> None:
    for plot in (plot_curves, plot_time):
        out = plot(runs, tmp_path / "figs" / f"{plot.__name__}.png")
        assert out.read_bytes()[:8] == PNG
    assert not [p for p in (tmp_path / "figs").iterdir() if p.suffix == ".tmp"]


@pytest.mark.parametrize("kind", ["curves", "time"])
def test_plot_command_kinds(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setattr(cli, "command_modules", lambda: ["plot"])
    out_png = tmp_path / f"{kind}.png"
    assert cli.main(["plot", "--kind", kind, "--results", str(CPU_DIR), "--out", str(out_png)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out_png}"
    assert out_png.read_bytes()[:8] == PNG
    assert cli.main(["plot", "--kind", kind, "--results", str(tmp_path)]) == 2  # nothing to draw: one line
    assert "no finished run" in capsys.readouterr().err
