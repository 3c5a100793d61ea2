"""The frontier plot: validation accuracy against training minutes per epoch, one panel per device and setting.

Needs matplotlib (imported only when a plot is drawn). Each panel has its own axes; the same case keeps its colour
across panels, and labels are placed clear of the markers and of each other.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hgbench.errors import HGBenchError
from hgbench.report.figures import CAPTION_PT, caption_height, caption_text, pyplot, save_png, setting_keys
from hgbench.report.render import _fmt_case
from hgbench.report.table import SMOKE_MARK, _case_order, comparison_table, group_runs, smoke_reasons
from hgbench.run.results import RunSummary
from hgbench.spec.cases import PUBLISHED, list_cases


# -------------------------------------------------------------------------------------------------------- plot
def _pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The accuracy/cost frontier: points no other point beats on both time (lower) and accuracy (higher)."""
    front: list[tuple[float, float]] = []
    best = -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _merge_close(
    labels: Sequence[str], xs: Sequence[float], ys: Sequence[float], ax: Any, within_pt: float = 5.0
) -> tuple[list[str], list[float], list[float]]:
    """One label ("4, 6") for markers drawn on top of each other, placed at the group's highest point."""
    to_pt = 72.0 / ax.figure.dpi
    disp = ax.transData.transform(list(zip(xs, ys, strict=True))) * to_pt
    groups: list[list[int]] = []
    for i in sorted(range(len(xs)), key=lambda i: (disp[i][1], disp[i][0])):
        for g in groups:
            j = g[-1]
            if abs(disp[i][0] - disp[j][0]) < within_pt and abs(disp[i][1] - disp[j][1]) < within_pt:
                g.append(i)
                break
        else:
            groups.append([i])
    out = [(", ".join(labels[i] for i in sorted(g, key=lambda i: labels[i])), xs[g[-1]], ys[g[-1]]) for g in groups]
    return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]


def _place_labels(
    labels: Sequence[str],
    xs: Sequence[float],
    ys: Sequence[float],
    markers: Sequence[tuple[float, float]],
    ax: Any,
    *,
    font_pt: float = 8.0,
    marker_pt: float = 5.0,
) -> list[tuple[float, float, str]]:
    """Where each label goes, as (dx, dy, ha) in points from its marker: clear of every marker and placed label.

    Labels are placed bottom to top; each takes the first free spot of: right, right and up, right and down, left,
    then further up or down on either side. A spot is free when the label's box (about 0.6 em per character) misses
    every marker's square (half-side `marker_pt`) and every label placed before it; with no free spot the label
    goes right, as before.
    """
    to_pt = 72.0 / ax.figure.dpi
    pts = ax.transData.transform(list(zip(xs, ys, strict=True))) * to_pt
    obstacles = [tuple(m) for m in ax.transData.transform(list(markers)) * to_pt] if markers else []
    half_h = 0.6 * font_pt
    gap = 8.0
    step = 2 * half_h + 1.0
    placed: list[tuple[float, float, float, float]] = []  # x0, y0, x1, y1 of labels placed so far

    def box(i: int, dx: float, dy: float, ha: str) -> tuple[float, float, float, float]:
        width = 0.6 * font_pt * len(labels[i])
        x, y = pts[i][0] + dx, pts[i][1] + dy
        x0 = x if ha == "left" else x - width
        return x0, y - half_h, x0 + width, y + half_h

    def free(b: tuple[float, float, float, float]) -> bool:
        hits_marker = any(
            b[0] - marker_pt < mx < b[2] + marker_pt and b[1] - marker_pt < my < b[3] + marker_pt
            for mx, my in obstacles
        )
        hits_label = any(b[0] < q[2] and q[0] < b[2] and b[1] < q[3] and q[1] < b[3] for q in placed)
        return not hits_marker and not hits_label

    spots = [
        (gap, 0.0, "left"),
        (gap, step, "left"),
        (gap, -step, "left"),
        (-gap, 0.0, "right"),
        (gap, 2 * step, "left"),
        (gap, -2 * step, "left"),
        (-gap, step, "right"),
        (-gap, -step, "right"),
        (gap, 3 * step, "left"),
        (-gap, 2 * step, "right"),
    ]
    out: list[tuple[float, float, str]] = [spots[0]] * len(labels)
    for i in sorted(range(len(labels)), key=lambda i: (pts[i][1], pts[i][0])):
        choice = next((s for s in spots if free(box(i, *s))), spots[0])
        placed.append(box(i, *choice))
        out[i] = choice
    return out


