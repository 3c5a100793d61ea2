"""Run comparison: two runs, or two sets of runs, side by side per metric, with deltas and Welch's t-test.

Run comparison (`compare_runs`) CSV columns: ``group, metric, a_mean, a_std, a_n, b_mean, b_std, b_n, delta,
delta_pct, delta_ci95_low, delta_ci95_high, p_value, p_note, significant`` (delta = B - A, delta_pct relative to A;
p_value from Welch's t-test, `scipy.stats.ttest_ind(equal_var=False)`, and p_note says which test or why none;
significant: p < 0.05 and, for a timing, a change of 5% or more, `TIMING_CAVEAT`; empty untested).

Beside the Welch test over seeds, each group gets a ``PCKh@0.5 Mean, paired`` row: a paired bootstrap
(`hgbench.eval.metrics.paired_pckh_bootstrap`) that draws the same validation people for both sides, with the
difference's 95% interval (``delta_ci95_low/high``) and p-value; significant when the interval leaves out 0 ("no
detectable difference" when it covers 0). It needs both sides to have scored the same people: the same dataset
fingerprint and validation selection, and per-person PCKh in every record; otherwise its p_note says why not.
That bootstrap holds the trained networks fixed: it measures how much the score depends on which people were
drawn, not how much training itself varies. Where both sides ran two or more of the same seeds, a ``PCKh@0.5 Mean,
paired by seed`` row adds the test of the *setting*: a paired t-test (`scipy.stats.ttest_rel`) over the per-seed
differences (one seed gives both sides the same initial weights and data order), with its 95% interval.
`hgbench.report.compare_view` renders the frame for the terminal (`compare_rich_table`), with a one-line-per-case
summary first (`compare_summary`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from hgbench.errors import HGBenchError
from hgbench.eval.metrics import PairedBootstrap, paired_pckh_bootstrap
from hgbench.report.table import _case_order, _mean_std, _values
from hgbench.run.results import RunSummary
from hgbench.spec.cases import case_label

COMPARE_COLUMNS: tuple[str, ...] = (
    "group",
    "metric",
    "a_mean",
    "a_std",
    "a_n",
    "b_mean",
    "b_std",
    "b_n",
    "delta",
    "delta_pct",
    "delta_ci95_low",
    "delta_ci95_high",
    "p_value",
    "p_note",
    "significant",
)

# Metrics of `hgbench compare`, with their labels; the two tested ones get a Welch p-value where possible.
COMPARE_METRICS: dict[str, str] = {
    "min_per_epoch": "min/epoch",
    "data_wait_pct": "data-wait %",
    "pckh_mean": "PCKh@0.5 Mean",
    "heatmap_acc": "heatmap acc",
    "inference_min": "inference min",
    "inference_device_min": "inference GPU compute min",
    "images_per_s": "images/s",
    "energy_j_per_epoch": "energy J/epoch",
}
TESTED_METRICS: tuple[str, ...] = ("pckh_mean", "min_per_epoch")
PAIRED_METRIC = "PCKh@0.5 Mean, paired"  # the paired bootstrap's row
SEED_PAIRED_METRIC = "PCKh@0.5 Mean, paired by seed"  # the paired t-test's row (2+ seeds run on both sides)
NO_DIFFERENCE = "no detectable difference"

# A difference is called significant at p < SIGNIFICANCE_P; a timing also needs a change of TIMING_MIN_EFFECT_PCT or
# more, because timings on one machine are not independent draws: load from other processes shifts whole runs, so two
# seeds of one config can differ by a few percent with a low p and no difference in the code.
SIGNIFICANCE_P = 0.05
TIMING_MIN_EFFECT_PCT = 5.0
TIMING_METRICS: frozenset[str] = frozenset({"min_per_epoch"})
TIMING_CAVEAT = (
    "What a timing p-value means: it says that A's and B's minutes differ by more than the spread within each side. "
    "It cannot say why: on a shared or busy machine, other processes' load shifts whole runs, so a low p between "
    "two seeds of one config is noise of the machine, not a speed difference of the code. A timing counts as "
    f"different here only with p < {SIGNIFICANCE_P} and a change of {TIMING_MIN_EFFECT_PCT:.0f}% or more; to "
    "measure a small one, alternate A and B runs on an idle machine."
)


# ------------------------------------------------------------------------------------------------------ compare
def _by_case(runs: Iterable[RunSummary]) -> dict[tuple[str, bool], list[RunSummary]]:
    out: dict[tuple[str, bool], list[RunSummary]] = {}
    for run in runs:
        out.setdefault((run.case, run.as_built), []).append(run)
    return out


def _group_label(key: tuple[str, bool]) -> str:
    return case_label(*key)


def _welch(metric: str, a: Sequence[RunSummary], b: Sequence[RunSummary]) -> tuple[float | None, str]:
    """Welch's t-test between the sides' per-run values (per-epoch times for min/epoch with single runs)."""
    if metric not in TESTED_METRICS:
        return None, "not tested"
    xa, xb, unit = _values(a, metric), _values(b, metric), "per-seed values"
    if metric == "min_per_epoch" and (len(xa) < 2 or len(xb) < 2):  # one run a side: compare its epochs
        ea = [m for r in a for m in r.epoch_minutes]
        eb = [m for r in b for m in r.epoch_minutes]
        if len(ea) >= 2 and len(eb) >= 2:  # pytest-benchmark style: per-iteration times when both sides kept them
            xa, xb, unit = ea, eb, "per-epoch times"
    if len(xa) < 2 or len(xb) < 2:
        return None, f"needs 2+ seeds per side (A has {len(xa)}, B has {len(xb)})"
    if len(set(xa)) == 1 and len(set(xb)) == 1:  # scipy would warn and answer NaN
        return None, f"no variance on either side ({unit} {len(xa)} vs {len(xb)})"
    from scipy.stats import ttest_ind  # imported here: scipy.stats costs about a second

    result = ttest_ind(xa, xb, equal_var=False)
    p = float(result.pvalue)
    if math.isnan(p):
        return None, f"no variance on either side ({unit} {len(xa)} vs {len(xb)})"
    return p, f"Welch t-test on {unit}, {len(xa)} vs {len(xb)}"


def _paired(a: Sequence[RunSummary], b: Sequence[RunSummary]) -> tuple[PairedBootstrap | None, str]:
    """The paired bootstrap of B - A over the validation people, or None and why it is not available."""
    lacking = [r.run_id for r in (*a, *b) if r.pckh_people is None]
    if lacking:
        more = f" and {len(lacking) - 3} more" if len(lacking) > 3 else ""
        return None, f"not available: {', '.join(lacking[:3])}{more} hold no per-person PCKh (recorded before it)"
    for what, key in (("dataset", lambda r: r.dataset_info.get("fingerprint")), ("limit_val", _limit_val)):
        va, vb = {_short(key(r)) for r in a}, {_short(key(r)) for r in b}
        if len(va | vb) > 1:
            shown = " vs ".join(sorted(va | vb))
            return None, f"not available: the runs scored different validation people ({what} {shown})"
    try:
        result = paired_pckh_bootstrap([r.pckh_people for r in a], [r.pckh_people for r in b])  # type: ignore[misc]
    except HGBenchError as exc:
        return None, f"not available: {exc}"
    verdict = NO_DIFFERENCE if result.ci95 is None or result.ci95[0] <= 0 <= result.ci95[1] else "a difference"
    ci = "—" if result.ci95 is None else f"[{result.ci95[0]:+.2f}, {result.ci95[1]:+.2f}]"
    fixed = (
        f" between these {len(a) + len(b)} trained networks (training's own variation: the paired-by-seed row)"
        if len(a) >= 2 and len(b) >= 2
        else ""
    )
    return result, (
        f"paired bootstrap over the same {result.people} validation people, {result.resamples:,} resamples; "
        f"B - A 95% interval {ci}: {verdict}{fixed}"
    )


def _seed_paired_row(label: str, a: Sequence[RunSummary], b: Sequence[RunSummary]) -> dict[str, Any]:
    """The paired t-test of B - A over the seeds run on both sides: the setting's effect, training noise included."""
    by_seed = []
    for runs in (a, b):
        seeds: dict[int, list[float]] = {}
        for r in runs:
            if r.seed is not None and r.pckh_mean is not None:
                seeds.setdefault(r.seed, []).append(r.pckh_mean)
        by_seed.append({s: sum(v) / len(v) for s, v in seeds.items()})  # reruns of one seed: their mean
    common = sorted(set(by_seed[0]) & set(by_seed[1]))
    xa, xb = [by_seed[0][s] for s in common], [by_seed[1][s] for s in common]
    diffs = [y - x for x, y in zip(xa, xb, strict=True)]
    row: dict[str, Any] = {
        "group": label,
        "metric": SEED_PAIRED_METRIC,
        "a_mean": sum(xa) / len(xa) if xa else math.nan,
        "a_std": math.nan,
        "a_n": len(xa),
        "b_mean": sum(xb) / len(xb) if xb else math.nan,
        "b_std": math.nan,
        "b_n": len(xb),
        "delta": sum(diffs) / len(diffs) if diffs else math.nan,
        "delta_pct": math.nan,
        "delta_ci95_low": None,
        "delta_ci95_high": None,
        "p_value": None,
        "significant": None,
    }
    if row["a_mean"]:
        row["delta_pct"] = 100.0 * row["delta"] / row["a_mean"]
    if len(common) < 2:
        row["p_note"] = f"needs 2+ seeds run on both sides (common seeds: {', '.join(map(str, common)) or 'none'})"
        return row
    if len(set(diffs)) == 1:  # scipy would warn and answer NaN
        row["p_note"] = f"every one of the {len(common)} seeds differs by the same amount: no spread to test"
        return row
    from scipy.stats import ttest_rel  # imported here: scipy.stats costs about a second

    result = ttest_rel(xb, xa)
    low, high = (float(v) for v in result.confidence_interval(0.95))
    verdict = NO_DIFFERENCE if low <= 0 <= high else "a difference"
    row.update(
        delta_ci95_low=low,
        delta_ci95_high=high,
        p_value=float(result.pvalue),
        significant=not (low <= 0 <= high),
        p_note=(
            f"paired t-test over the {len(common)} seeds run on both sides ({', '.join(map(str, common))}); "
            f"B - A 95% interval [{low:+.2f}, {high:+.2f}]: {verdict}"
        ),
    )
    return row


