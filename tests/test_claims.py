"""One run, one trainer: a live run's claim (hgbench.files.claim) turns away `--resume`, a fresh start and a second
sweep's worker, naming the process that holds it, and is taken over once that process is gone; a finished checkpoint is
never continued, nor a run whose record lies in another results folder.

The live run is a real second process: `hgbench.run.runner.run` stopped (asleep) right after its first epoch's
checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hgbench.cli import main
from hgbench.run.runner import run
from hgbench.spec.config import RunConfig

# A run that sleeps after its first checkpoint, so it holds its claim as a run in the middle of training does.
LIVE_RUN = """
import json, sys, time
from hgbench.run import recorder
from hgbench.spec.config import RunConfig
from hgbench.run.runner import run

checkpoint = recorder.Recorder.checkpoint

def checkpoint_then_sleep(self, epoch, state):
    checkpoint(self, epoch, state)
    print("checkpointed", flush=True)
    time.sleep(3600)

recorder.Recorder.checkpoint = checkpoint_then_sleep
run(RunConfig(**json.loads(sys.argv[1])), progress=False)
"""


@pytest.fixture
def live_run(tiny: RunConfig) -> Iterator[tuple[subprocess.Popen, RunConfig]]:
    """A process training `tiny` for 2 epochs, in the middle of it: epoch 1 checkpointed, its record "interrupted"."""
    config = replace(tiny, epochs=2)
    process = subprocess.Popen(
        [sys.executable, "-c", LIVE_RUN, json.dumps(config.to_dict())], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "checkpointed", "the live run died before its first checkpoint"
        yield process, config
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def _argv(config: RunConfig, *extra: str) -> list[str]:
    return [
        "run",
        *("--device", "cpu", "--workers", "0", "--data-dir", str(config.data_dir), "--quiet"),
        *("--out", config.out, "--checkpoint-dir", config.checkpoint_dir),
        *extra,
    ]


def _records(config: RunConfig) -> list[Path]:
    return sorted(Path(config.out).rglob("*.json"))


def test_resume_of_a_run_still_training_is_refused_naming_its_process_then_taken_over_once_it_is_gone(
    live_run: tuple[subprocess.Popen, RunConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    process, config = live_run
    [record] = _records(config)
    before = record.read_bytes()
    assert json.loads(before)["status"] == "interrupted"  # what a live run's record says until it ends
    # The latest "interrupted" run of the case, and the same run named by its record: both are the live one.
    for resume in (["--resume"], ["--resume", str(record)]):
        assert main(_argv(config, "--case", "hg1", *resume)) == 4
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert f"being trained by host {socket.gethostname()} pid {process.pid} since " in err
        assert "nothing was started" in err
    from hgbench.files.claim import RunBusy

    with pytest.raises(RunBusy, match=f"pid {process.pid} since"):  # starting the same run afresh, too
        run(config, progress=False)
    assert _records(config) == [record]
    assert record.read_bytes() == before  # not a byte written by another trainer
    process.kill()
    process.wait()
    # Its process is gone, and with it the claim: the run is resumed where it stopped, to the same record.
    assert main(_argv(config, "--case", "hg1", "--resume")) == 0
    assert f"resuming the latest interrupted run of hg1: {record}" in capsys.readouterr().out
    assert _records(config) == [record]
    finished = json.loads(record.read_text())
    assert finished["status"] == "finished"
    assert [e["epoch"] for e in finished["results"]["epochs"]] == [1, 2]


def test_a_second_sweep_leaves_a_run_that_another_process_trains_to_it(
    live_run: tuple[subprocess.Popen, RunConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    """As two `hgbench sweep`s of one plan: this sweep's worker finds the run claimed and leaves it, instead of
    training it a second time into the same record."""
    process, config = live_run
    [record] = _records(config)
    before = record.read_bytes()
    argv = [
        "sweep",
        *("--cases", "hg1", "--seeds", "0", "--epochs", "2", "--batch", "4", "--test-batch", "4"),
        *("--input-res", "64", "--limit-train", "8", "--limit-val", "6"),
        *("--device", "cpu", "--workers", "0", "--data-dir", str(config.data_dir)),
        *("--out", config.out, "--checkpoint-dir", config.checkpoint_dir),
    ]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert f"hg1 seed 0: busy: hg1 seed 0 ({Path(config.checkpoint_dir)}" in out
    assert f"is being trained by host {socket.gethostname()} pid {process.pid} since " in out
    assert "sweep of 1 runs: 1 busy" in out
    assert err.strip().splitlines()[-1] == (
        "hgbench: 1 of 1 runs are being trained by other processes (left to them): hg1 seed 0"
    )
    assert "Traceback" not in out + err
    assert _records(config) == [record]
    assert record.read_bytes() == before
    assert process.poll() is None  # the live run itself is untouched


def test_a_finished_checkpoint_is_never_continued_and_a_record_never_written_outside_out(
    tiny: RunConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs of results folder B, then the sweep's worker for the same runs with results folder S and the same runs/
    (so the same checkpoints): it neither measures B's finished run again nor continues B's interrupted one."""
    from hgbench.sweep.worker import run_one

    in_b = replace(tiny, out=str(tmp_path / "B"))
    done = run(in_b, progress=False)
    cut = run(replace(in_b, seed=1, epochs=2), progress=False, stop_after_epoch=1)
    saved = {path: path.read_bytes() for path in _records(in_b)}
    assert len(saved) == 2
    in_s = replace(tiny, out=str(tmp_path / "S"))

    finished = run_one(in_s.to_dict(), keep_checkpoint=True)
    assert finished["status"] == "skipped"
    assert finished["record"] == str(done.record_path)
    assert f"already finished with these settings: its record is {done.record_path}" in finished["reason"]

    begun = run_one(replace(in_s, seed=1, epochs=2).to_dict(), keep_checkpoint=True)
    assert begun["status"] == "failed"
    assert f"its record {cut.record_path} continues there, not in {in_s.out}" in begun["reason"]

    assert {path: path.read_bytes() for path in _records(in_b)} == saved  # B's records as they were
    assert not _records(in_s)
    capsys.readouterr()
    # `hgbench run --resume` of the finished run: one line, and again nothing written.
    assert main(_argv(in_b, "--resume", str(done.record_path), "--case", "hg1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "already finished with these settings" in err
    assert {path: path.read_bytes() for path in _records(in_b)} == saved


def test_a_claim_is_one_process_s_and_is_free_again_once_released(tmp_path: Path) -> None:
    from hgbench.files.claim import RunBusy, claim_run, holder

    folder = tmp_path / "run"
    assert holder(folder) is None
    with claim_run(folder, label="hg1 seed 0") as claim:
        assert holder(folder) == claim.owner
        assert (claim.owner.host, claim.owner.pid) == (socket.gethostname(), os.getpid())
        with pytest.raises(RunBusy, match=r"^hg1 seed 0 \(.*\) is being trained by host .* pid \d+ since "):
            claim_run(folder, label="hg1 seed 0")  # a second claim from this process too
        assert holder(folder) == claim.owner  # and the refused attempt did not drop the lock
        seen = subprocess.run(
            [sys.executable, "-c", f"from hgbench.files.claim import holder; print(holder({str(folder)!r}).pid)"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert seen.stdout.strip() == str(os.getpid())  # another process sees it
    assert holder(folder) is None
    claim_run(folder, label="hg1 seed 0").release()


def test_a_claim_file_that_is_a_link_is_refused_and_its_target_left_untouched(tmp_path: Path) -> None:
    """Run folders have predictable names: whoever can write to a shared --checkpoint-dir can plant ``claim.lock`` as a
    link to a file of the user's. The claim neither truncates nor writes that file, and says so in one line."""
    from hgbench.files.claim import UnsafeClaimFile, claim_run, holder

    victim = tmp_path / "victim.txt"
    victim.write_text("the user's own file\n")
    folder = tmp_path / "runs" / "hg1_seed0-0123456789ab"
    folder.mkdir(parents=True)
    (folder / "claim.lock").symlink_to(victim)
    with pytest.raises(UnsafeClaimFile) as caught:
        claim_run(folder, label="hg1 seed 0")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"hg1 seed 0 ({folder}): its claim file {folder / 'claim.lock'} is a symbolic link")
    assert "nothing was started" in message
    assert victim.read_text() == "the user's own file\n"
    assert holder(folder) is None  # a reader (--resume's check) does not follow it either

    (folder / "claim.lock").unlink()
    os.mkfifo(folder / "claim.lock")  # nor a FIFO (opened without O_NONBLOCK, a reader would wait for ever)
    with pytest.raises(UnsafeClaimFile, match="is a FIFO, not a regular file"):
        claim_run(folder, label="hg1 seed 0")
    assert holder(folder) is None

    (folder / "claim.lock").unlink()
    os.link(victim, folder / "claim.lock")  # nor a second name of another file (truncating it would empty that file)
    with pytest.raises(UnsafeClaimFile, match="has other names"):
        claim_run(folder, label="hg1 seed 0")
    assert victim.read_text() == "the user's own file\n"


def test_hgbench_run_refuses_a_planted_claim_link_in_one_line(
    tiny: RunConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hgbench.run.plan import planned_identity, record_stem
    from hgbench.spec.cases import get_spec

    victim = tmp_path / "victim.txt"
    victim.write_text("the user's own file\n")
    folder = Path(tiny.checkpoint_dir) / f"{record_stem(tiny, get_spec('hg1'))}-{planned_identity(tiny)}"
    folder.mkdir(parents=True)
    (folder / "claim.lock").symlink_to(victim)
    settings = ("--epochs", "1", "--batch", "4", "--test-batch", "4", "--input-res", "64")
    assert main(_argv(tiny, "--case", "hg1", *settings, "--limit-train", "8", "--limit-val", "6")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"its claim file {folder / 'claim.lock'} is a symbolic link" in err
    assert "Traceback" not in err
    assert victim.read_text() == "the user's own file\n"
    assert (folder / "claim.lock").is_symlink()
