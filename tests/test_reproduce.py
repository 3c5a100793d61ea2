"""``--convention anibali`` and ``--reproduce``: the publisher's crop and decoding against its formulas, the verdict.

The formulas are restated here the slow way, one joint at a time with the publisher's 1-based indices, from a
reading of its `utils/evaluation.py` (``get_preds``, ``final_preds_untransformed``) and `utils/transforms.py`
(``transform``, ``crop``); hgbench's vectorised versions must give the same numbers. The end-to-end test runs a tiny
random network on the 5 real validation people of the sample data: its figures are far from the published ones, so
the verdict must be "not reproduced", with the causes that apply to the sample (5 of 2,958 people, its own
annotation file).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.pose_hourglass import pose_net

from hgbench.cli import main
from hgbench.data.anibali import anibali_crop, crop_window, downscale_factor
from hgbench.data.groundtruth import bundled_ground_truth_path, load_ground_truth
from hgbench.data.transforms import apply_affine, draw_gaussians, heatmap_matrix
from hgbench.eval.decoding import (
    anibali_decode,
    anibali_heatmap_coords,
    anibali_to_image,
    get_heatmap_maxima,
    heatmap_to_image,
)
from hgbench.eval.metrics import evaluate_pckh
from hgbench.models.published import PUBLISHED, PUBLISHED_PCKH, PublishedWeights, cache_dir
from hgbench.run.reproduce import format_reproduction, judge, row_intervals
from hgbench.spec.variants import read_variant

TINY_VARIANT = 'name = "tiny"\nnum_stacks = 1\nnum_feats = 8\ndepths = [4]\n'
ANIBALI_HG2 = PUBLISHED_PCKH["anibali:hg2"]


def their_heatmap_coords(hm: np.ndarray) -> np.ndarray:
    """The publisher's peak rule, one joint at a time, in its 1-based indexing."""
    n_, k_, h, w = hm.shape
    out = np.zeros((n_, k_, 2))
    for n in range(n_):
        for k in range(k_):
            i = int(np.argmax(hm[n, k]))
            x, y = float(i % w + 1), float(i // w + 1)
            if hm[n, k].flat[i] <= 0:
                x = y = 0.0
            px, py = math.floor(x), math.floor(y)
            if 1 < px < w and 1 < py < h:
                x += 0.25 * np.sign(hm[n, k, py - 1, px] - hm[n, k, py - 1, px - 2])
                y += 0.25 * np.sign(hm[n, k, py, px - 1] - hm[n, k, py - 2, px - 1])
            out[n, k] = (x + 0.5 - 1, y + 0.5 - 1)
    return out


def their_transform_back(pt: np.ndarray, c: np.ndarray, s: float, res: int) -> np.ndarray:
    """Its ``transform(pt, c, s, [res, res], invert=1)``: inverse of its 3x3 crop matrix on (pt - 1), int, + 1."""
    t = np.array(
        [[res / (200 * s), 0, res * (-c[0] / (200 * s) + 0.5)], [0, res / (200 * s), res * (-c[1] / (200 * s) + 0.5)]]
    )
    t = np.vstack([t, [0, 0, 1]])
    p = np.linalg.inv(t) @ np.array([pt[0] - 1, pt[1] - 1, 1.0])
    return np.array([int(p[0]), int(p[1])]) + 1


def test_the_peak_rule_is_the_publishers() -> None:
    rng = np.random.default_rng(0)
    hm = rng.random((3, 16, 8, 8))
    hm[0, 0] = 0.0  # no positive value: the publisher's (0, 0)
    hm[0, 1, 0, 3] = 5.0  # a peak on the top border: not shifted
    hm[0, 2, 4, 7] = 5.0  # on the right border
    hm[1, 3, 4, 4], hm[1, 3, 4, 5], hm[1, 3, 4, 3] = 5.0, 2.0, 2.0  # equal neighbours in x: no x shift
    np.testing.assert_array_equal(anibali_heatmap_coords(hm), their_heatmap_coords(hm))


def test_the_mapping_back_truncates_as_the_publishers() -> None:
    rng = np.random.default_rng(1)
    coords = rng.uniform(-1, 65, (4, 16, 2))
    center = rng.uniform(100, 900, (4, 2))
    scale = rng.uniform(0.5, 5, 4)
    got = anibali_to_image(coords, center, scale, 64)
    want = np.array(
        [[their_transform_back(coords[n, k], center[n], scale[n], 64) for k in range(16)] for n in range(4)]
    )
    np.testing.assert_array_equal(got, want)
    assert np.all(got == np.round(got))  # whole pixels


def test_the_publishers_decoding_is_one_heatmap_pixel_up_and_left_hgbenchs_is_unbiased() -> None:
    """Ground-truth heatmaps decoded both ways: the offset the issue measured (-0.91, -0.92 heatmap px) and ~0."""
    rng = np.random.default_rng(2)
    theirs, ours = [], []
    for _ in range(400):
        c, s = np.array([rng.uniform(300, 900), rng.uniform(200, 500)]), rng.uniform(0.8, 3.0)
        p = c + rng.uniform(-80 * s, 80 * s, 2)
        hm, _ = draw_gaussians(apply_affine(p[None], heatmap_matrix(c, s, 0, 256, 64)), np.array([True]), 64)
        px = 200 * s / 64  # image pixels per heatmap pixel
        theirs.append((anibali_decode(hm[None], c[None], np.array([s]))[0, 0] - p) / px)
        coords, _ = get_heatmap_maxima(hm[None])
        ours.append((heatmap_to_image(coords, c[None], np.array([s]), 256, 64)[0, 0] - p) / px)
    assert np.all((np.mean(theirs, 0) > -1.0) & (np.mean(theirs, 0) < -0.85))
    assert np.all(np.abs(np.mean(ours, 0)) < 0.1)


def test_the_crop_window_is_rounded_to_whole_pixels_as_the_publishers() -> None:
    # By hand from its formula: 200 s = 200 px around (640, 360) -> ul = int(-129 * 0.78125 + 640) + 1 = 540, ...
    ul, br = crop_window(np.array([640.0, 360.0]), 1.0, 256)
    assert (ul.tolist(), br.tolist()) == ([540, 260], [740, 460])
    for c, s in [((333.3, 421.7), 1.37), ((-20.0, 50.5), 0.9), ((1000.2, 700.9), 1.9)]:
        ul, br = crop_window(np.array(c), s, 256)
        assert ul.tolist() == their_transform_back(np.array([0.0, 0.0]), np.array(c), s, 256).tolist()
        assert br.tolist() == their_transform_back(np.array([256.0, 256.0]), np.array(c), s, 256).tolist()
    assert downscale_factor(2.0, 256) == 1.0
    assert downscale_factor(3.0, 256) == pytest.approx(2.34375)


def test_the_crop_puts_the_window_where_the_publishers_does() -> None:
    """A white square at x 600..619 of a black image, cropped from the 200-px window 540..739: its edges land at
    (x - 540 + 0.5) * 256 / 200 - 0.5 (a resize of the whole-pixel window), within a quarter pixel."""
    image = np.zeros((720, 1280, 3), dtype=np.uint8)
    image[300:320, 600:620] = 255
    crop = anibali_crop(image, np.array([640.0, 360.0]), 1.0, 256)
    row = crop[int((310 - 260 + 0.5) * 1.28 - 0.5), :, 0].astype(np.float64)
    above = np.nonzero(row >= 127.5)[0]
    left, right = above[0], above[-1]
    # Sub-pixel half-maximum crossings, interpolated between the neighbours.
    left_edge = left - 1 + (127.5 - row[left - 1]) / (row[left] - row[left - 1])
    right_edge = right + (row[right] - 127.5) / (row[right] - row[right + 1])
    assert left_edge == pytest.approx((600 - 540) * 1.28 - 0.5, abs=0.25)
    assert right_edge == pytest.approx((620 - 540) * 1.28 - 0.5, abs=0.25)


def pckh_of(offset_px: float, people: int | None = None, noise_px: float = 0.0):
    gt = load_ground_truth(bundled_ground_truth_path())
    if people is not None:
        gt = gt.subset(np.arange(people))
    noise = np.random.default_rng(3).normal(0.0, noise_px, gt.joints.shape)
    preds = gt.joints + np.array([offset_px, 0.0]) + noise
    return evaluate_pckh(preds, gt)


def test_the_verdict_is_reproduced_only_when_the_interval_holds_the_published_mean() -> None:
    exact = pckh_of(0.0)  # every annotated joint correct: 100 everywhere, an interval of [100, 100]
    published_100 = dict.fromkeys(ANIBALI_HG2, 100.0)
    assert judge("x", published_100, exact, exact, people_expected=len(load_ground_truth(bundled_ground_truth_path())))
    rep = judge("x", published_100, exact, exact, people_expected=2958)
    assert rep.reproduced
    assert not rep.causes
    rep = judge("anibali:hg2", ANIBALI_HG2, exact, pckh_of(1000.0), people_expected=2958)
    assert not rep.reproduced
    assert any(
        c.startswith("another protocol or other data: parts outside their interval: Head 100.00") for c in rep.causes
    )
    text = format_reproduction(rep)
    assert "verdict: not reproduced (the published Mean 87.33 lies outside [100.00, 100.00])" in text
    assert "hgbench's protocol differs by -100.00 Mean" in text


def test_the_verdict_names_missing_people_and_hgbenchs_protocol() -> None:
    few = pckh_of(0.0, people=200)
    theirs = pckh_of(1000.0, people=200)  # nothing correct
    rep = judge("anibali:hg2", dict.fromkeys(ANIBALI_HG2, 100.0), theirs, few, people_expected=2958)
    assert not rep.reproduced
    assert rep.causes[0].startswith("missing images: 200 of the split's 2,958 validation people were scored")
    assert rep.causes[1].startswith("another protocol: the published Mean 100.00 lies in hgbench's interval")


def test_intervals_hold_the_figure_of_every_row() -> None:
    result = pckh_of(0.0, noise_px=12.0)
    ci = row_intervals(result)
    assert set(ci) == {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean"}
    for row, value in {**result.parts, "Mean": result.mean}.items():
        assert ci[row][0] <= value <= ci[row][1]
        assert ci[row][1] - ci[row][0] > 0


@pytest.fixture
def tiny_published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A tiny random network published as ``anibali:tiny`` with anibali's hg2 table, already in the hub cache."""
    variant = tmp_path / "tiny.toml"
    variant.write_text(TINY_VARIANT)
    raw = tmp_path / "raw.pth"
    torch.manual_seed(0)
    torch.save(pose_net(read_variant(variant)).state_dict(), raw)
    name = f"bearpaw_tiny-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}.pth"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    cache_dir().mkdir(parents=True)
    raw.rename(cache_dir() / name)
    monkeypatch.setitem(
        PUBLISHED, "anibali:tiny", PublishedWeights("anibali:tiny", str(variant), "http://127.0.0.1:9/" + name)
    )
    monkeypatch.setitem(PUBLISHED_PCKH, "anibali:tiny", ANIBALI_HG2)
    return "anibali:tiny"


COMMON = ["--device", "cpu", "--workers", "0", "--input-res", "64", "--batch", "5"]


@pytest.mark.mpii
def test_reproduce_on_the_real_sample_renders_intervals_and_says_not_reproduced(
    tiny_published: str, mpii_sample: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["evaluate", "--weights", tiny_published, "--data-dir", str(mpii_sample), "--reproduce", *COMMON])
    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("anibali:tiny on 5 validation people, flip test")
    mean = next(line for line in lines if line.startswith("Mean"))
    assert "87.33" in mean
    assert mean.count("[") == 2  # both conventions' intervals
    assert "verdict: not reproduced" in out
    assert "likely cause: missing images: 5 of the split's 2,958 validation people were scored" in out
    assert "likely cause: another annotation file" in out
    assert "hgbench's protocol differs by" in out


@pytest.mark.mpii
def test_convention_anibali_scores_the_sample_with_the_publishers_decoding(
    tiny_published: str, mpii_sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = {}
    for convention in ("hgbench", "anibali"):
        pred = tmp_path / f"{convention}.mat"
        argv = ["evaluate", "--weights", tiny_published, "--data-dir", str(mpii_sample), "--flip", *COMMON]
        argv += ["--convention", convention, "--format", "json", "--save-predictions", str(pred)]
        assert main(argv) == 0
        doc = json.loads(capsys.readouterr().out)
        assert (doc["convention"], doc["published"], doc["pckh"]["count"]) == (convention, "anibali:tiny", 5)
        from scipy.io import loadmat

        saved[convention] = np.asarray(loadmat(pred)["preds"])
    assert np.all(saved["anibali"] == np.round(saved["anibali"]))  # whole pixels
    assert not np.array_equal(saved["anibali"], saved["hgbench"])


def test_reproduce_refuses_weights_without_a_published_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.pth"
    path.write_bytes(b"not published")
    code = main(["evaluate", "--weights", str(path), "--case", "hg2", "--reproduce"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().endswith(
        f"--reproduce needs published weights with a published table (anibali:hg2); {path} is not one of them"
    )
