"""The runner end to end on tiny synthetic data: records, resume, NaN, interrupts, sweep skipping, DDP on gloo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import pytest
import torch
from helpers.damage import garble_jpeg, truncate_jpeg

from hgbench.cli import main
from hgbench.errors import HGBenchError, RunFailed
from hgbench.eval.metrics import pckh_mean_interval, pckh_mean_of_sums, person_masks_from_dict
from hgbench.run import results as store
from hgbench.run.runner import run
from hgbench.spec.config import RunConfig
from hgbench.train.checkpoint import load_checkpoint

DETERMINISTIC_KEYS = ("train_loss", "val_loss", "heatmap_acc", "pckh", "lr", "steps", "images")


def _epochs(record: dict) -> list[dict]:
    return [{k: e[k] for k in DETERMINISTIC_KEYS} for e in record["results"]["epochs"]]


def _argv(tiny: RunConfig, *extra: str) -> list[str]:
    return [
        "run",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--data-dir",
        tiny.data_dir,
        "--out",
        tiny.out,
        "--checkpoint-dir",
        tiny.checkpoint_dir,
        "--quiet",
        *extra,
    ]


def _tiny_argv(tiny: RunConfig, *extra: str) -> list[str]:
    """`hgbench run` flags for the `tiny` config (hg1 at 64 px on 8 + 6 synthetic people), plus `extra`."""
    sizes = ("--epochs", "1", "--batch", "4", "--input-res", "64", "--limit-train", "8", "--limit-val", "6")
    return _argv(tiny, *sizes, *extra)


def test_a_run_writes_a_complete_finished_record(tiny: RunConfig) -> None:
    outcome = run(replace(tiny, epochs=2), progress=False)
    assert outcome.status == "finished"
    record = json.loads(outcome.record_path.read_text())
    assert store.validate_record(record) == []
    assert record["status"] == "finished"
    assert record["finished"]
    assert record["spec"]["name"] == "hg1"
    assert record["config"]["epochs"] == 2
    assert record["model"]["params"] == 3_586_960
    epochs = record["results"]["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert e["wall_s"] > 0
        assert 0 <= e["data_wait_s"] <= e["wall_s"]
        assert e["compute_s"] > 0
        assert e["images"] == 8
        assert e["images_per_s"] > 0
        assert 0 <= e["pckh"] <= 100
        assert e["energy_j"] is None  # no GPU here: null, not a guess
    train = record["results"]["train"]
    assert train["min_per_epoch"]["rounds"] == 1
    assert train["warmup_excluded"]
    assert 0 <= train["data_wait_fraction"] < 1
    pckh = record["results"]["pckh"]
    assert set(pckh) >= {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "mean_weighted"}
    low, high = pckh["ci95"]  # the Mean's bootstrap interval over the 6 people, recomputable from their masks
    assert low <= pckh["Mean"] <= high
    scored, correct = person_masks_from_dict(pckh["per_person"])
    assert scored.shape == (6, 16)
    assert not (correct & ~scored).any()
    assert pckh_mean_of_sums(correct.sum(0), scored.sum(0)) == pytest.approx(pckh["Mean"])
    assert pckh_mean_interval([(scored, correct)]) == pytest.approx((low, high))
    assert record["results"]["peak_host_memory_mib"] > 50  # torch alone is more than that
    assert record["fast_mode"] is None  # no --fast
    inference = record["results"]["inference"]
    assert inference["n_images"] == 6
    assert inference["plain"]["wall_min"] > 0
    assert inference["plain"]["device_min"] is None
    assert inference["flip"]["wall_min"] > 0
    # An epoch's validation is the plain pass (no flip test) of that epoch's weights: `plot --kind curves` says so.
    assert epochs[-1]["pckh"] == pytest.approx(inference["plain"]["pckh_mean"])
    tel = record["results"]["telemetry"]
    assert tel["available"] is False
    assert tel["reason"]
    assert record["machine_info"]["torch"] == torch.__version__
    ckpt = load_checkpoint(outcome.checkpoint_path)
    assert ckpt.epoch == 2
    assert ckpt.spec.name == "hg1"


def test_a_fast_run_on_cuda_records_device_time_and_telemetry(tiny: RunConfig, cuda_device: torch.device) -> None:
    """The CUDA paths of a run: events, device-idle time, GPU decoding, bf16 + channels_last, NVML where present."""
    cfg = replace(tiny, epochs=2, device="cuda", workers=1, fast=True)
    outcome = run(cfg, progress=False)
    assert outcome.status == "finished"
    record = json.loads(outcome.record_path.read_text())
    config = record["config"]
    assert (config["amp"], config["channels_last"], config["decode"]) == (True, True, "device")
    for e in record["results"]["epochs"]:
        assert 0 < e["compute_s"] <= e["wall_s"]
        assert e["device_idle_s"] is not None
        assert 0 <= e["device_idle_s"] <= e["wall_s"]
    for kind in ("plain", "flip"):
        timed = record["results"]["inference"][kind]
        assert 0 < timed["device_min"] <= timed["wall_min"]  # the GPU's part of a pass the host waited for
    assert record["results"]["peak_memory_mib"] > 0
    assert record["machine_info"]["gpu_name"]
    if record["results"]["telemetry"]["available"]:
        # Epoch 1 lasts seconds (workers, autotuning, compilation); a later one may be shorter than the counter's tick.
        assert record["results"]["epochs"][0]["energy_j"] > 0
        assert all(e["energy_j"] >= 0 for e in record["results"]["epochs"])


def test_resume_after_a_kill_ends_with_the_same_record(tiny: RunConfig, tmp_path: Path) -> None:
    full = run(replace(tiny, epochs=2, out=str(tmp_path / "a"), checkpoint_dir=str(tmp_path / "ca")), progress=False)
    cut = replace(tiny, epochs=2, out=str(tmp_path / "b"), checkpoint_dir=str(tmp_path / "cb"))
    killed = run(cut, progress=False, stop_after_epoch=1)
    on_disk = json.loads(killed.record_path.read_text())
    assert on_disk["status"] == "interrupted"
    assert "after epoch 1" in on_disk["status_reason"]
    assert len(on_disk["results"]["epochs"]) == 1
    resumed = run(cut, resume=True, progress=False)
    assert resumed.record_path == killed.record_path  # the same record is completed, not a new one
    a = json.loads(full.record_path.read_text())
    b = json.loads(resumed.record_path.read_text())
    assert b["status"] == "finished"
    assert _epochs(a) == _epochs(b)
    assert a["results"]["pckh"] == b["results"]["pckh"]
    # The resumed process paid its own start-up (workers, autotuning): its first epoch is a warm-up epoch too.
    assert [e["warmup"] for e in a["results"]["epochs"]] == [True, False]
    assert [e["warmup"] for e in b["results"]["epochs"]] == [True, True]


def test_resume_and_the_sweeps_skip_share_one_identity(tiny: RunConfig, synthetic_root: Path, tmp_path: Path) -> None:
    from hgbench.run.plan import planned_identity

    outcome = run(tiny, progress=False)
    record = json.loads(outcome.record_path.read_text())
    identity = planned_identity(tiny)
    assert load_checkpoint(outcome.checkpoint_path).identity == identity == store.record_identity(record)
    assert store.find_finished(tiny.out, identity) == outcome.record_path
    # The same flags on other data (the data directory is not a setting, the data's fingerprint is) are another run.
    other = tmp_path / "other-data"
    shutil.copytree(synthetic_root, other)
    annotations = other / "mpii_annotations.json"
    people = json.loads(annotations.read_text())
    people[0]["scale_provided"] *= 1.01
    annotations.write_text(json.dumps(people))
    moved = replace(tiny, data_dir=str(other))
    assert planned_identity(moved) != identity
    assert store.find_finished(tiny.out, planned_identity(moved)) is None


def test_resume_refuses_a_checkpoint_of_another_case(tiny: RunConfig, tmp_path: Path) -> None:
    outcome = run(tiny, progress=False)
    from hgbench.spec.cases import get_spec
    from hgbench.train.checkpoint import check_compatible

    with pytest.raises(HGBenchError, match=r"belongs to hg1 .* not case 2"):
        check_compatible(load_checkpoint(outcome.checkpoint_path), get_spec("2"), 64)
    with pytest.raises(HGBenchError, match="trained at input 64x64, not 128"):
        check_compatible(load_checkpoint(outcome.checkpoint_path), get_spec("hg1"), 128)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 96.00 GiB"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to "
            "allocate 412316860416 bytes."
        ),
        # As the DataLoader re-raises a worker's error in the main process: its own type, the worker's traceback.
        cv2.error(
            "Caught error in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n  File "
            '"worker.py", line 1\ncv2.error: OpenCV(4.10.0) alloc.cpp:73: error: (-4:Insufficient memory) Failed to '
            "allocate 1610612736 bytes in function 'OutOfMemoryError'\n"
        ),
    ],
    ids=["device", "host", "worker"],
)
def test_out_of_memory_is_a_failed_record_and_one_line(
    tiny: RunConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, error: Exception
) -> None:
    import hgbench.run.runner as runner

    def exhausted(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(runner, "train_one_epoch", exhausted)
    argv = _tiny_argv(tiny, "--case", "hg1")
    assert main(argv) == 3
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1
    assert "out of" in err
    assert "memory" in err
    assert "smaller --batch or --input-res" in err
    (path,) = Path(tiny.out).rglob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "failed"
    assert "smaller --batch" in record["status_reason"]
    assert f"hg1 failed: {record['status_reason']}; record {path}" in captured.out


def test_every_stop_prints_the_record_and_the_next_step(
    tiny: RunConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Ctrl-C in epoch 2: the record's path and the command that resumes it, not only 'interrupted'. A --limit-val
    larger than the split (8 people) says so and the record keeps what was used."""
    import hgbench.run.runner as runner

    real = runner.train_one_epoch

    def interrupt_in_epoch_2(*args, epoch: int, **kwargs):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(*args, epoch=epoch, **kwargs)

    monkeypatch.setattr(runner, "train_one_epoch", interrupt_in_epoch_2)
    assert main(_tiny_argv(tiny, "--case", "hg1", "--epochs", "2", "--limit-val", "24")) == 130
    out, err = capsys.readouterr()
    (path,) = Path(tiny.out).rglob("*.json")
    assert err.strip() == "hgbench: interrupted"
    assert "hg1 interrupted: interrupted during epoch 2; epochs 1-1 are checkpointed" in out
    assert f"record {path}; continue with: hgbench run --case hg1 --resume {path}" in out
    assert "hgbench: --limit-val 24: the split has 8 people; all 8 are used" in out
    dataset = json.loads(path.read_text())["dataset"]
    assert (dataset["val_size"], dataset["limit_notes"]) == (
        8,
        ["--limit-val 24: the split has 8 people; all 8 are used"],
    )


