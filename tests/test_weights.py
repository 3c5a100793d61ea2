"""Weights of other tools: files saved in anibali's, pytorch-pose's and the study's layouts give the same heatmaps.

The networks that save them are `helpers.pose_hourglass.PoseNet`, a stand-in for pytorch-pose's module tree at tiny
sizes (few planes, 64 px input); the study's as-built quirks are its options.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers.pose_hourglass import PoseNet, pose_net, pytorch_pose_checkpoint, randomize
from torch import nn

import hgbench
from hgbench.errors import HGBenchError
from hgbench.models import build_model, create_model, read_weights
from hgbench.models.weights import PYTORCH_POSE
from hgbench.run.state import _rng_state
from hgbench.spec.cases import get_spec
from hgbench.train.checkpoint import save_checkpoint

FEATS = 8  # bottleneck planes of the tiny networks (the stem keeps its 64/128/256 channels)
RES = 64


def same_heatmaps(saved_by: nn.Module, loaded: nn.Module) -> None:
    x = torch.randn(1, 3, RES, RES, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = saved_by.eval()(x), loaded.eval()(x)
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert expected[-1].abs().mean() > 1e-3  # the comparison is not between two zeros


def test_the_stand_in_has_the_reference_parameter_counts() -> None:
    # Guards the fixture: at full size it is the public hg1 / hg8 (3,586,960 and 25,594,624 parameters).
    with torch.device("meta"):
        for name in ("hg1", "hg8"):
            net = PoseNet(depths=get_spec(name).depths, num_feats=128)
            assert sum(p.numel() for p in net.parameters()) == get_spec(name).expected_params


def test_anibalis_plain_state_dict(tmp_path: Path) -> None:
    spec = replace(get_spec("hg2"), num_feats=FEATS)
    net = pose_net(spec)
    torch.save(net.state_dict(), tmp_path / "bearpaw_hg2.pth")
    weights = read_weights(tmp_path / "bearpaw_hg2.pth", spec)
    assert (weights.layout, weights.container) == (PYTORCH_POSE, "state_dict")
    same_heatmaps(net, create_model(spec, checkpoint=tmp_path / "bearpaw_hg2.pth"))


def test_a_pytorch_pose_training_checkpoint(tmp_path: Path) -> None:
    spec = replace(get_spec("hg2"), num_feats=FEATS, num_blocks=2)  # its hg2 stacks 2 bottlenecks per unit
    net = pose_net(spec)
    path = pytorch_pose_checkpoint(net, tmp_path / "checkpoint.pth.tar")
    weights = read_weights(path, spec)
    assert weights.describe() == "pytorch-pose layout, training checkpoint (epoch 30), DataParallel keys"
    same_heatmaps(net, create_model(spec, checkpoint=path))


@pytest.mark.parametrize("case", ["3", "4", "5", "6", "8"])  # case 1: the layout of the tests above
def test_the_studys_own_checkpoints_in_their_as_built_layouts(tmp_path: Path, case: str) -> None:
    spec = replace(get_spec(case, as_built=True), num_feats=FEATS)
    net = pose_net(spec)
    path = pytorch_pose_checkpoint(net, tmp_path / f"case{case}.pth.tar")
    same_heatmaps(net, create_model(spec, checkpoint=path))


def test_hgbenchs_own_checkpoint_and_state_dict(tmp_path: Path) -> None:
    spec = replace(get_spec("hg1"), num_feats=FEATS)
    model = randomize(build_model(spec))
    save_checkpoint(tmp_path / "last.pt", {"spec": spec.to_dict(), "model": model.state_dict(), "rng": _rng_state()})
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    for name, container in (("last.pt", "hgbench checkpoint"), ("plain.pt", "state_dict")):
        weights = read_weights(tmp_path / name, spec)
        assert (weights.layout, weights.container) == ("hgbench", container)
        same_heatmaps(model, create_model(spec, checkpoint=tmp_path / name))


def test_the_top_level_api_is_the_factory() -> None:
    assert hgbench.create_model is create_model


def test_weights_of_another_case_are_one_line_with_counts_and_the_first_shape(tmp_path: Path) -> None:
    hg2 = replace(get_spec("hg2"), num_feats=FEATS)
    torch.save(pose_net(hg2).state_dict(), tmp_path / "hg2.pth")
    with pytest.raises(HGBenchError) as info:
        read_weights(tmp_path / "hg2.pth", replace(get_spec("hg8"), num_feats=FEATS))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'hg2.pth'} (pytorch-pose layout) does not fit hg8: ")
    assert " missing and 0 unexpected keys" in message
    assert "first shape that differs: none" in message
    with pytest.raises(HGBenchError, match=r"first shape that differs: layer3\.0\.conv1\.weight is \[8, 256, 1, 1\]"):
        read_weights(tmp_path / "hg2.pth", replace(hg2, num_feats=16))


def test_files_that_hold_no_weights(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(HGBenchError, match="cannot read weights file"):
        read_weights(tmp_path / "junk.pt", get_spec("hg1"))
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(HGBenchError, match="holds no network weights"):
        read_weights(tmp_path / "empty.pt", get_spec("hg1"))
    with pytest.raises(HGBenchError, match="weights file not found"):
        read_weights(tmp_path / "nope.pt", get_spec("hg1"))
