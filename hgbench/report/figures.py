"""What every picture of the reporter shares: matplotlib on Agg, atomic PNG writing, short row labels with the
settings in a caption, and the check that nothing drawn falls outside the figure.

Rows of several settings (or devices) are labelled by their case and a letter (``5 [B]``), and a caption under the
figure says what each letter stands for, wrapped to the figure's width: a label such as ``5 (epochs=2,
fingerprint=91d42588, input_res=128, limit_train=24, ...)`` would squeeze the bars or cut the legend off.
"""

from __future__ import annotations

import io
import string
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hgbench.errors import HGBenchError
from hgbench.run.results import write_bytes_atomic

CAPTION_PT = 7.5  # the caption's font size
_CHAR_IN = 0.6 * CAPTION_PT / 72  # about one character's width at that size, inches


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed).

    Raises:
        HGBenchError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise HGBenchError("`hgbench plot` needs matplotlib: pip install matplotlib") from None
    return plt


def outside_figure(fig: Any) -> list[str]:
    """What `fig` draws outside itself (clipped in the PNG): each axes with its titles, tick and axis labels and
    legend (their tight box, as drawn), each figure-level text and legend; a short description of each."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    parts = [(f"axes {ax.get_title() or i}", ax.get_tightbbox(renderer)) for i, ax in enumerate(fig.axes)]
    parts += [(t.get_text(), t.get_window_extent(renderer)) for t in fig.texts if t.get_visible() and t.get_text()]
    if fig._suptitle is not None and fig._suptitle.get_text():
        parts.append((fig._suptitle.get_text(), fig._suptitle.get_window_extent(renderer)))
    parts += [("legend", legend.get_window_extent(renderer)) for legend in fig.legends]
    return [
        name[:40]
        for name, e in parts
        if e is not None and (e.x0 < box.x0 - 1 or e.y0 < box.y0 - 1 or e.x1 > box.x1 + 1 or e.y1 > box.y1 + 1)
    ]


def save_png(fig: Any, out_png: str | Path) -> Path:
    """Write a figure as PNG atomically (its folder is created) and close it."""
    out = Path(out_png)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    pyplot().close(fig)
    write_bytes_atomic(out, buf.getvalue())
    return out


def setting_keys(settings: Sequence[str]) -> dict[str, str]:
    """A letter per distinct setting text (first seen first), or {} when the rows share one setting."""
    distinct = list(dict.fromkeys(settings))
    if len(distinct) < 2:
        return {}
    letters = string.ascii_uppercase
    return {s: letters[i] if i < len(letters) else str(i + 1) for i, s in enumerate(distinct)}


def short_label(case_text: str, setting: str, keys: dict[str, str]) -> str:
    """``5`` or ``5 [B]``: the case, and the setting's letter where rows have several settings."""
    return f"{case_text} [{keys[setting]}]" if setting in keys else case_text


_LINE_STYLES = ("-", "--", ":", "-.")


def curve_styles(labels: Sequence[str], palette: Any) -> dict[str, tuple[Any, str]]:
    """A (colour, line style) per row label: the colour says the case, the line style the setting's letter.

    Colouring each of ``5 [A]`` and ``5 [B]`` on its own would run a ten-colour palette out at five cases of two
    settings and hand two different cases one colour; one colour per case keeps a case's settings side by side.
    """
    parts = {label: label.partition(" [")[::2] for label in labels}  # (case, setting letter) back from short_label
    cases = list(dict.fromkeys(case for case, _ in parts.values()))
    letters = list(dict.fromkeys(letter for _, letter in parts.values()))
    return {
        label: (palette(cases.index(case) % palette.N), _LINE_STYLES[letters.index(letter) % len(_LINE_STYLES)])
        for label, (case, letter) in parts.items()
    }


def caption_text(keys: dict[str, str], width_in: float) -> str:
    """What each letter stands for, one setting per line, each wrapped to the figure's width."""
    per_line = max(40, int(width_in / _CHAR_IN) - 4)
    lines = [textwrap.fill(f"[{k}] {s or 'the rest'}", width=per_line) for s, k in keys.items()]
    return "\n".join(lines)


def caption_height(text: str) -> float:
    """The caption's height in inches (lines of `CAPTION_PT` text, with leading)."""
    return 0 if not text else (text.count("\n") + 1) * CAPTION_PT * 1.3 / 72
