"""Every figure with its uncertainty: the bootstrap over validation people (hgbench.measure.stats,
hgbench.eval.metrics), the record's per-person masks, the table's intervals and its ranking warning, compare's paired
bootstrap, host memory."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from hgbench.data.groundtruth import GroundTruth
from hgbench.errors import HGBenchError
from hgbench.eval.metrics import (
    evaluate_pckh,
    pack_masks,
    paired_pckh_bootstrap,
    pckh_mean_interval,
    pckh_mean_of_sums,
    person_masks_from_dict,
    person_masks_to_dict,
    unpack_masks,
)
from hgbench.measure.host_memory import peak_host_memory_mib
from hgbench.measure.stats import bootstrap_p_value, bootstrap_weights, percentile_interval
from hgbench.report import compare_rich_table, compare_runs, comparison_table, to_csv, to_markdown
from hgbench.report.compare import NO_DIFFERENCE, PAIRED_METRIC, SEED_PAIRED_METRIC
from hgbench.report.table import ranking_is_noise
from hgbench.run.record import validate_record
from hgbench.run.results import RunSummary, load_records
from hgbench.run.run_summary import summarize
from hgbench.spec.skeleton import NUM_JOINTS

RECORDS = Path(__file__).parent / "data" / "records" / "cpu-pt2.14.1"
OLD_CHECK = Path(__file__).parents[1] / "docs" / "checks" / "fast-vs-eager"


def masks(n: int, rate: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(scored, correct) of n people: every joint annotated, each correct with probability `rate`."""
    rng = np.random.default_rng(seed)
    scored = np.ones((n, NUM_JOINTS), dtype=bool)
    return scored, rng.random((n, NUM_JOINTS)) < rate


# ------------------------------------------------------------------------------------------- the resampling
def test_bootstrap_weights_draw_n_people_per_resample_reproducibly() -> None:
    w = bootstrap_weights(7, resamples=50, seed=3)
    assert w.shape == (50, 7)
    assert (w.sum(axis=1) == 7).all()
    assert (w == bootstrap_weights(7, resamples=50, seed=3)).all()  # fixed seed: the interval is reproducible
    assert not (w == bootstrap_weights(7, resamples=50, seed=4)).all()


def test_percentile_interval_and_p_value() -> None:
    assert percentile_interval(np.arange(101.0)) == pytest.approx((2.5, 97.5))
    assert percentile_interval(np.array([np.nan])) is None
    assert bootstrap_p_value(np.full(999, 3.0)) == pytest.approx(1 / 999)  # all on one side: the 1/resamples floor
    assert bootstrap_p_value(np.concatenate([-np.ones(500), np.ones(500)])) == 1.0


# --------------------------------------------------------------------------------------- per-person PCKh
def test_evaluate_pckh_keeps_per_person_masks_that_give_back_the_mean() -> None:
    rng = np.random.default_rng(0)
    n = 40
    joints = rng.uniform(50, 150, (n, NUM_JOINTS, 2))
    missing = rng.random((n, NUM_JOINTS)) < 0.2
    gt = GroundTruth(joints, missing, np.tile([[0.0, 0.0], [50.0, 50.0]], (n, 1, 1)))
    pred = joints + rng.normal(0, 25, joints.shape)
    result = evaluate_pckh(pred, gt)
    assert result.person_scored.shape == (n, NUM_JOINTS)
    assert (result.person_scored == ~missing).all()
    assert not (result.person_correct & ~result.person_scored).any()
    assert pckh_mean_of_sums(result.person_correct.sum(0), result.person_scored.sum(0)) == pytest.approx(result.mean)
    low, high = result.ci95
    assert low < result.mean < high
    d = result.to_dict()
    assert d["ci95"] == [low, high]
    scored, correct = person_masks_from_dict(json.loads(json.dumps(d["per_person"])))
    assert (scored == result.person_scored).all()
    assert (correct == result.person_correct).all()
    assert evaluate_pckh(pred, gt, interval=False).ci95 is None  # the per-epoch validation skips the bootstrap


def test_masks_pack_two_bytes_a_person_and_round_trip() -> None:
    scored, correct = masks(90, 0.5)
    text = pack_masks(correct)
    assert len(text) == 240  # 180 bytes in base64
    assert (unpack_masks(text) == correct).all()
    assert pack_masks(np.zeros((0, NUM_JOINTS), dtype=bool)) == ""
    with pytest.raises(HGBenchError, match="not base64"):
        unpack_masks("not base64!")
    with pytest.raises(HGBenchError, match="whole 16-bit"):
        unpack_masks("AA==")  # one byte
    bad = person_masks_to_dict(scored & False, correct)
    with pytest.raises(HGBenchError, match="subset"):
        person_masks_from_dict(bad)


