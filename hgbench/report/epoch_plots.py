"""Per-epoch pictures of the runs: learning curves (`hgbench plot --kind curves`) and where an epoch's time goes
(`hgbench plot --kind time`).

Both read ``results.epochs`` of finished runs, grouped into the comparison table's rows (`group_runs`: runs that
differ only by seed). The figures are computed first (`curve_series`, `time_bars`: plain data a test can check) and
drawn after, so what a picture shows is what these functions return.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hgbench.errors import HGBenchError
from hgbench.report.figures import (
    CAPTION_PT,
    caption_height,
    caption_text,
    curve_styles,
    pyplot,
    save_png,
    setting_keys,
    short_label,
)
from hgbench.report.table import _case_order, group_runs
from hgbench.run.results import RunSummary
from hgbench.spec.cases import case_label

# (record key, axis title) of the curves, one panel each. An epoch's validation is scored without the flip test,
# while the table and the frontier show the final pass (with it by default), so the panel says which it is: a case
# whose curve ends below its table figure is not a bug.
CURVE_METRICS: tuple[tuple[str, str], ...] = (
    ("train_loss", "train loss"),
    ("val_loss", "validation loss"),
    ("pckh", "PCKh@0.5 Mean (%), no flip test"),
)
# (column, legend) of an epoch's time, bottom to top of the stacked bar.
TIME_PARTS: tuple[tuple[str, str], ...] = (
    ("compute_s", "compute"),
    ("data_wait_s", "data wait"),
    ("device_idle_s", "device idle (GPU)"),
    ("other_s", "rest of the wall time"),
)


@dataclass
class CurveSeries:
    """One row's curve of one metric: the mean over its runs per epoch, and the band between their min and max."""

    label: str  # the row: case (and setting or device where rows differ in them)
    metric: str  # a key of `CURVE_METRICS`
    epochs: list[int]
    mean: list[float]
    low: list[float]  # min over runs (the mean itself for one run)
    high: list[float]  # max over runs
    runs: int  # runs in the row (seeds)


def _row_groups(finished: Sequence[RunSummary]) -> tuple[list[tuple[str, list[RunSummary]]], dict[str, str]]:
    """The table's rows as (short label, runs), in case order, and the letter of each setting (device included where
    rows span devices) when there are several: ``5 [B]``, the caption saying what B is (`hgbench.report.figures`)."""
    grouped = group_runs(finished)
    devices = {key[2] for key in grouped.groups}
    items = sorted(grouped.groups.items(), key=lambda kv: (_case_order(kv[0][0]), kv[0][1], kv[0][2], kv[0][3]))

    def setting_of(key: tuple[str, bool, str, str]) -> str:
        return "; ".join(t for t in (key[3], key[2] if len(devices) > 1 else "") if t)

    keys = setting_keys([setting_of(key) for key, _ in items])
    rows = [(short_label(case_label(k[0], k[1], short=True), setting_of(k), keys), runs) for k, runs in items]
    return rows, keys


def _row_labels(finished: Sequence[RunSummary]) -> list[tuple[str, list[RunSummary]]]:
    """The table's rows as (short label, runs), in case order (`_row_groups`)."""
    return _row_groups(finished)[0]


def curve_series(summaries: Iterable[RunSummary]) -> list[CurveSeries]:
    """Per table row and metric, the per-epoch mean and min-max band over the row's runs (finished runs only).

    An epoch whose value is missing (null) in every run of the row is left out of that series.
    """
    out = []
    for label, runs in _row_labels([r for r in summaries if r.finished]):
        for metric, _ in CURVE_METRICS:
            by_epoch: dict[int, list[float]] = {}
            for run in runs:
                for entry in run.epochs:
                    value, epoch = entry.get(metric), entry.get("epoch")
                    if isinstance(epoch, int) and isinstance(value, (int, float)) and math.isfinite(value):
                        by_epoch.setdefault(epoch, []).append(float(value))
            if not by_epoch:
                continue
            epochs = sorted(by_epoch)
            values = [by_epoch[e] for e in epochs]
            out.append(
                CurveSeries(
                    label=label,
                    metric=metric,
                    epochs=epochs,
                    mean=[sum(v) / len(v) for v in values],
                    low=[min(v) for v in values],
                    high=[max(v) for v in values],
                    runs=len(runs),
                )
            )
    return out


def _steady(run: RunSummary) -> list[dict]:
    """The run's epochs without the warm-up one (all of them when that is all there is), as the record's summary."""
    return [e for e in run.epochs if not e.get("warmup")] or list(run.epochs)


def _mean_of(entries: Sequence[dict], key: str) -> float:
    values = [float(e[key]) for e in entries if isinstance(e.get(key), (int, float))]
    return sum(values) / len(values) if values else math.nan


