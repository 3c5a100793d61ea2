"""The network: output shapes, structure of each case, gradients, input sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hgbench.models import Bottleneck, build_model
from hgbench.spec.cases import STUDY_CASES, get_spec, list_cases
from hgbench.spec.geometry import heatmap_res


def _bottlenecks(model: nn.Module) -> list[Bottleneck]:
    return [m for m in model.modules() if isinstance(m, Bottleneck)]


@pytest.mark.parametrize(("name", "as_built"), [(c, False) for c in list_cases()] + [(c, True) for c in STUDY_CASES])
def test_forward_returns_one_heatmap_tensor_per_running_stack(name: str, as_built: bool) -> None:
    spec = get_spec(name, as_built=as_built)
    res = spec.min_input_res()
    model = build_model(spec).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, res, res))
    assert isinstance(out, list)
    assert len(out) == spec.stacks_run
    assert all(o.shape == (2, 16, heatmap_res(res), heatmap_res(res)) for o in out)  # the stride is the network's


@pytest.mark.parametrize("res", [64, 128])
def test_input_resolution_is_a_parameter(res: int) -> None:
    out = build_model(get_spec("hg1")).eval()(torch.randn(1, 3, res, res))
    assert out[0].shape == (1, 16, heatmap_res(res), heatmap_res(res))


@pytest.mark.parametrize(
    ("name", "as_built", "stacks_run", "depths", "norm_type", "steps"),
    [
        ("1", False, 8, [4] * 8, nn.BatchNorm2d, 3),
        ("2", False, 8, [4] * 8, nn.BatchNorm2d, 3),
        ("3", False, 6, [4] * 6, nn.BatchNorm2d, 3),
        ("3", True, 6, [4] * 8, nn.BatchNorm2d, 3),
        ("4", False, 6, [4] * 6, nn.BatchNorm2d, 3),
        ("4", True, 6, [4] * 8, nn.BatchNorm2d, 3),
        ("5", False, 8, [4] * 8, nn.InstanceNorm2d, 3),
        ("5", True, 8, [4] * 8, nn.GroupNorm, 3),
        ("6", False, 8, [2, 2, 2, 3, 3, 3, 4, 4], nn.BatchNorm2d, 3),
        ("7", False, 8, [4, 4, 3, 3, 3, 3, 2, 2], nn.BatchNorm2d, 3),
        ("8", False, 8, [4] * 8, nn.BatchNorm2d, 4),
        ("8", True, 8, [4] * 8, nn.BatchNorm2d, 4),
    ],
)
def test_case_structure(name: str, as_built: bool, stacks_run: int, depths: list[int], norm_type: type, steps: int):
    model = build_model(get_spec(name, as_built=as_built))
    assert model.stacks_run == stacks_run
    assert [hg.depth for hg in model.hg] == depths
    blocks = _bottlenecks(model)
    assert all(isinstance(b.bn1, norm_type) for b in blocks)  # stem bottlenecks included
    assert all(b.num_steps == steps for b in blocks)
    assert isinstance(model.bn1, nn.BatchNorm2d)
    assert all(isinstance(fc[1], nn.BatchNorm2d) for fc in model.fc)


def test_case_4_described_has_four_bottlenecks_per_residual_unit() -> None:
    model = build_model(get_spec(4))
    assert all(len(unit) == 4 for level in model.hg[0].levels for unit in level)
    assert len(model.res[0]) == 4
    assert model.hg[0].levels[0][0][0].conv3.out_channels == 128


def test_case_8_extra_step_own_weights_vs_shared_as_built() -> None:
    described = _bottlenecks(build_model(get_spec(8)))[0]
    assert described.conv2b is not described.conv2
    assert not described.share_extra_step
    built = _bottlenecks(build_model(get_spec(8, as_built=True)))[0]
    assert built.share_extra_step
    assert not hasattr(built, "conv2b")
    # BN2 runs twice per forward as built, so its batch counter moves by two.
    built.train()
    built(torch.randn(2, built.bn1.num_features, 8, 8))
    assert int(built.bn2.num_batches_tracked) == 2


def test_instance_norm_is_affine_as_described() -> None:
    block = _bottlenecks(build_model(get_spec(5)))[0]
    assert block.bn1.affine
    assert not block.bn1.track_running_stats


@pytest.mark.parametrize("name", ["hg2", "8", "5"])
def test_every_used_parameter_gets_a_gradient(name: str) -> None:
    spec = get_spec(name)
    model = build_model(spec).train()
    out = model(torch.randn(2, 3, spec.min_input_res(), spec.min_input_res()))
    sum(o.square().mean() for o in out).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