def _limit_val(run: RunSummary) -> object:
    return run.config.get("limit_val")


def _short(value: object) -> str:
    """A short comparable text of a setting value (fingerprints cut to 8 characters)."""
    text = str(value)
    return text[:8] if len(text) > 16 else text


def _paired_row(label: str, a: Sequence[RunSummary], b: Sequence[RunSummary]) -> dict[str, Any]:
    """The paired bootstrap's row of a group: sides' average Means, the difference, its interval and p."""
    result, why = _paired(a, b)
    va, vb = _values(a, "pckh_mean"), _values(b, "pckh_mean")
    ma, mb = _mean_std(va)[0], _mean_std(vb)[0]
    low, high = result.ci95 if result is not None and result.ci95 is not None else (None, None)
    return {
        "group": label,
        "metric": PAIRED_METRIC,
        "a_mean": ma,
        "a_std": math.nan,
        "a_n": len(va),
        "b_mean": mb,
        "b_std": math.nan,
        "b_n": len(vb),
        "delta": result.diff if result is not None else (mb - ma if va and vb else math.nan),
        "delta_pct": 100.0 * result.diff / ma if result is not None and ma else math.nan,
        "delta_ci95_low": low,
        "delta_ci95_high": high,
        "p_value": result.p_value if result is not None else None,
        "p_note": why,
        "significant": None if low is None else not (low <= 0 <= high),
    }