def _panel_setting(runs: Sequence[RunSummary]) -> str:
    """What a panel's runs were trained on (data, epochs, batch, input), so synthetic accuracy is not read as MPII's."""

    def one(values: set) -> str:
        return "/".join(map(str, sorted(values, key=str)))

    data = one({r.dataset or "?" for r in runs})
    people = one({r.dataset_info.get("train_size", "?") for r in runs})
    epochs = one({r.config.get("epochs", "?") for r in runs})
    batch = one({r.config.get("batch_size", "?") for r in runs})
    res = one({r.config.get("input_res", "?") for r in runs})
    smoke = f"{SMOKE_MARK} smoke accuracy: " if any(smoke_reasons(r) for r in runs) else ""
    return f"{smoke}{data} data ({people} train) · {epochs} epochs · batch {batch} · {res} px"


@dataclass
class FrontierPanel:
    """One panel of our runs in the frontier plot: one device and one setting, so its frontier joins only those."""

    device: str  # GPU name or "CPU: <model>"
    setting: str  # the setting text of its rows (`group_runs`); "" when every run shares one setting
    rows: pd.DataFrame  # its `comparison_table` rows that have both an accuracy and a time
    runs: list[RunSummary]  # the finished runs behind those rows


def frontier_panels(finished: Sequence[RunSummary]) -> tuple[list[FrontierPanel], list[str]]:
    """Our panels of the frontier plot, one per (device, setting), and the rows left out (no accuracy or time).

    A frontier line joining a 2-epoch, 24-image point to a 6-epoch, 240-image one would read as a trade-off between
    cases when it is a difference of settings: each setting gets its own panel and line.
    """
    df = comparison_table(finished, reference=False)
    drawable = df["pckh_mean"].notna() & df["min_per_epoch"].notna()
    left_out = [f"{_fmt_case(r)} on {r['device']}" for _, r in df[~drawable].iterrows()]
    texts = group_runs(finished).texts
    panels = []
    for (device, setting), rows in df[drawable].groupby(["device", "setting"], sort=True):
        runs = [r for r in finished if r.device == device and texts[id(r)] == setting]
        panels.append(FrontierPanel(device=str(device), setting=str(setting), rows=rows, runs=runs))
    return panels, left_out


def plot_frontier(summaries: Iterable[RunSummary], out_png: str | Path, *, reference: bool = True) -> Path:
    """Write a PNG of validation accuracy (PCKh@0.5 Mean) against training minutes per epoch, one point per case.

    One panel per device and setting of our finished runs (`frontier_panels`), and (with `reference`) one for the
    published figures: they were measured on different hardware or settings (and perhaps data), so each panel has
    its own axes and the same case keeps the same colour across panels; read the *shape* of the frontier across
    panels, not absolute positions. Hollow markers are as-built forms; the dashed line joins the points no other
    point in the panel beats on both time and accuracy. The vertical bars are the accuracy's 95% interval over
    validation people (`accuracy_error`), horizontal ones the spread of minutes over runs.

    Args:
        summaries: run summaries (only finished runs with both figures are drawn).
        out_png: the PNG to write (atomically; its folder is created).
        reference: draw the published panel.

    Returns:
        The PNG's path.

    Raises:
        HGBenchError: nothing to draw, or matplotlib is missing.
    """
    plt = pyplot()
    summaries = [r for r in summaries if r.finished]
    ours, left_out = frontier_panels(summaries)
    panels: list[FrontierPanel | None] = [*ours, *([None] if reference else [])]  # None: the published panel
    if not panels:
        raise HGBenchError("no finished run has both an accuracy and a time to plot")
    colour = _case_colours(summaries, plt.get_cmap("tab10"), reference=reference)
    keys = setting_keys([p.setting for p in ours])  # one letter per setting; the caption says what each is
    caption = caption_text(keys, 5.2 * len(panels))

    height = 4.8 + caption_height(caption)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), height), squeeze=False, dpi=120)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel is None:
            xs, ys, labels, xerr = _draw_published(ax, colour)
        else:
            xs, ys, labels, xerr = _draw_ours(ax, panel, colour, keys)
        _finish_panel(fig, ax, xs, ys, labels, xerr)
    _add_footer(fig, len(panels), left_out, caption, height)
    return save_png(fig, out_png)