def test_interval_narrows_with_more_people_and_pools_seeds() -> None:
    few = pckh_mean_interval([masks(12, 0.5)])
    many = pckh_mean_interval([masks(600, 0.5)])
    assert few[1] - few[0] > 2 * (many[1] - many[0])
    a, b = masks(90, 0.3, seed=1), masks(90, 0.7, seed=2)
    pooled = pckh_mean_interval([a, (a[0], b[1])])
    mean = (pckh_mean_of_sums(a[1].sum(0), a[0].sum(0)) + pckh_mean_of_sums(b[1].sum(0), b[0].sum(0))) / 2
    assert pooled[0] < mean < pooled[1]
    with pytest.raises(HGBenchError, match="different validation people"):
        pckh_mean_interval([masks(10, 0.5), masks(12, 0.5)])


def test_paired_bootstrap_finds_a_small_difference_and_none_between_equals() -> None:
    scored, correct = masks(200, 0.5)
    same = paired_pckh_bootstrap([(scored, correct)], [(scored, correct)])
    assert same.diff == 0
    assert same.ci95 == (0.0, 0.0)
    assert same.p_value == 1.0
    better = correct.copy()
    better[:8] = True  # B gets 8 of 200 people entirely right: about +2 points on the same people
    result = paired_pckh_bootstrap([(scored, correct)], [(scored, better)])
    assert result.diff > 0
    assert result.ci95[0] > 0
    assert result.p_value < 0.01
    # Unpaired, the two 95% intervals overlap: the pairing is what makes the difference visible.
    ia, ib = pckh_mean_interval([(scored, correct)]), pckh_mean_interval([(scored, better)])
    assert ib[0] < ia[1]
    with pytest.raises(HGBenchError, match="different validation people"):
        paired_pckh_bootstrap([(scored, correct)], [masks(150, 0.5)])


# -------------------------------------------------------------------------------------------- the record
def with_people(name: str, people: tuple[np.ndarray, np.ndarray] | None, **changes: object) -> RunSummary:
    """A golden record's summary with per-person masks (and its Mean and interval computed from them)."""
    summary = summarize(copy.deepcopy(json.loads((RECORDS / name).read_text())), RECORDS / name)
    if people is not None:
        summary.pckh_people = people
        summary.pckh_mean = float(pckh_mean_of_sums(people[1].sum(0), people[0].sum(0)))
        summary.pckh_ci95 = pckh_mean_interval([people])
    for key, value in changes.items():
        setattr(summary, key, value)
    return summary


def test_record_validation_and_summary_of_the_new_fields() -> None:
    record = json.loads((RECORDS / "0001_case1_seed0.json").read_text())
    old = summarize(record, RECORDS / "0001_case1_seed0.json")
    assert old.pckh_ci95 is None
    assert old.pckh_people is None
    assert old.peak_host_memory_mib is None
    scored, correct = masks(40, 0.5)
    record["results"]["pckh"]["per_person"] = person_masks_to_dict(scored, correct)
    record["results"]["pckh"]["ci95"] = [40.0, 50.0]
    record["results"]["peak_host_memory_mib"] = 812.5
    assert validate_record(record) == []
    new = summarize(record, RECORDS / "x.json")
    assert new.pckh_ci95 == (40.0, 50.0)
    assert new.peak_host_memory_mib == 812.5
    assert (new.pckh_people[1] == correct).all()
    record["results"]["pckh"]["per_person"]["scored"] = "###"
    record["results"]["pckh"]["ci95"] = "wide"
    problems = validate_record(record)
    assert any("ci95" in p for p in problems)
    assert any("base64" in p for p in problems)


def test_peak_host_memory_is_this_process_in_mib() -> None:
    before = peak_host_memory_mib()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB touched
    assert peak_host_memory_mib() >= before
    assert peak_host_memory_mib() > 64
    del block


# --------------------------------------------------------------------------------------------- the table
def test_table_shows_the_interval_in_csv_and_markdown() -> None:
    people = masks(90, 0.4)
    run = with_people("0001_case1_seed0.json", people)
    df = comparison_table([run])
    row = df.iloc[0]
    assert (row["pckh_mean_ci95_low"], row["pckh_mean_ci95_high"]) == pytest.approx(run.pckh_ci95)
    header = to_csv(df).splitlines()[0].split(",")
    assert header[header.index("pckh_mean") + 2 : header.index("pckh_mean") + 4] == [
        "pckh_mean_ci95_low",
        "pckh_mean_ci95_high",
    ]
    md = to_markdown(df)
    low, high = run.pckh_ci95
    assert f"{run.pckh_mean:.1f} ({low:.1f}–{high:.1f})" in md
    assert "95% bootstrap interval over validation people" in md


