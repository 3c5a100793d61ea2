"""TensorBoard beside every run (hgbench.tracking): the event files read back with TensorBoard's own reader and checked
against the record of the same run: per-epoch scalars, the final figures, the HParams entry and the pictures; a
resumed run (one curve, no step twice), a 2-process DDP run (one writer), `hgbench export tensorboard` (idempotent),
a sweep passing --tensorboard to its workers, and a tracker that fails costing the run nothing."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers.tracked_figures import EPOCH_TAGS, FINAL_TAGS, GROUPS
from PIL import Image

from hgbench import cli
from hgbench.run.runner import run
from hgbench.spec.config import RunConfig
from hgbench.tracking import TrackingOptions
from hgbench.tracking.pictures import chosen_people


def events(folder: Path):
    """TensorBoard's own reader over an event folder, everything kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def run_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("hgbench-run.json"))


def check_scalars_match_the_record(acc, record: dict) -> None:
    epochs = record["results"]["epochs"]
    for tag, read in EPOCH_TAGS.items():
        logged = acc.Scalars(tag)
        expected = [(e["epoch"], read(e)) for e in epochs if read(e) is not None]
        assert [s.step for s in logged] == [step for step, _ in expected], tag  # every epoch once, in order
        assert [s.value for s in logged] == pytest.approx([v for _, v in expected], rel=1e-6, abs=1e-9), tag
    for tag in ("gpu/power_w", "gpu/energy_j", "gpu/utilisation_pct", "time/device_idle_min"):
        assert tag not in acc.Tags()["scalars"]  # null on a CPU: left out, never a 0


def check_final_and_hparams(acc, record: dict) -> None:
    from tensorboard.plugins.hparams import plugin_data_pb2

    last = len(record["results"]["epochs"])
    for tag, read in FINAL_TAGS.items():
        try:
            expected = read(record)
        except TypeError:  # the flip pass's figures of a --no-flip-test run: null
            expected = None
        if expected is None:
            assert tag not in acc.Tags()["scalars"], tag  # not measured: left out, never a 0
            continue
        [logged] = acc.Scalars(tag)
        assert (logged.step, logged.value) == (last, pytest.approx(expected, rel=1e-6)), tag
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["config.lr"].number_value == pytest.approx(record["config"]["lr"])
    assert hp["config.epochs"].number_value == record["config"]["epochs"]
    assert hp["spec.num_stacks"].number_value == record["spec"]["num_stacks"]
    assert hp["spec.name"].string_value == record["spec"]["name"]
    assert hp["config.lr_milestones"].string_value == json.dumps(record["config"]["lr_milestones"])
    assert hp["model.params"].number_value == record["model"]["params"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"final/pckh_Mean", "final/inference_min", "final/min_per_epoch"} <= metrics