def accuracy_error(rows: pd.DataFrame) -> list[list[float]]:
    """Asymmetric vertical error bars [[below...], [above...]]: the 95% interval over people where the row has one,
    else the standard deviation over seeds (0 where neither)."""
    below, above = [], []
    for _, r in rows.iterrows():
        low, high, y = r.get("pckh_mean_ci95_low"), r.get("pckh_mean_ci95_high"), r["pckh_mean"]
        if not (pd.isna(low) or pd.isna(high)):
            below.append(max(0.0, y - low))
            above.append(max(0.0, high - y))
        else:
            std = 0.0 if pd.isna(r.get("pckh_mean_std")) else float(r["pckh_mean_std"])
            below.append(std)
            above.append(std)
    return [below, above]


def _case_colours(summaries: Sequence[RunSummary], cmap: Any, *, reference: bool) -> dict[str, Any]:
    """One colour per case drawn (registry order, then unknown cases), so a case keeps its colour across panels."""
    measured = {r.case for r in summaries}
    cases = [c for c in list_cases() if c in measured or (reference and c in PUBLISHED)]
    cases += sorted(measured - set(cases), key=_case_order)
    return {c: cmap(i % 10) for i, c in enumerate(cases)}


def _draw_published(ax: Any, colour: dict[str, Any]) -> tuple[list[float], list[float], list[str], list[float]]:
    """The published panel's points and titles; returns its xs, ys, labels and x errors (none)."""
    xs = [p.min_per_epoch for p in PUBLISHED.values()]
    ys = [p.val_acc for p in PUBLISHED.values()]
    labels, xerr = list(PUBLISHED), [0.0] * len(xs)
    ax.scatter(
        xs,
        ys,
        marker="s",
        s=46,
        c=[colour[c] for c in labels],
        edgecolors="black",
        linewidths=0.6,
        zorder=3,
        label="published (Quadro RTX 6000)",
    )
    ax.set_title("published (Quadro RTX 6000, PyTorch 1.8.1)", fontsize=10)
    ax.set_ylabel("validation accuracy, as published (%)")
    ax.text(0.98, 0.02, "MPII · 50 epochs · batch 6", ha="right", transform=ax.transAxes, fontsize=7.5, color="0.35")
    return xs, ys, labels, xerr