def test_pooled_seeds_show_both_spreads_and_say_which_is_which() -> None:
    scored, _ = masks(90, 0.5)
    runs = [
        with_people("0002_case3_seed0.json", (scored, masks(90, 0.40, seed=1)[1])),
        with_people("0003_case3_seed1.json", (scored, masks(90, 0.45, seed=2)[1])),
    ]
    df = comparison_table(runs)
    row = df.iloc[0]
    assert row["runs"] == 2
    assert not math.isnan(row["pckh_mean_std"])
    assert (row["pckh_mean_ci95_low"], row["pckh_mean_ci95_high"]) == pytest.approx(
        pckh_mean_interval([r.pckh_people for r in runs])
    )
    md = to_markdown(df)
    assert "the same people drawn for every seed, while ± is the spread between seeds" in md


def test_old_records_render_with_a_dash_for_the_interval() -> None:
    found, _ = load_records([OLD_CHECK / "eager"])
    md = to_markdown(comparison_table(found))
    assert "(—)" in md
    assert "no per-person PCKh" in md
    assert to_csv(comparison_table(found)).splitlines()[1].count(",,") >= 1  # empty interval cells


def test_ranking_warning_when_every_interval_overlaps_the_best() -> None:
    scored = np.ones((12, NUM_JOINTS), dtype=bool)
    close = [
        with_people("0001_case1_seed0.json", (scored, masks(12, 0.40, seed=1)[1])),
        with_people("0002_case3_seed0.json", (scored, masks(12, 0.45, seed=2)[1])),
    ]
    df = comparison_table(close)
    assert ranking_is_noise(df)
    md = to_markdown(df)
    warning = md.index("cannot rank the cases by accuracy")
    assert warning < md.index("| case |")  # above the rows


def test_no_ranking_warning_when_one_row_stands_clear() -> None:
    scored = np.ones((300, NUM_JOINTS), dtype=bool)
    apart = [
        with_people("0001_case1_seed0.json", (scored, masks(300, 0.30, seed=1)[1])),
        with_people("0002_case3_seed0.json", (scored, masks(300, 0.32, seed=3)[1])),
        with_people("0004_case5-asbuilt_seed0.json", (scored, masks(300, 0.60, seed=2)[1])),
    ]
    df = comparison_table(apart)
    assert not ranking_is_noise(df)
    assert "cannot rank" not in to_markdown(df)
    assert not ranking_is_noise(comparison_table(apart[:1]))  # one row: nothing to rank


# ------------------------------------------------------------------------------------------- compare
def test_compare_paired_bootstrap_row_says_no_detectable_difference() -> None:
    people = masks(90, 0.4)
    a = [with_people("0001_case1_seed0.json", people)]
    b = [with_people("0001_case1_seed0.json", people, run_id="again")]
    df = compare_runs(a, b)
    row = df.set_index("metric").loc[PAIRED_METRIC]
    assert row["delta"] == 0
    assert row["delta_ci95_low"] == 0
    assert row["p_value"] == 1
    assert NO_DIFFERENCE in row["p_note"]
    assert "same 90 validation people" in row["p_note"]
    assert not row["significant"]
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(compare_rich_table(df))
    assert NO_DIFFERENCE in console.export_text()


def test_compare_paired_bootstrap_sees_a_difference_with_one_seed_a_side() -> None:
    scored, correct = masks(200, 0.5)
    better = correct.copy()
    better[:30] = True
    df = compare_runs(
        [with_people("0001_case1_seed0.json", (scored, correct))],
        [with_people("0001_case1_seed0.json", (scored, better), run_id="b")],
    )
    row = df.set_index("metric").loc[PAIRED_METRIC]
    assert row["delta"] > 0
    assert row["delta_ci95_low"] > 0
    assert row["significant"]
    assert "a difference" in row["p_note"]
    assert math.isnan(df.set_index("metric").loc["PCKh@0.5 Mean", "p_value"])  # Welch needs 2+ seeds a side