def test_an_unknown_device_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--case", "hg1", "--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "hgbench: error: unknown device 'gpu'; use auto, cpu, cuda or cuda:N"


def test_nan_loss_stops_the_run_with_a_failed_record(tiny: RunConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    import hgbench.train.training as training

    real = training.heatmap_loss
    monkeypatch.setattr(training, "heatmap_loss", lambda *a: real(*a) * float("nan"))
    with pytest.raises(RunFailed, match="loss became nan"):
        run(tiny, progress=False)
    [path] = list(Path(tiny.out).rglob("*.json"))
    record = json.loads(path.read_text())
    assert record["status"] == "failed"
    assert "nan" in record["status_reason"]


def test_nan_loss_exits_non_zero_with_one_line(tiny: RunConfig, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import hgbench.train.training as training

    monkeypatch.setattr(training, "heatmap_loss", lambda out, *a: out[0].sum() * float("inf"))
    code = main(_tiny_argv(tiny, "--case", "hg1"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert len(err) == 1
    assert err[0].startswith("hgbench: error: loss became")


def test_ctrl_c_marks_the_record_interrupted(tiny: RunConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    import hgbench.run.runner as runner

    real = runner.train_one_epoch

    def interrupt_in_epoch_2(*args, epoch: int, **kwargs):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(*args, epoch=epoch, **kwargs)

    monkeypatch.setattr(runner, "train_one_epoch", interrupt_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(replace(tiny, epochs=3), progress=False)
    [path] = list(Path(tiny.out).rglob("*.json"))
    record = json.loads(path.read_text())
    assert record["status"] == "interrupted"
    assert "during epoch 2" in record["status_reason"]
    assert len(record["results"]["epochs"]) == 1


def test_unwritable_output_is_an_error_before_training(tiny: RunConfig, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(HGBenchError, match="cannot write to"):
        run(replace(tiny, out=str(blocker / "results")), progress=False)


def test_bad_configuration_is_a_clear_error(tiny: RunConfig) -> None:
    with pytest.raises(HGBenchError, match="instance norm"):
        run(replace(tiny, case="5"), progress=False)
    with pytest.raises(HGBenchError, match="--batch must be at least 2"):
        run(replace(tiny, batch_size=1), progress=False)


def test_runs_on_the_real_mpii_sample_directory(tiny: RunConfig, mpii_sample: Path) -> None:
    """Real JPEGs (progressive ones too) and the bundled ground truth matched to the sample's first five val people."""
    outcome = run(
        replace(tiny, data_dir=str(mpii_sample), batch_size=2, limit_train=None, limit_val=None), progress=False
    )
    record = json.loads(outcome.record_path.read_text())
    assert record["status"] == "finished"
    assert record["dataset"]["name"] == "mpii"
    assert (record["dataset"]["train_size"], record["dataset"]["val_size"]) == (2, 5)
    assert record["results"]["pckh"]["count"] == 5


def _damage_val_image(root: Path, how: str) -> tuple[str, int]:
    """Break the second val person's image in a copy of the data: truncate it, or zero its inside (found at decode)."""
    entries = json.loads((root / "mpii_annotations.json").read_text())
    vals = [e["img_paths"] for e in entries if e["isValidation"]]
    name = vals[1]
    (truncate_jpeg if how == "truncated" else garble_jpeg)(root / "images" / name)
    return name, vals.count(name)


@pytest.mark.parametrize(("how", "decode"), [("truncated", "workers"), ("garbled", "workers"), ("garbled", "device")])
def test_skipped_val_images_leave_pckh_over_the_others(
    tiny: RunConfig, synthetic_root: Path, tmp_path: Path, how: str, decode: str
) -> None:
    """A corrupt val image, found up front or only at decode time, is listed and left out of PCKh, not scored as 0."""
    import shutil

    root = Path(shutil.copytree(synthetic_root, tmp_path / "data"))
    name, people = _damage_val_image(root, how)
    cfg = replace(tiny, data_dir=str(root), limit_val=None, skip_bad_images=True, decode=decode)
    record = json.loads(run(cfg, progress=False).record_path.read_text())
    assert record["status"] == "finished"
    assert record["dataset"]["skipped_images"] == [f"images/{name}"]
    val_people = 8  # the synthetic_root fixture's val split
    if how == "truncated":  # found up front: not in the split at all
        assert record["dataset"]["val_size"] == val_people - people
        assert record["results"]["inference"]["n_excluded"] == 0
    else:  # found while decoding: run, but not scored
        assert record["dataset"]["val_size"] == val_people
        assert record["results"]["inference"]["n_excluded"] == people
    assert record["results"]["pckh"]["count"] == val_people - people


def test_fewer_people_than_one_batch_is_a_clear_error(tiny: RunConfig) -> None:
    with pytest.raises(HGBenchError, match="4 training people .* fewer than one batch of 6"):
        run(replace(tiny, limit_train=4, batch_size=6), progress=False)


def test_unknown_case_on_the_command_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--case", "42"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hgbench: error: unknown case '42'")
    assert "Valid cases: 1, 2" in err


def test_sweep_skips_runs_already_finished_with_the_same_config(
    tiny: RunConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from hgbench.commands import run as run_cmd

    argv = _tiny_argv(tiny, "--case", "all")
    args = __import__("hgbench.cli", fromlist=["make_parser"]).make_parser().parse_args(argv)
    run(run_cmd.config_from_args(args, "2"), progress=False)  # case 2 really finishes with this config

    called: list[str] = []

    def fake_run(cfg: RunConfig, **kwargs):
        called.append(cfg.case)
        return __import__("hgbench.run.runner", fromlist=["RunOutcome"]).RunOutcome("finished", None, None, None)

    monkeypatch.setattr("hgbench.run.runner.run", fake_run)
    assert main(argv) == 0
    assert called == ["1", "3", "4", "5", "6", "7", "8"]
    out = capsys.readouterr().out
    assert "case 2: already finished with this config" in out
    assert "skipping (--force measures it again)" in out
    called.clear()
    assert main([*argv, "--force"]) == 0  # measured again: every case runs, a new record each
    assert called == ["1", "2", "3", "4", "5", "6", "7", "8"]
    called.clear()
    assert main([*argv, "--epochs", "2"]) == 0  # another config (the last --epochs wins): nothing to skip
    assert called == ["1", "2", "3", "4", "5", "6", "7", "8"]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny: RunConfig, tmp_path: Path) -> None:
    # One step per epoch (4 people, batch 4): the first epoch's loss is computed before any update and must agree to
    # float32 rounding; later epochs agree to the ~1% that float32 gradients of these networks are good to
    # (the exact equivalence is tested in float64 in test_distributed.py).
    # The ranks' load meters read synthetic counters (tests/helpers/two_ranks_busy.py): both ranks busy, nothing else.
    cfg = replace(tiny, epochs=2, limit_train=4, flip_test=False)
    single = run(replace(cfg, out=str(tmp_path / "one"), checkpoint_dir=str(tmp_path / "c1")), progress=False)
    tests = str(Path(__file__).parent)
    path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",  # a free port: another suite on the machine may hold any fixed one
        "-m",
        "helpers.two_ranks_busy",  # hgbench.cli, its load meters reading the synthetic counters
        "run",
        "--case",
        "hg1",
        "--epochs",
        "2",
        "--batch",
        "4",
        "--test-batch",
        "4",
        "--input-res",
        "64",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--data-dir",
        cfg.data_dir,
        "--limit-train",
        "4",
        "--limit-val",
        "6",
        "--no-flip-test",
        "--out",
        str(tmp_path / "two"),
        "--checkpoint-dir",
        str(tmp_path / "c2"),
        "--quiet",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)  # liveness only
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = list((tmp_path / "two").rglob("*.json"))  # only rank 0 writes
    two = json.loads(path.read_text())
    one = json.loads(single.record_path.read_text())
    assert two["status"] == "finished"
    assert two["config"]["world_size"] == 2
    assert one["config"]["world_size"] == 1
    e1, e2 = one["results"]["epochs"], two["results"]["epochs"]
    assert [e["images"] for e in e2] == [e["images"] for e in e1] == [4, 4]
    assert e2[0]["train_loss"] == pytest.approx(e1[0]["train_loss"], rel=1e-5)
    assert e2[1]["train_loss"] == pytest.approx(e1[1]["train_loss"], rel=2e-2)
    assert e2[1]["val_loss"] == pytest.approx(e1[1]["val_loss"], rel=5e-2)
    # Predictions are gathered from both ranks: the PCKh covers every validation person exactly once.
    assert two["results"]["pckh"]["count"] == one["results"]["pckh"]["count"] == 6
    # Rank 1's CPU time is the run's own in every window, the final pass rank 0 runs while rank 1 waits included:
    # the run's own processes never make it contended.
    windows = [e["load"] for e in e2] + [two["results"]["inference"]["load"]]
    assert [(w["own_cpu_s"], w["other_cpu_s"], w["contended"]) for w in windows] == [(2.0, 0.0, False)] * 3
    assert two["results"]["contention"]["contended"] is False


def test_resume_finds_the_interrupted_run_of_the_case_and_says_which(
    tiny: RunConfig, capsys: pytest.CaptureFixture
) -> None:
    killed = run(replace(tiny, epochs=2), progress=False, stop_after_epoch=1)
    capsys.readouterr()
    # Only the case (and where things live): the run's own settings come from its record, not from the defaults.
    assert main(_argv(tiny, "--case", "hg1", "--resume")) == 0
    out = capsys.readouterr().out
    assert f"resuming the latest interrupted run of hg1: {killed.record_path}" in out
    record = json.loads(killed.record_path.read_text())
    assert record["status"] == "finished"
    assert len(record["results"]["epochs"]) == 2
    assert f"checkpoint {record['checkpoint']}" in out  # printed and recorded


def test_resume_refuses_rather_than_start_another_run(tiny: RunConfig, capsys: pytest.CaptureFixture) -> None:
    assert main(_argv(tiny, "--case", "hg2", "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hgbench: error: --resume: no interrupted run of hg2")
    assert not list(Path(tiny.out).rglob("*.json"))  # nothing was started
    killed = run(replace(tiny, epochs=2), progress=False, stop_after_epoch=1)
    assert main(_argv(tiny, "--case", "hg1", "--resume", "--epochs", "5")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"hgbench run --case hg1 --resume {killed.record_path}" in err
    assert main(_argv(tiny, "--case", "hg1", "--resume", str(killed.record_path))) == 0


def test_the_record_names_the_checkpoint_and_smoke_runs_do_not_keep_theirs(tiny: RunConfig) -> None:
    kept = run(tiny, progress=False)
    assert json.loads(kept.record_path.read_text())["checkpoint"] == str(kept.checkpoint_path)
    assert kept.checkpoint_path.is_file()
    dropped = run(replace(tiny, seed=1), progress=False, keep_checkpoint=False)
    record = json.loads(dropped.record_path.read_text())
    assert record["status"] == "finished"
    assert record["checkpoint"] is None
    assert dropped.checkpoint_path is None
    assert len(list(Path(tiny.checkpoint_dir).glob("*/last.pt"))) == 1
