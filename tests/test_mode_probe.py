"""`hgbench run --fast` on the CPU picks its mode by a short measured probe, cached per machine, torch and workload
(hgbench.train.mode_probe). A fake timer stands in for the training steps, so these tests take no time."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from hgbench.run.plan import make_plan
from hgbench.run.record import new_record
from hgbench.spec.cases import get_spec
from hgbench.spec.config import RunConfig
from hgbench.train import mode_probe, speed_modes
from hgbench.train.distributed import DistContext
from hgbench.train.mode_probe import MIN_GAIN, choose_fast_mode, describe_fast_mode, pick_fastest
from hgbench.train.speed_modes import ModeSettings

SPEC = get_spec("hg1")


class FakeTimer:
    """Seconds per step by mode settings, counting the calls (a probe that ran, or a cache that answered)."""

    def __init__(self, eager: float, channels_last: float, bf16: float) -> None:
        self.table = {
            ModeSettings(): eager,
            ModeSettings(channels_last=True): channels_last,
            ModeSettings(channels_last=True, amp=True): bf16,
        }
        self.calls: list[ModeSettings] = []

    def __call__(self, settings: ModeSettings) -> float:
        self.calls.append(settings)
        return self.table[settings]


@pytest.fixture
def probe_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(mode_probe.PROBE_ENV, raising=False)  # conftest turns it off for every other test


@pytest.fixture
def native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed_modes, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(mode_probe, "cpu_has_native_bf16", lambda: True)


def test_pick_fastest_needs_a_real_gain_to_climb_the_ladder() -> None:
    assert pick_fastest({"eager": 1.0, "channels_last": 0.99, "bf16": 0.4}) == "bf16"
    assert pick_fastest({"eager": 1.0, "channels_last": 1.0 - MIN_GAIN / 2}) == "eager"  # within noise: fp32 stays
    assert pick_fastest({"eager": 1.0, "channels_last": 0.8, "bf16": 0.78}) == "channels_last"
    assert pick_fastest({"eager": 1.0, "channels_last": 1.6, "bf16": 2.5}) == "eager"  # emulated bf16 loses


def test_probe_measures_once_then_reads_the_cache(probe_on, native_bf16, tmp_path: Path) -> None:
    timer = FakeTimer(eager=0.30, channels_last=0.31, bf16=0.12)
    first = choose_fast_mode("cpu", SPEC, batch=6, input_res=64, measure=timer, cache_dir=tmp_path)
    assert first.mode == "bf16"
    assert first.how == "measured"
    assert first.settings == {"channels_last": True, "amp": True, "compile": False, "decode": "workers"}
    assert first.probe["s_per_step"] == {"eager": 0.30, "channels_last": 0.31, "bf16": 0.12}
    assert first.probe["speedup_vs_eager"]["bf16"] == pytest.approx(2.5)
    assert len(timer.calls) == 3
    (cached_file,) = tmp_path.glob("*.json")
    assert json.loads(cached_file.read_text())["key"]["torch"] == torch.__version__

    again = choose_fast_mode("cpu", SPEC, batch=6, input_res=64, measure=timer, cache_dir=tmp_path)
    assert again.how == "cached"
    assert again.mode == "bf16"
    assert len(timer.calls) == 3
    assert "measured earlier, cached" in describe_fast_mode(again.to_dict())

    other = choose_fast_mode("cpu", SPEC, batch=12, input_res=64, measure=timer, cache_dir=tmp_path)
    assert other.how == "measured"
    assert len(timer.calls) == 6
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_a_corrupt_cache_file_is_measured_again(probe_on, native_bf16, tmp_path: Path) -> None:
    timer = FakeTimer(eager=0.30, channels_last=0.20, bf16=0.25)
    choose_fast_mode("cpu", SPEC, batch=6, input_res=64, measure=timer, cache_dir=tmp_path)
    (cached_file,) = tmp_path.glob("*.json")
    cached_file.write_text("{not json")
    choice = choose_fast_mode("cpu", SPEC, batch=6, input_res=64, measure=timer, cache_dir=tmp_path)
    assert choice.how == "measured"
    assert choice.mode == "channels_last"
    assert json.loads(cached_file.read_text())["mode"] == "channels_last"  # rewritten whole


def test_without_native_bf16_the_probe_does_not_time_bf16(probe_on, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(speed_modes, "cpu_has_native_bf16", lambda: False)
    timer = FakeTimer(eager=0.30, channels_last=0.45, bf16=0.01)
    choice = choose_fast_mode("cpu", SPEC, batch=6, input_res=64, measure=timer, cache_dir=tmp_path)
    assert choice.mode == "eager"  # channels_last measured slower: the old rule would have picked it
    assert ModeSettings(channels_last=True, amp=True) not in timer.calls
    assert "no native bf16" in choice.probe["skipped"]["bf16"]


def test_the_rule_decides_where_no_probe_runs(monkeypatch, tmp_path: Path) -> None:
    timer = FakeTimer(eager=1.0, channels_last=1.0, bf16=1.0)
    off = choose_fast_mode("cpu", SPEC, batch=6, input_res=64, measure=timer, cache_dir=tmp_path)  # conftest: off
    assert off.how == "rule"
    assert "HGBENCH_FAST_PROBE=0" in off.probe["reason"]
    monkeypatch.delenv(mode_probe.PROBE_ENV)
    ddp = choose_fast_mode("cpu", SPEC, batch=6, input_res=64, world_size=2, measure=timer, cache_dir=tmp_path)
    assert ddp.how == "rule"
    assert "distributed" in ddp.probe["reason"]
    assert timer.calls == []


def test_make_plan_records_the_measured_choice(probe_on, native_bf16, monkeypatch, tiny: RunConfig) -> None:
    timer = FakeTimer(eager=0.30, channels_last=0.28, bf16=0.10)
    monkeypatch.setattr(mode_probe, "measure_step", lambda spec, batch, input_res: timer)
    plan = make_plan(replace(tiny, fast=True), SPEC, DistContext())
    assert plan.config.amp
    assert plan.config.channels_last
    assert not plan.config.compile
    assert plan.config.decode == "workers"  # main-process decoding only serialises a CPU
    assert plan.fast_mode["mode"] == "bf16"
    assert plan.fast_mode["how"] == "measured"
    record = new_record(
        run_id="x", machine_info={}, commit_info={}, spec={}, config={}, dataset={}, model={}, fast_mode=plan.fast_mode
    )
    assert record["fast_mode"]["probe"]["s_per_step"]["bf16"] == 0.10
    eager = make_plan(tiny, SPEC, DistContext())
    assert eager.fast_mode is None
    assert not eager.config.amp


def test_fast_under_ddp_on_cuda_leaves_torch_compile_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """DDP's SyncBatchNorm breaks torch.compile's graph at every norm layer: compile time for no speed."""
    monkeypatch.setattr(speed_modes, "_bf16_reason", lambda device: None)
    monkeypatch.setattr(speed_modes, "_compile_reason", lambda device: None)
    cuda = torch.device("cuda")
    one = choose_fast_mode(cuda, SPEC, batch=6, input_res=64)
    ddp = choose_fast_mode(cuda, SPEC, batch=6, input_res=64, world_size=2)
    assert one.settings["compile"] is True
    assert ddp.settings == {**one.settings, "compile": False}
    assert ddp.mode == "bf16"
    assert "DDP" in ddp.probe["reason"]