def test_a_run_shows_its_record_in_tensorboard_and_keeps_the_folder_when_its_checkpoint_goes(
    tiny: RunConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = run(replace(tiny, epochs=2), progress=False, keep_checkpoint=False)  # a smoke run's: deleted
    record = json.loads(outcome.record_path.read_text())
    root = Path(tiny.checkpoint_dir) / "tensorboard"
    [folder] = run_folders(root)
    machine = record["machine_info"]["machine_id"]
    assert folder == root / machine / outcome.record_path.stem  # named like the record
    assert record["tracking"] == {"tensorboard": {"dir": str(folder), "error": None, "unsent": []}}
    assert record["checkpoint"] is None
    assert not Path(tiny.checkpoint_dir, outcome.record_path.stem).exists()
    acc = events(folder)
    check_scalars_match_the_record(acc, record)
    check_final_and_hparams(acc, record)
    # Four fixed validation people, every epoch, as JPEGs.
    pictures = sorted(t for t in acc.Tags()["images"])
    assert pictures == [f"pictures/val_{i}" for i in range(4)]
    for tag in pictures:
        shots = acc.Images(tag)
        assert [s.step for s in shots] == [1, 2]
        image = Image.open(io.BytesIO(shots[-1].encoded_image_string))
        assert image.format == "JPEG"
        assert image.size == (shots[-1].width, shots[-1].height)
        assert np.asarray(image).std() > 10  # a drawn picture, not a blank
    assert "warning" not in capsys.readouterr().err


def test_the_pictures_are_four_people_spread_over_the_split_and_a_left_out_one_is_not_drawn(
    synthetic_root: Path,
) -> None:
    from hgbench.data.mpii import MPIIDataset
    from hgbench.tracking.pictures import PictureSource

    assert chosen_people(8) == [0, 2, 5, 7]
    assert chosen_people(3) == [0, 1, 2]
    assert chosen_people(0) == []
    val = MPIIDataset(synthetic_root, split="val", input_res=64)
    source = PictureSource(val, val.ground_truth())
    index = np.array([val.position(i) for i in range(len(val))])
    preds = val.ground_truth().joints.copy()
    shown = source.draw(preds, index)
    assert [p.name for p in shown] == ["val_0", "val_1", "val_2", "val_3"]
    assert all(p.rgb.dtype == np.uint8 and p.rgb.ndim == 3 for p in shown)
    left_out = index[index != val.position(source.people[1])]  # the pass excluded that person's image
    kept = preds[index != val.position(source.people[1])]
    assert [p.name for p in source.draw(kept, left_out)] == ["val_0", "val_2", "val_3"]


def test_a_resumed_run_continues_its_own_curve_without_a_step_twice(tiny: RunConfig) -> None:
    cfg = replace(tiny, epochs=3, flip_test=False)
    options = TrackingOptions(tensorboard_dir=str(Path(tiny.out).parent / "tb"))
    first = run(cfg, progress=False, stop_after_epoch=1, tracking=options)
    assert first.status == "interrupted"
    outcome = run(cfg, progress=False, resume=True, tracking=options)
    assert outcome.record_path == first.record_path
    record = json.loads(outcome.record_path.read_text())
    [folder] = run_folders(Path(options.tensorboard_dir))
    acc = events(folder)
    check_scalars_match_the_record(acc, record)  # steps 1, 2, 3 once each, epoch 1 from the first process
    assert [s.step for s in acc.Images("pictures/val_0")] == [1, 2, 3]
    [final] = acc.Scalars("final/pckh_Mean")
    assert final.step == 3
    assert "final/pckh_flip_Mean" not in acc.Tags()["scalars"]  # --no-flip-test: no flip figure, not a 0


def test_an_epoch_logged_but_lost_is_written_again_from_the_record(tiny: RunConfig) -> None:
    """A process killed after its checkpoint but before its events reached the disk: the resumed run finds the
    epoch missing from the folder and writes it from the record, whose figures it is."""
    cfg = replace(tiny, epochs=2, flip_test=False)
    options = TrackingOptions(tensorboard_dir=str(Path(tiny.out).parent / "tb"))
    run(cfg, progress=False, stop_after_epoch=1, tracking=options)
    [folder] = run_folders(Path(options.tensorboard_dir))
    for path in folder.glob("events.out.tfevents.*"):
        path.unlink()  # what the kill lost
    outcome = run(cfg, progress=False, resume=True, tracking=options)
    record = json.loads(outcome.record_path.read_text())
    check_scalars_match_the_record(events(folder), record)
    assert [s.step for s in events(folder).Images("pictures/val_0")] == [2]  # a record holds no pictures


def test_export_writes_each_record_once_however_often_it_is_run(
    tiny: RunConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = run(replace(tiny, epochs=2), progress=False)  # logs live under <checkpoint-dir>/tensorboard
    quiet = run(replace(tiny, epochs=1, seed=1), progress=False, tracking=TrackingOptions(tensorboard=False))
    assert "tracking" not in json.loads(quiet.record_path.read_text())
    out = tmp_path / "exported"
    capsys.readouterr()
    assert cli.main(["export", "tensorboard", tiny.out, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.count("epochs ") == 2
    assert "exported 2 of 2 records" in said
    files = sorted(out.rglob("events.out.tfevents.*"))
    assert cli.main(["export", "tensorboard", tiny.out, "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("nothing new") == 2
    assert sorted(out.rglob("events.out.tfevents.*")) == files  # not even an empty file
    for outcome in (live, quiet):
        record = json.loads(outcome.record_path.read_text())
        [folder] = [f for f in run_folders(out) if f.name == outcome.record_path.stem]
        acc = events(folder)
        check_scalars_match_the_record(acc, record)
        check_final_and_hparams(acc, record)
    # Exported into the folder the live run wrote: the same run, found by its marker; nothing to add.
    live_board = f"{tiny.checkpoint_dir}/tensorboard"
    assert cli.main(["export", "tensorboard", str(live.record_path), "--out", live_board]) == 0
    assert "nothing new" in capsys.readouterr().out
    assert len(run_folders(Path(tiny.checkpoint_dir) / "tensorboard")) == 1


def test_export_of_nothing_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", "tensorboard", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hgbench: error: no run records in")
    assert cli.main(["export", "mlflow", str(tmp_path)]) != 0  # no --uri and no MLFLOW_TRACKING_URI, or no records


def test_a_tensorboard_that_cannot_be_written_costs_the_run_nothing(
    tiny: RunConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file where the event folders' folder must go (a real failure, no stand-in): one warning line, the run
    finishes, its record and checkpoint as always, and the record lists what TensorBoard did not get."""
    blocker = Path(tiny.out).parent / "not-a-folder"
    blocker.write_text("a file")
    options = TrackingOptions(tensorboard_dir=str(blocker / "tb"))
    outcome = run(replace(tiny, epochs=2), progress=False, tracking=options)
    record = json.loads(outcome.record_path.read_text())
    err = capsys.readouterr().err
    assert outcome.status == "finished"
    assert record["status"] == "finished"
    assert outcome.checkpoint_path.is_file()
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "TensorBoard logging stopped" in warnings[0]
    state = record["tracking"]["tensorboard"]
    assert state["error"].startswith(("FileExistsError", "NotADirectoryError"))
    assert state["dir"] == str(blocker / "tb" / record["machine_info"]["machine_id"] / record["run_id"])
    unsent = state["unsent"]
    assert [(u["kind"], u["step"]) for u in unsent] == [
        ("epoch", 1),
        ("pictures", 1),
        ("epoch", 2),
        ("pictures", 2),
        ("final", 2),
        ("record", None),
    ]
    assert set(unsent[0]["names"]) >= set(EPOCH_TAGS)
    assert unsent[1]["names"] == ["val_0", "val_1", "val_2", "val_3"]
    assert "final/pckh_Mean" in unsent[4]["names"]


def test_run_flags_choose_the_folder_or_none_and_contradictions_are_one_line(
    tiny: RunConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_runner import _tiny_argv

    assert cli.main(_tiny_argv(tiny, "--case", "hg1", "--no-tensorboard", "--no-flip-test")) == 0
    assert not (Path(tiny.checkpoint_dir) / "tensorboard").exists()
    [record] = [json.loads(p.read_text()) for p in Path(tiny.out).rglob("*.json")]
    assert "tracking" not in record
    assert "tensorboard --logdir" not in capsys.readouterr().out  # the next step names no folder that was not written
    board = tmp_path / "board"
    assert cli.main(_tiny_argv(tiny, "--case", "hg1", "--tensorboard", str(board), "--no-flip-test", "--force")) == 0
    assert f", `tensorboard --logdir {board}` shows their curves and pictures\n" in capsys.readouterr().out
    assert run_folders(board)
    assert cli.main(_tiny_argv(tiny, "--case", "hg1", "--tensorboard", str(tmp_path / "x"), "--no-tensorboard")) == 2
    assert capsys.readouterr().err.strip() == (
        "hgbench: error: --tensorboard DIR and --no-tensorboard contradict each other; give one"
    )
    assert cli.main(_tiny_argv(tiny, "--case", "hg1", "--mlflow-experiment", "mine")) == 2
    assert capsys.readouterr().err.strip() == "hgbench: error: --mlflow-experiment needs --mlflow"


def test_a_sweep_sends_every_workers_run_to_its_tensorboard_folder(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_sweep import records, sweep_argv

    board = tmp_path / "board"
    argv = sweep_argv(tmp_path, synthetic_root, "--cases", "hg1", "--seeds", "0,1", "--tensorboard", str(board))
    assert cli.main([*argv, "--quiet"]) == 0
    done = records(tmp_path)
    assert len(done) == 2
    folders = run_folders(board)
    assert sorted(f.name for f in folders) == sorted(r["run_id"] for r in done)  # one TensorBoard over the sweep
    assert not (tmp_path / "runs" / "tensorboard").exists()
    for record in done:
        assert record["tracking"]["tensorboard"]["dir"].startswith(str(board))


@pytest.mark.slow
def test_two_ddp_processes_write_one_event_folder_once(tiny: RunConfig, tmp_path: Path) -> None:
    board = tmp_path / "board"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"),
        *("-m", "hgbench.cli", "run", "--case", "hg1", "--epochs", "2", "--batch", "4", "--test-batch", "4"),
        *("--input-res", "64", "--device", "cpu", "--workers", "0", "--data-dir", tiny.data_dir),
        *("--limit-train", "4", "--limit-val", "6", "--no-flip-test", "--quiet"),
        *("--out", str(tmp_path / "two"), "--checkpoint-dir", str(tmp_path / "c2"), "--tensorboard", str(board)),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)  # liveness only
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = list((tmp_path / "two").rglob("*.json"))
    record = json.loads(path.read_text())
    assert record["config"]["world_size"] == 2
    [folder] = run_folders(board)
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1  # rank 0's writer alone
    acc = events(folder)
    check_scalars_match_the_record(acc, record)
    check_final_and_hparams(acc, record)
    assert [s.step for s in acc.Images("pictures/val_3")] == [1, 2]


def test_a_gpu_runs_figures_and_an_exported_foreign_record_stay_inside_the_folder(tmp_path: Path) -> None:
    """GPU figures (null on a CPU) are logged where a record has them, and a stranger's record whose machine id and
    run id are paths lands in a folder inside the one named, nowhere else."""
    from hgbench.tracking.tensorboard_log import TensorBoardTracker

    entry = {
        "epoch": 1,
        "lr": 5e-4,
        "train_loss": 0.002,
        "val_loss": 0.0019,
        "heatmap_acc": 0.41,
        "pckh": 38.2,
        "pckh_parts": dict.fromkeys(GROUPS, 40.0),
        "wall_s": 61.2,
        "compute_s": 55.0,
        "data_wait_s": 4.1,
        "device_idle_s": 0.6,
        "val_wall_s": 5.0,
        "images_per_s": 98.1,
        "energy_j": 12345.0,
        "gpu_util_mean": 97.0,
        "gpu_mem_used_max_mib": 5000,
        "power_mean_w": 250.0,
        "load": {"other_cpu_frac": 0.01, "steal_frac": 0.0},
    }
    record = {
        "run_id": "../../escape",
        "started": "2026-12-05T00:00:00+00:00",
        "machine_info": {"machine_id": "/etc/x"},
        "status": "interrupted",
        "results": {"epochs": [entry]},
    }
    root = tmp_path / "board"
    tracker = TensorBoardTracker(root)
    tracker.open(record)
    tracker.close("interrupted")
    [folder] = run_folders(root)
    assert folder.resolve().is_relative_to(root.resolve())
    assert not (tmp_path / "escape").exists()
    acc = events(folder)
    expected = {
        "gpu/utilisation_pct": 97.0,
        "gpu/power_w": 250.0,
        "gpu/energy_j": 12345.0,
        "gpu/memory_max_mib": 5000.0,
        "time/device_idle_min": 0.01,
    }
    for tag, value in expected.items():
        assert [(s.step, s.value) for s in acc.Scalars(tag)] == [(1, pytest.approx(value))], tag
