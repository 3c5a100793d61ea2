"""Pictures from a results folder holding two settings: short labels (the case and a setting letter), the settings
in a caption, nothing drawn outside the figure (checked on the rendered artists' boxes), and the table's † footnote
one clause per setting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hgbench.report import comparison_table, epoch_plots, plot, plot_curves, plot_frontier, plot_time  # noqa: F401
from hgbench.report.figures import outside_figure, pyplot
from hgbench.run.results import RunSummary, load_records, summarize

PUBLISHED = Path(__file__).resolve().parents[1] / "results" / "published"


@pytest.fixture(scope="module")
def two_settings() -> list[RunSummary]:
    """The published smoke runs (2 epochs, 12 val people) and the same runs as if of another setting in several
    keys (3 epochs, 18 val people, more training people, a larger batch and input): long setting texts."""
    first, _ = load_records([PUBLISHED])
    first = [r for r in first if r.finished]
    second = []
    for run in first:
        record = json.loads(run.path.read_text())
        record["config"].update(epochs=3, limit_train=48, limit_val=18, batch_size=12, input_res=256, lr=0.001)
        record["dataset"].update(val_size=18, train_size=48)
        second.append(summarize(record, run.path))
    return first + second


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the plot functions would save, kept open for inspection instead of written."""
    kept: list[Any] = []

    def keep(fig: Any, out_png: Any) -> Path:
        kept.append(fig)
        return Path(out_png)

    monkeypatch.setattr(epoch_plots, "save_png", keep)
    monkeypatch.setattr(plot, "save_png", keep)
    yield kept
    for fig in kept:
        pyplot().close(fig)


def _texts(fig: Any) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")) if t.get_text()]


@pytest.mark.parametrize("draw", [plot_curves, plot_time, plot_frontier], ids=["curves", "time", "frontier"])
def test_two_settings_draw_short_labels_a_caption_and_nothing_clipped(
    draw: Any, two_settings: list[RunSummary], figures: list[Any], tmp_path: Path
) -> None:
    draw(two_settings, tmp_path / "x.png")
    (fig,) = figures
    assert outside_figure(fig) == []
    texts = _texts(fig)
    assert any("] batch_size=6, epochs=2, input_res=128" in t for t in texts)
    assert any("] batch_size=12, epochs=3, input_res=256" in t for t in texts)
    assert not any("..." in t for t in texts)  # wrapped, never cut
    if draw is not plot_frontier:
        assert "5 [B]" in texts


def test_outside_figure_finds_a_clipped_text() -> None:
    fig = pyplot().figure(figsize=(2, 2))
    fig.text(0.9, 0.5, "too long to fit")
    try:
        assert outside_figure(fig) == ["too long to fit"]
    finally:
        pyplot().close(fig)


def test_the_smoke_footnote_says_each_settings_reasons_apart(two_settings: list[RunSummary]) -> None:
    (note,) = [n for n in comparison_table(two_settings).attrs["notes"] if n.startswith("† smoke accuracy")]
    assert "2 epochs, 12 val people where batch_size=6, epochs=2" in note
    assert "3 epochs, 18 val people where batch_size=12, epochs=3" in note


def test_curves_colour_each_case_once_and_dash_each_setting(
    two_settings: list[RunSummary], figures: list[Any], tmp_path: Path
) -> None:
    plot_curves(two_settings, tmp_path / "x.png")
    (fig,) = figures
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert {"5 [A]", "5 [B]", "7 [A]", "7 [B]"} <= set(lines)
    # One case, two settings: one colour, two line styles; two cases of one setting: two colours.
    assert lines["5 [A]"].get_color() == lines["5 [B]"].get_color()
    assert lines["5 [A]"].get_linestyle() != lines["5 [B]"].get_linestyle()
    colours = {tuple(lines[f"{case} [A]"].get_color()) for case in ("1", "2", "3", "4", "5", "6", "7", "8")}
    assert len(colours) == 8


def test_the_accuracy_curve_says_it_is_scored_without_the_flip_test(
    two_settings: list[RunSummary], figures: list[Any], tmp_path: Path
) -> None:
    """An epoch's validation is the plain pass, the table's and frontier's figure the final flip-test pass: a curve
    that ends below the table's figure must say why (tests/test_runner.py checks the plain pass is what it plots)."""
    plot_curves(two_settings, tmp_path / "x.png")
    (fig,) = figures
    assert [ax.get_title() for ax in fig.axes if "PCKh" in ax.get_title()] == ["PCKh@0.5 Mean (%), no flip test"]
