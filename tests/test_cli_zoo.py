"""The zoo from the command line: scoring another tool's weights, fine-tuning from them, a variant run's record.

Tiny networks (one stack of 8 planes at 64 px) on the session's synthetic dataset; the weights come from the
pytorch-pose stand-in (`helpers.pose_hourglass`), saved as that tool's training checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.pose_hourglass import pose_net, pytorch_pose_checkpoint
from scipy.io import loadmat

from hgbench.cli import main
from hgbench.models import read_weights
from hgbench.run.runner import run
from hgbench.spec.config import run_identity
from hgbench.spec.variants import read_variant, run_case_fields
from hgbench.train.checkpoint import save_checkpoint

TINY_VARIANT = 'name = "tiny"\nnum_stacks = 1\nnum_feats = 8\ndepths = [4]\n'


@pytest.fixture
def zoo(tmp_path: Path) -> dict[str, Path]:
    """A tiny variant file and random weights for it, saved as a pytorch-pose training checkpoint."""
    variant = tmp_path / "tiny.toml"
    variant.write_text(TINY_VARIANT)
    weights = pytorch_pose_checkpoint(pose_net(read_variant(variant)), tmp_path / "pose.pth.tar")
    return {"variant": variant, "weights": weights}


def evaluate(capsys: pytest.CaptureFixture, synthetic_root: Path, *argv: object) -> tuple[int, str, str]:
    common = ["--data-dir", synthetic_root, "--limit", "4", "--device", "cpu", "--workers", "0", "--format", "json"]
    code = main(["evaluate", *map(str, argv), *map(str, common)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code != 0
    assert err.count("\n") == 1
    assert err.startswith("hgbench: error: ")
    assert "Traceback" not in err
    return err


def test_foreign_weights_are_scored_exactly_as_an_hgbench_checkpoint_of_them(
    zoo: dict[str, Path], synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    spec = read_variant(zoo["variant"])
    own = tmp_path / "own.pt"  # the same weights as hgbench's own checkpoint of the variant
    state = read_weights(zoo["weights"], spec).state_dict
    save_checkpoint(
        own, {"spec": spec.to_dict(), "config": {"input_res": 64}, "epoch": 1, "identity": "x", "model": state}
    )

    code, out, _ = evaluate(
        capsys,
        synthetic_root,
        "--checkpoint",
        zoo["weights"],
        "--case",
        zoo["variant"],
        "--input-res",
        64,
        "--save-predictions",
        tmp_path / "foreign.mat",
    )
    assert code == 0
    foreign = json.loads(out)
    assert foreign["weights"] == "pytorch-pose layout, training checkpoint (epoch 30), DataParallel keys"
    code, out, _ = evaluate(capsys, synthetic_root, "--checkpoint", own, "--save-predictions", tmp_path / "own.mat")
    assert code == 0
    assert json.loads(out)["pckh"] == foreign["pckh"]
    np.testing.assert_array_equal(loadmat(tmp_path / "foreign.mat")["preds"], loadmat(tmp_path / "own.mat")["preds"])


def test_evaluate_refuses_weights_of_another_network_in_one_line(
    zoo: dict[str, Path], synthetic_root: Path, capsys: pytest.CaptureFixture
) -> None:
    err = one_line_error(*evaluate(capsys, synthetic_root, "--checkpoint", zoo["weights"], "--case", "hg1")[::2])
    assert "(pytorch-pose layout) does not fit hg1: 0 missing and 2 unexpected keys" in err
    assert "first shape that differs: layer3.0.conv1.weight is [8, 256, 1, 1] in the file" in err
    err = one_line_error(*evaluate(capsys, synthetic_root, "--checkpoint", zoo["weights"])[::2])
    assert "is not an hgbench checkpoint" in err
    assert "--case" in err


@pytest.mark.slow  # two tiny epochs and a timed inference pass
def test_a_fine_tuning_run_starts_from_the_weights_and_resumes_from_its_record_alone(
    zoo: dict[str, Path], synthetic_root: Path, tmp_path: Path
) -> None:
    from conftest import tiny_config

    spec = read_variant(zoo["variant"])
    fields = run_case_fields(spec)
    config = tiny_config(
        tmp_path, synthetic_root, epochs=2, lr=0.0, flip_test=False, init_from=str(zoo["weights"]), **fields
    )
    cut = run(config, progress=False, stop_after_epoch=1)
    assert cut.status == "interrupted"
    assert cut.record_path.name.startswith("0001_tiny_seed0")

    zoo["variant"].unlink()  # the record (and checkpoint) alone carry the variant now
    argv = ["run", "--case", str(zoo["variant"]), "--resume", str(cut.record_path), "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    record = json.loads(cut.record_path.read_text())
    assert record["status"] == "finished"
    assert len(record["results"]["epochs"]) == 2
    assert record["spec"] == spec.to_dict()
    assert record["spec_fingerprint"] == spec.fingerprint()
    sha = hashlib.sha256(zoo["weights"].read_bytes()).hexdigest()
    assert (record["config"]["init_from"], record["config"]["init_from_sha256"]) == (str(zoo["weights"]), sha)
    # The weights are part of the run's identity (by content, not path): fine-tuning is another experiment.
    untuned = {**record["config"], "init_from": None, "init_from_sha256": None}
    fingerprint = record["dataset"]["fingerprint"]
    identities = {
        run_identity(c, spec_fingerprint=spec.fingerprint(), dataset_fingerprint=fingerprint, version="v")
        for c in (record["config"], untuned)
    }
    assert len(identities) == 2

    # With lr 0 the weights never move: the run's parameters are the file's (its BatchNorm statistics do move).
    trained = torch.load(cut.checkpoint_path, weights_only=False)["model"]
    start = read_weights(zoo["weights"], spec).state_dict
    params = [k for k in start if "running" not in k and "num_batches" not in k]
    assert params
    assert all(torch.equal(trained[k], start[k]) for k in params)


def test_init_from_weights_that_do_not_fit_stop_before_a_record(
    zoo: dict[str, Path], synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "results"
    argv = [
        "run",
        "--case",
        "hg1",
        "--init-from",
        str(zoo["weights"]),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--data-dir",
        str(synthetic_root),
        "--input-res",
        "64",
        "--batch",
        "4",
        "--limit-train",
        "8",
        "--limit-val",
        "6",
        "--out",
        str(out),
        "--checkpoint-dir",
        str(tmp_path / "runs"),
        "--quiet",
    ]
    err = one_line_error(main(argv), capsys.readouterr().err)
    assert "does not fit hg1" in err
    assert not list(out.rglob("*.json"))
    err = one_line_error(main([*argv[:4], str(tmp_path / "nope.pth"), *argv[5:]]), capsys.readouterr().err)
    assert "--init-from: weights file not found" in err