@pytest.mark.parametrize(
    ("b_people", "b_changes", "why"),
    [
        (None, {}, "hold no per-person PCKh"),
        (masks(90, 0.4), {"dataset_info": {"fingerprint": "another-dataset"}}, "different validation people"),
        (masks(80, 0.4), {}, "different validation people"),
    ],
)
def test_compare_says_why_the_paired_bootstrap_is_not_available(b_people, b_changes, why) -> None:
    a = [with_people("0001_case1_seed0.json", masks(90, 0.4))]
    b = [with_people("0001_case1_seed0.json", b_people, run_id="b", **b_changes)]
    row = compare_runs(a, b).set_index("metric").loc[PAIRED_METRIC]
    assert row["p_note"].startswith("not available")
    assert why in row["p_note"]
    assert math.isnan(row["p_value"])
    assert math.isnan(row["delta_ci95_low"])


def _seeds(side: str, means: dict[int, float]) -> list[RunSummary]:
    return [
        with_people("0001_case1_seed0.json", None, seed=seed, pckh_mean=mean, run_id=f"{side}{seed}")
        for seed, mean in means.items()
    ]


def test_compare_pairs_the_seeds_to_test_the_setting_with_training_noise() -> None:
    """The bootstrap over people holds the trained networks fixed; whether the *setting* matters is a question for
    the seeds: a consistent sign with a wide spread (as in docs/checks/bf16-cpu) is no detectable difference."""
    from scipy.stats import ttest_rel

    a_means, b_means = {0: 40.0, 1: 42.0, 2: 38.0}, {0: 40.5, 1: 44.0, 2: 38.8}
    row = compare_runs(_seeds("a", a_means), _seeds("b", b_means)).set_index("metric").loc[SEED_PAIRED_METRIC]
    assert (row["a_n"], row["b_n"]) == (3, 3)
    assert row["delta"] == pytest.approx(1.1)
    assert row["p_value"] == pytest.approx(ttest_rel(list(b_means.values()), list(a_means.values())).pvalue)
    assert row["delta_ci95_low"] < 0 < row["delta_ci95_high"]
    assert NO_DIFFERENCE in row["p_note"]
    assert "3 seeds run on both sides (0, 1, 2)" in row["p_note"]
    assert not row["significant"]
    steady = compare_runs(_seeds("a", a_means), _seeds("b", {0: 41.0, 1: 43.1, 2: 38.9}))
    row = steady.set_index("metric").loc[SEED_PAIRED_METRIC]
    assert row["delta_ci95_low"] > 0
    assert row["significant"]
    assert "a difference" in row["p_note"]


def test_compare_pairs_only_seeds_run_on_both_sides() -> None:
    df = compare_runs(_seeds("a", {0: 40.0, 1: 41.0}), _seeds("b", {2: 40.0, 3: 41.0}))
    row = df.set_index("metric").loc[SEED_PAIRED_METRIC]
    assert row["p_note"] == "needs 2+ seeds run on both sides (common seeds: none)"
    assert math.isnan(row["p_value"])
    one_each = compare_runs(_seeds("a", {0: 40.0}), _seeds("b", {0: 41.0}))
    assert SEED_PAIRED_METRIC not in set(one_each["metric"])  # one run a side: the people-paired row alone


def test_frontier_error_bar_is_the_interval_else_the_seed_spread() -> None:
    from hgbench.report.plot import accuracy_error

    people = masks(90, 0.4)
    with_interval = comparison_table([with_people("0001_case1_seed0.json", people)])
    (below,), (above,) = accuracy_error(with_interval)
    low, high = with_interval.iloc[0][["pckh_mean_ci95_low", "pckh_mean_ci95_high"]]
    mean = with_interval.iloc[0]["pckh_mean"]
    assert (below, above) == pytest.approx((mean - low, high - mean))
    old = comparison_table([with_people(n, None) for n in ("0002_case3_seed0.json", "0003_case3_seed1.json")])
    (below,), (above,) = accuracy_error(old)
    assert below == above == pytest.approx(old.iloc[0]["pckh_mean_std"])


@pytest.mark.parametrize("level", [0.95, 0.9])
def test_the_bootstrap_p_value_and_interval_always_agree(level: float) -> None:
    """p < 1 - level exactly when the percentile interval at that level leaves out 0: the verdict, the interval and
    the p-value of compare's paired row come from one method (shifts near the boundary, ties at 0 included)."""
    rng = np.random.default_rng(1)
    checked = 0
    for shift in np.linspace(-3.5, 3.5, 141):
        for ties in (False, True):
            diffs = rng.normal(shift, 1.0, size=1000)
            if ties:
                diffs = np.round(diffs)  # many resamples exactly 0, as with few people
            low, high = percentile_interval(diffs, level)
            p = bootstrap_p_value(diffs)
            assert (p < 1 - level) == (not low <= 0 <= high), (shift, ties, low, high, p)
            checked += p < 1 - level
    assert 0 < checked < 2 * 141  # both verdicts were met