def time_bars(summaries: Iterable[RunSummary]) -> pd.DataFrame:
    """Per table row, the mean seconds of one steady training epoch split into compute, data wait, device idle (GPU
    runs; NaN on the CPU, which has no device clock) and the rest of the wall time (clipped at 0).

    The parts are measured separately (`hgbench.train.training`): compute on the device's clock, data wait on the
    host's, device idle as the GPU's gaps between steps; on a GPU some data wait overlaps device idle, so the rest is
    what none of them covers.

    Returns:
        Columns ``label, runs, epochs, wall_s`` and those of `TIME_PARTS`, one row per table row with epochs.
    """
    rows = []
    for label, runs in _row_labels([r for r in summaries if r.finished]):
        entries = [e for run in runs for e in _steady(run)]
        if not entries:
            continue
        wall, compute, wait = (_mean_of(entries, k) for k in ("wall_s", "compute_s", "data_wait_s"))
        idle = _mean_of(entries, "device_idle_s")
        covered = sum(v for v in (compute, wait, idle) if not math.isnan(v))
        rows.append(
            {
                "label": label,
                "runs": len(runs),
                "epochs": len(entries),
                "wall_s": wall,
                "compute_s": compute,
                "data_wait_s": wait,
                "device_idle_s": idle,
                "other_s": max(0.0, wall - covered) if not math.isnan(wall) else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=["label", "runs", "epochs", "wall_s", *(c for c, _ in TIME_PARTS)])


def plot_curves(summaries: Iterable[RunSummary], out_png: str | Path) -> Path:
    """Write a PNG of train loss, validation loss and PCKh per epoch: one line per row, seeds as a min-max band.

    Raises:
        HGBenchError: no finished run has per-epoch figures, or matplotlib is missing.
    """
    series = curve_series(summaries)
    if not series:
        raise HGBenchError("no finished run has per-epoch figures to plot")
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    width = 4.6 * len(CURVE_METRICS)
    caption = caption_text(_row_groups([r for r in summaries if r.finished])[1], width)
    labels = list(dict.fromkeys(s.label for s in series))
    legend_rows = math.ceil(len(labels) / 6)
    legend_h = 0.35 + 0.2 * legend_rows  # inches: its title and one line of 8-point entries per row
    height = 4.0 + legend_h + caption_height(caption)
    fig, axes = plt.subplots(1, len(CURVE_METRICS), figsize=(width, height), dpi=110)
    style = curve_styles(labels, plt.get_cmap("tab10"))
    for ax, (metric, title) in zip(axes, CURVE_METRICS, strict=True):
        for s in (s for s in series if s.metric == metric):
            colour, line = style[s.label]
            ax.plot(s.epochs, s.mean, marker="o", ms=3, lw=1.4, color=colour, ls=line, label=s.label)
            if s.runs > 1:
                ax.fill_between(s.epochs, s.low, s.high, color=colour, alpha=0.18, lw=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if metric != "pckh":
            ax.set_yscale("log")
    handles, names = axes[0].get_legend_handles_labels()
    below = (caption_height(caption) + 0.08) / height  # the legend sits on the caption
    fig.legend(
        handles,
        names,
        loc="lower center",
        bbox_to_anchor=(0.5, below),
        ncol=min(len(names), 6),
        fontsize=8,
        frameon=False,
        title="case",
    )
    _caption(fig, caption)
    fig.suptitle("Learning curves (line: mean over seeds; band: min to max over seeds)", fontsize=11)
    fig.tight_layout(rect=(0, below + legend_h / height, 1, 1 - 0.4 / height))
    return save_png(fig, out_png)


def _caption(fig: Any, caption: str) -> None:
    """The settings' key under the figure, left-aligned (`hgbench.report.figures.caption_text`)."""
    if caption:
        fig.text(0.01, 0.01, caption, ha="left", va="bottom", fontsize=CAPTION_PT, color="0.3")


def plot_time(summaries: Iterable[RunSummary], out_png: str | Path) -> Path:
    """Write a PNG of one stacked horizontal bar per row: a steady epoch's seconds by where they went (`time_bars`).

    Raises:
        HGBenchError: no finished run has per-epoch times, or matplotlib is missing.
    """
    bars = time_bars(summaries)
    if bars.empty:
        raise HGBenchError("no finished run has per-epoch times to plot")
    plt = pyplot()
    caption = caption_text(_row_groups([r for r in summaries if r.finished])[1], 8.0)
    height = 1.6 + 0.42 * len(bars) + caption_height(caption)
    fig, ax = plt.subplots(figsize=(8.0, height), dpi=110)
    y = list(range(len(bars)))[::-1]  # first row on top
    left = [0.0] * len(bars)
    colours = {"compute_s": "#4c72b0", "data_wait_s": "#dd8452", "device_idle_s": "#c44e52", "other_s": "#bbbbbb"}
    for column, name in TIME_PARTS:
        values = bars[column].fillna(0.0).tolist()
        if column == "device_idle_s" and bars[column].isna().all():
            continue  # no GPU run: no device clock, nothing to show
        ax.barh(y, values, left=left, color=colours[column], label=name, height=0.6)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(y, bars["label"].tolist(), fontsize=8)
    ax.set_ylabel("case")
    ax.set_xlabel("seconds per training epoch (steady epochs, mean over epochs and seeds)")
    ax.set_xlim(0, 1.05 * max(max(left), 1e-9))
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(TIME_PARTS), fontsize=8, frameon=False)
    fig.suptitle("Where an epoch's time goes", fontsize=11)
    _caption(fig, caption)
    fig.tight_layout(rect=(0, (caption_height(caption) + 0.05) / height, 1, 1))
    return save_png(fig, out_png)


PLOTS: dict[str, Any] = {"curves": plot_curves, "time": plot_time}