def compare_runs(a: Iterable[RunSummary], b: Iterable[RunSummary]) -> pd.DataFrame:
    """Two runs, or two sets of runs, side by side per metric with absolute and relative deltas and a p-value.

    Finished runs are grouped by (case, as_built). When each side holds a single group (e.g. two runs, or two seeds
    of case 1 against three of case 8) the two are compared directly; otherwise (two result folders) each group
    present on both sides is compared with its counterpart. Where both sides have 2+ runs of a group, Welch's t-test
    (`scipy.stats.ttest_ind(equal_var=False)`) gives a p-value for PCKh Mean and min/epoch (min/epoch falls back
    to the per-epoch times when there are fewer runs); elsewhere p is null and ``p_note`` says why. Each group also
    gets the paired bootstrap over the same validation people (`PAIRED_METRIC`, one run a side is enough), or a
    p_note saying why it is not available.

    Args:
        a: the baseline side.
        b: the side compared with it (delta = B - A).

    Returns:
        A frame with `COMPARE_COLUMNS`; ``significant`` is true where p < `SIGNIFICANCE_P` and, for a timing, the
        change is at least `TIMING_MIN_EFFECT_PCT` (null without a p-value); ``attrs["notes"]`` has the devices,
        what was left out and, where a timing was tested, `TIMING_CAVEAT`.

    Raises:
        HGBenchError: a side has no finished run, or the sides share no case to compare.
    """
    a, b = list(a), list(b)
    fa, fb = [r for r in a if r.finished], [r for r in b if r.finished]
    for side, runs, done in (("A", a, fa), ("B", b, fb)):
        if not done:
            extra = f" ({len(runs)} unfinished)" if runs else ""
            raise HGBenchError(f"side {side} has no finished run to compare{extra}")
    pairs, only = _pairs(_by_case(fa), _by_case(fb))
    rows = [row for label, ra, rb in pairs for row in _group_rows(label, ra, rb)]
    df = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    for col in ("p_value", "delta_ci95_low", "delta_ci95_high"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    df["significant"] = df["significant"].astype("boolean")
    notes = [*_side_notes(fa, fb), *only]
    for side, runs in (("A", a), ("B", b)):
        skipped = [r.run_id for r in runs if not r.finished]
        if skipped:
            notes.append(f"{side}: not finished, left out: {', '.join(skipped)}.")
    if any(m in TIMING_METRICS for m in df.loc[df["p_value"].notna(), "metric"].map(_METRIC_KEYS)):
        notes.append(TIMING_CAVEAT)
    df.attrs["notes"] = notes
    return df


def _pairs(
    ga: dict[tuple[str, bool], list[RunSummary]], gb: dict[tuple[str, bool], list[RunSummary]]
) -> tuple[list[tuple[str, list[RunSummary], list[RunSummary]]], list[str]]:
    """The groups to compare, (label, A's runs, B's runs), and notes on the groups only one side has.

    One group a side: those two, whatever their cases. Otherwise every case present on both sides, in case order.
    """
    if len(ga) == 1 and len(gb) == 1:
        (ka, ra), (kb, rb) = next(iter(ga.items())), next(iter(gb.items()))
        label = _group_label(ka) if ka == kb else f"{_group_label(ka)} vs {_group_label(kb)}"
        return [(label, ra, rb)], []
    common = sorted(set(ga) & set(gb), key=lambda k: (_case_order(k[0]), k[1]))
    if not common:
        has_a, has_b = ", ".join(map(_group_label, ga)), ", ".join(map(_group_label, gb))
        raise HGBenchError(f"A and B share no case: A has {has_a}; B has {has_b}")
    notes = []
    for side, groups in (("A", ga), ("B", gb)):
        only = [_group_label(k) for k in groups if k not in common]
        if only:
            notes.append(f"Only in {side}, not compared: {', '.join(only)}.")
    return [(_group_label(k), ga[k], gb[k]) for k in common], notes


def _group_rows(label: str, ra: Sequence[RunSummary], rb: Sequence[RunSummary]) -> list[dict[str, Any]]:
    """One group's rows: every metric with Welch's test where tested, the paired bootstrap, the paired-by-seed test."""
    rows = [_metric_row(label, metric, name, ra, rb) for metric, name in COMPARE_METRICS.items()]
    rows.append(_paired_row(label, ra, rb))
    if len(ra) >= 2 and len(rb) >= 2:
        rows.append(_seed_paired_row(label, ra, rb))
    return rows


def _metric_row(
    label: str, metric: str, name: str, ra: Sequence[RunSummary], rb: Sequence[RunSummary]
) -> dict[str, Any]:
    """One metric of a group: the sides' mean and std, B - A absolute and relative, Welch's p where tested."""
    va, vb = _values(ra, metric), _values(rb, metric)
    ma, sa = _mean_std(va)
    mb, sb = _mean_std(vb)
    delta = mb - ma if va and vb else math.nan
    pct = 100.0 * delta / ma if va and vb and ma != 0 else math.nan
    p, why = _welch(metric, ra, rb)
    if p is not None and metric in TIMING_METRICS:
        why += f"; a timing: significant only with a change of {TIMING_MIN_EFFECT_PCT:.0f}%+ (see below)"
    return {
        "group": label,
        "metric": name,
        "a_mean": ma,
        "a_std": sa,
        "a_n": len(va),
        "b_mean": mb,
        "b_std": sb,
        "b_n": len(vb),
        "delta": delta,
        "delta_pct": pct,
        "delta_ci95_low": None,
        "delta_ci95_high": None,
        "p_value": p,
        "p_note": why,
        "significant": _significant(metric, p, pct),
    }


def _side_notes(fa: Sequence[RunSummary], fb: Sequence[RunSummary]) -> list[str]:
    """A's and B's finished runs and devices, one line each (mixed devices within a side said)."""
    notes = []
    for side, runs in (("A", fa), ("B", fb)):
        devices = sorted({r.device for r in runs})
        mixed = " (mixed devices within one side: its times are not one machine's)" if len(devices) > 1 else ""
        slices = sum(r.mig_slice for r in runs)
        if slices == len(runs):
            mixed += " (on a MIG slice: the slice's times, the whole board's energy, power and memory)"
        elif slices:
            mixed += f" ({slices} of them on a MIG slice, the others on whole GPUs: its times are not one device's)"
        notes.append(f"{side}: {len(runs)} finished run(s) on {'; '.join(devices)}{mixed}.")
    return notes


_METRIC_KEYS: dict[str, str] = {label: key for key, label in COMPARE_METRICS.items()}


def _significant(metric: str, p: float | None, delta_pct: float) -> bool | None:
    """Whether a tested difference counts: p below `SIGNIFICANCE_P` and, for a timing, a large enough change.

    None where there is no p-value. A timing's p alone is not enough (`TIMING_CAVEAT`): the runs of one machine share
    its load, so a tiny, consistent shift gives a low p without any difference in the code.
    """
    if p is None:
        return None
    if metric in TIMING_METRICS and not abs(delta_pct) >= TIMING_MIN_EFFECT_PCT:
        return False
    return p < SIGNIFICANCE_P