def _draw_ours(
    ax: Any, panel: FrontierPanel, colour: dict[str, Any], keys: dict[str, str]
) -> tuple[list[float], list[float], list[str], list[float]]:
    """One panel of our runs (error bars, hollow as-built markers) and its titles; returns xs, ys, labels, x errors."""
    rows = panel.rows
    xs, ys = rows["min_per_epoch"].tolist(), rows["pckh_mean"].tolist()
    labels = [str(c) + ("ab" if ab else "") for c, ab in zip(rows["case"], rows["as_built"], strict=True)]
    xerr = rows["min_per_epoch_std"].fillna(0).tolist()
    below, above = accuracy_error(rows)
    for x, y, xe, lo, hi, case, h in zip(xs, ys, xerr, below, above, rows["case"], rows["as_built"], strict=True):
        ax.errorbar(
            x,
            y,
            xerr=xe or None,
            yerr=[[lo], [hi]] if lo or hi else None,
            fmt="o",
            ms=7,
            color=colour[case],
            ecolor="0.5",
            elinewidth=0.8,
            capsize=2,
            mfc="white" if h else colour[case],
            mew=1.4,
            zorder=3,
        )
    # Wrapped, never cut: the setting is its caption letter where panels differ in it, else said in full.
    title = textwrap.fill(f"ours: {panel.device}", width=50)
    setting = f"setting [{keys[panel.setting]}]" if panel.setting in keys else textwrap.fill(panel.setting, width=60)
    ax.set_title(f"{title}\n{setting}" if setting else title, fontsize=10 if not setting else 9)
    ax.set_ylabel("validation accuracy, PCKh@0.5 Mean (%)")
    ax.text(0.98, 0.02, _panel_setting(panel.runs), ha="right", transform=ax.transAxes, fontsize=7.5, color="0.35")
    return xs, ys, labels, xerr


def _finish_panel(fig: Any, ax: Any, xs: list[float], ys: list[float], labels: list[str], xerr: list[float]) -> None:
    """A panel's x label, frontier line, grid and limits, then its point labels placed clear of each other."""
    ax.set_xlabel("training minutes per epoch")
    front = _pareto(list(zip(xs, ys, strict=True)))
    if len(front) > 1:
        ax.plot(*zip(*front, strict=True), ls="--", lw=1, color="0.55", zorder=2)
    ax.grid(True, alpha=0.3)
    ax.margins(y=0.15)
    # Time from zero: a 3% faster epoch looks 3% shorter, as it is; the right edge leaves room for labels.
    ax.set_xlim(0, 1.15 * max(x + e for x, e in zip(xs, xerr, strict=True)) or 1.0)
    fig.canvas.draw()  # labels are placed in display space, which needs the final limits
    markers = list(zip(xs, ys, strict=True))
    labels, xs, ys = _merge_close(labels, xs, ys, ax)
    spots = _place_labels(labels, xs, ys, markers, ax)
    for label, x, y, (dx, dy, ha) in zip(labels, xs, ys, spots, strict=True):
        leader = {"arrowstyle": "-", "color": "0.6", "lw": 0.5} if dy else None  # a moved label points home
        ax.annotate(
            label,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            fontsize=8,
            zorder=4,
            ha=ha,
            va="center",
            arrowprops=leader,
        )


def _add_footer(fig: Any, n_panels: int, left_out: Sequence[str], caption: str, height: float) -> None:
    """The figure's title and the wrapped key under the panels, then the layout that leaves room for both."""
    notes = [
        "numbers: case; 'ab' and hollow markers: as built",
        "dashed: frontier (nothing is both faster and more accurate)",
        "vertical bars: 95% interval over validation people (seed std where a record has none)",
    ]
    if n_panels > 1:
        notes.append("each panel has its own axes: different hardware or setting")
    if left_out:
        notes.append("not drawn (no accuracy or time): " + ", ".join(left_out[:4]))
    fig.suptitle("Stacked Hourglass variants: accuracy against training cost", fontsize=12)
    # About 85 characters of 7.5-point text fit under one 5.2-inch panel: wrap so a one-panel figure keeps it all.
    footer = textwrap.fill(" · ".join(notes), width=85 * n_panels)
    if caption:
        fig.text(0.01, 0.01, caption, ha="left", va="bottom", fontsize=CAPTION_PT, color="0.3")
    bottom = (caption_height(caption) + 0.1) / height  # the footer sits on the settings' caption
    fig.text(0.5, bottom, footer, ha="center", va="bottom", fontsize=7.5, color="0.35")
    footer_h = caption_height(footer) / height
    fig.tight_layout(rect=(0, bottom + footer_h + 0.01, 1, 0.97))
