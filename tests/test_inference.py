"""The prediction passes (hgbench/train/inference.py): what the validation loss sums, and how the timed passes start."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers.host_sync import fake_batches
from torch import nn

from hgbench.models import build_model
from hgbench.run.runner import run
from hgbench.spec.cases import get_spec
from hgbench.spec.config import RunConfig
from hgbench.train.inference import predict, timed_passes
from hgbench.train.loss import heatmap_loss
from hgbench.train.training import StepOptions

CPU = StepOptions(torch.device("cpu"))


def test_validation_loss_sums_every_stack_as_the_training_loss_does() -> None:
    torch.manual_seed(0)
    model = build_model(get_spec("hg2")).eval()
    (batch,) = fake_batches(1)
    result = predict(model, [batch], CPU, input_res=64)
    with torch.no_grad():
        outputs = model(batch["image"])
    assert len(outputs) == 2
    expected = heatmap_loss(outputs, batch["target"], batch["target_weight"]).item()
    assert result.loss == pytest.approx(expected, rel=1e-5)
    assert result.loss > heatmap_loss(outputs[-1:], batch["target"], batch["target_weight"]).item()


class ColdStartLoader:
    """A loader whose first iteration pays a start-up (as new DataLoader workers do); it remembers who paid it."""

    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches
        self.started = False
        self.cold_iterations = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        if not self.started:
            self.started = True
            self.cold_iterations += 1
        yield from self.batches


class CountingModel(nn.Module):
    """Counts forward calls in eval mode; stands in for the compiled model."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.eval_calls = 0

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not self.training:
            self.eval_calls += 1
        return self.inner(x)


def test_both_timed_passes_start_warm() -> None:
    loader = ColdStartLoader(fake_batches(3))
    shapes: list[int] = []
    model = build_model(get_spec("hg1"))
    model.register_forward_pre_hook(lambda m, args: shapes.append(args[0].shape[0]))
    passes = timed_passes(model, loader, CPU, input_res=64, flip_test=True, tail=1, batch_size=2)
    assert set(passes) == {"plain", "flip"}
    assert loader.cold_iterations == 1  # paid once, by the untimed warm-up, not by the plain pass
    # The warm-up also ran the last, partial batch size (plain and mirrored) before anything was timed.
    warm = shapes[: len(shapes) - 3 - 2 * 3]
    assert 1 in warm
    assert warm.count(1) == 2


def test_a_compiled_run_times_inference_with_the_compiled_model(
    tiny: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrappers: list[CountingModel] = []

    def fake_compile(model: nn.Module, **kwargs: object) -> nn.Module:
        wrappers.append(CountingModel(model))
        return wrappers[-1]

    monkeypatch.setattr(torch, "compile", fake_compile)
    outcome = run(replace(tiny, compile=True), progress=False)
    record = json.loads(outcome.record_path.read_text())
    assert record["config"]["compile"] is True
    (compiled,) = wrappers
    batches = -(-tiny.limit_val // tiny.test_batch_size)
    # Every batch of the plain and the flip pass (two forwards each) went through the compiled model.
    assert compiled.eval_calls >= batches + 2 * batches


def test_progress_shows_the_loss_during_the_epoch_and_validation_batches() -> None:
    from hgbench.train.training import train_one_epoch

    model = build_model(get_spec("hg1"))
    seen: list[tuple[int, float | None]] = []
    train_one_epoch(
        model,
        fake_batches(4),
        torch.optim.Adam(model.parameters()),
        CPU,
        epoch=1,
        on_progress=lambda step, loss: seen.append((step, loss)),
    )
    assert [step for step, _ in seen] == [1, 2, 3, 4]
    losses = [loss for _, loss in seen]
    assert all(loss is not None and loss > 0 for loss in losses)  # every step, not only every 20th
    assert len(set(losses)) > 1  # the running mean moves within the epoch
    done: list[int] = []
    predict(model, fake_batches(3), CPU, input_res=64, on_progress=done.append)
    assert done == [1, 2, 3]


class HeatmapStub(nn.Module):
    """The network's interface at a fraction of its cost: one stack of 16 heatmaps at a quarter of the input side."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 4, stride=4)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.conv(x)]


@pytest.mark.parametrize("validated_first", [True, False], ids=["validation-warmed", "fresh"])
def test_each_timed_pass_fetches_the_split_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, validated_first: bool
) -> None:
    """The warm-up must leave no prefetched batches behind in a persistent-worker loader: the next pass's `iter()`
    would fetch and drop them inside its timed span (48 samples cost 64 fetches)."""
    from helpers.counting import CountingDataset

    from hgbench.data.loader import make_loader
    from hgbench.train import inference

    ds = CountingDataset(48, tmp_path / "fetches.log", res=32)
    loader = make_loader(ds, 4, shuffle=False, workers=1, pin_memory=False, drop_last=False, prefetch_factor=4)
    if validated_first:  # as the runner's loader comes: one whole validation pass behind it
        for _ in loader:
            pass
    per_pass: list[int] = []
    real_predict = inference.predict

    def counted(*args: object, **kwargs: object) -> inference.PassResult:
        before = ds.fetches()
        result = real_predict(*args, **kwargs)
        per_pass.append(ds.fetches() - before)
        return result

    monkeypatch.setattr(inference, "predict", counted)
    start = ds.fetches()
    inference.timed_passes(HeatmapStub(), loader, CPU, input_res=32, flip_test=True, tail=0, batch_size=4)
    assert per_pass == [len(ds), len(ds)]  # plain, flip
    # Nothing else was fetched, where a leftover could hide: a fresh loader's workers are started by one whole pass.
    assert ds.fetches() - start == (0 if validated_first else len(ds)) + 2 * len(ds)
