"""`hgbench sweep --engine slurm` on a real one-node Slurm (`.ci/slurm-up`), through submitit's SlurmExecutor.

Every run is hg1 at 64 px on 8 + 6 synthetic people for 3 epochs with one CPU thread, as a local sweep of the same
plan runs it (`reference`): each epoch's figures are the same numbers whichever engine ran them and however often the
run was stopped and resumed, so a run interrupted on Slurm must end with the reference run's record. Interruptions
land mid-run whatever the machine's speed: the worker's test seam holds each run once after epoch 1, its claim held,
until a signal ends the hold (`hgbench.sweep.worker.HOLD_ONCE_ENV`); everything else is Slurm's and submitit's own.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_sweep import records, sweep_argv, write_plan

from hgbench import cli
from hgbench.sweep.worker import HOLD_ONCE_ENV

pytest.importorskip("submitit")

EPOCHS = 3
DETERMINISTIC_KEYS = ("train_loss", "val_loss", "heatmap_acc", "pckh", "lr", "steps", "images")
PATIENCE_S = 600.0  # liveness only: never a measure of speed


def slurm_argv(tmp_path: Path, data_dir: Path, *extra: str) -> list[str]:
    """The reference's sizes as a Slurm sweep: one CPU per job, 10 minutes each, one line per run's end."""
    argv = sweep_argv(
        tmp_path, data_dir, "--engine", "slurm", "--cpus-per-run", "1", "--slurm-time", "10", "--quiet", *extra
    )
    argv[argv.index("--epochs") + 1] = str(EPOCHS)
    return argv


def by_seed(tmp_path: Path) -> dict[int, dict]:
    return {record["config"]["seed"]: record for record in records(tmp_path)}


def epochs(record: dict) -> list[dict]:
    return [{key: entry[key] for key in DETERMINISTIC_KEYS} for entry in record["results"]["epochs"]]


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + PATIENCE_S
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.3)
    return value


def start_sweep(tmp_path: Path, argv: list[str]) -> subprocess.Popen:
    """`hgbench sweep` in a process of its own (its output in tmp_path/driver.out), so the test can act meanwhile."""
    code = "import sys; from hgbench.cli import main; sys.exit(main(sys.argv[1:]))"
    with (tmp_path / "driver.out").open("w") as out:
        return subprocess.Popen([sys.executable, "-c", code, *argv], stdout=out, stderr=subprocess.STDOUT, text=True)


def finish(driver: subprocess.Popen, tmp_path: Path) -> tuple[int, str]:
    try:
        status = driver.wait(timeout=PATIENCE_S)
    finally:
        if driver.poll() is None:
            driver.kill()
    return status, (tmp_path / "driver.out").read_text()


def held(folder: Path, count: int) -> list[int]:
    """The pids of the `count` workers holding their runs after epoch 1 (the seam's marker files), once all hold."""
    markers = wait_for(lambda: len(list(folder.iterdir())) >= count and sorted(folder.iterdir()), f"{count} holds")
    return [int(marker.read_text()) for marker in markers]


def job_of(pid: int) -> str:
    """The Slurm job a worker process runs in, from its own environment (an array's task as ``4242_3``)."""
    env = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env["SLURM_JOB_ID"]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def log_of(tmp_path: Path) -> str:
    (log,) = (tmp_path / "runs" / "sweep-logs").glob("*.log")
    return log.read_text()


def submitit_logs(tmp_path: Path, job: str) -> str:
    """What submitit's job process logged (its INFO lines go to the job's stdout, its warnings to stderr)."""
    folder = tmp_path / "runs" / "submitit"
    return "".join((folder / f"{job}_0_log.{stream}").read_text() for stream in ("out", "err"))


def assert_resumed_once_to_the_reference(record: dict, reference: dict, log: str) -> None:
    """Trained from scratch once, resumed after epoch 1 (never from epoch 1 again), ended as the uninterrupted run."""
    assert record["status"] == "finished"
    assert log.count("starting hg1 from scratch") == 1
    assert log.count("resuming hg1 after epoch 1 from") == 1
    assert log.count("hg1 epoch 1: loss") == 1
    assert epochs(record) == epochs(reference)
    assert record["results"]["pckh"]["Mean"] == reference["results"]["pckh"]["Mean"]
    assert record["results"]["pckh"]["per_person"] == reference["results"]["pckh"]["per_person"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> dict[int, dict]:
    """The plan's four runs (seeds 0-3) swept on this machine by the local engine, uninterrupted: seed: record."""
    folder = tmp_path_factory.mktemp("local-sweep")
    argv = sweep_argv(folder, synthetic_root, "--cases", "hg1", "--seeds", "0,1,2,3", "--cpus-per-run", "1", "--quiet")
    argv[argv.index("--epochs") + 1] = str(EPOCHS)
    assert cli.main(argv) == 0
    done = by_seed(folder)
    assert sorted(done) == [0, 1, 2, 3]
    assert all(r["status"] == "finished" for r in done.values())
    return done


def same_table(records: list[dict]) -> list[dict]:
    """The sweep's comparison table (`hgbench.report.comparison_table`, the one the sweep prints) without what depends
    on the machine's speed and load: its times, and whether a run was contended (which splits rows)."""
    from hgbench.report.table import comparison_table
    from hgbench.run.run_summary import summarize

    summaries = [summarize(record, f"{i}.json") for i, record in enumerate(records)]
    summaries = [replace(summary, contended=False, contention_reasons=[]) for summary in summaries]
    table = comparison_table(summaries)
    columns = ["case", "as_built", "description", "runs", "seeds", "device", "setting", "params", "gflops"]
    columns += ["pckh_mean", "pckh_mean_ci95_low", "pckh_mean_ci95_high", "heatmap_acc"]
    return table[columns].to_dict("records")


def test_an_array_of_four_runs_two_at_a_time_gives_the_local_sweeps_table(
    slurm, reference, tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One job array; never more than two tasks running at once (sampled from squeue while it runs, and the array's
    throttle as Slurm holds it); every record where --out says; the table and every epoch as the local sweep's."""
    running: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            running.append(len(slurm.queue("RUNNING")))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        argv = slurm_argv(tmp_path, synthetic_root, "--cases", "hg1", "--seeds", "0,1,2,3")
        assert cli.main([*argv, "--slurm-array-parallelism", "2"]) == 0
    finally:
        stop.set()
        sampler.join()
    out = capsys.readouterr().out
    assert "sweep of 4 runs, 4 to run; slurm: one job per run through Slurm, each asking for 0 GPU, 1 CPU" in out
    assert "at most 2 at once" in out
    assert "hgbench: sweep of 4 runs: 4 finished" in out
    assert "retry" not in out
    assert 0 < max(running) <= 2

    done = by_seed(tmp_path)
    assert sorted(done) == [0, 1, 2, 3]
    assert all(record["status"] == "finished" for record in done.values())
    jobs = {seed: record["slurm"]["jobs"] for seed, record in done.items()}
    array = {job["job_id"].split("_")[0] for (job,) in jobs.values()}
    assert len(array) == 1  # one array, a task per run, none requeued or resubmitted
    assert sorted(job["job_id"].split("_")[1] for (job,) in jobs.values()) == ["0", "1", "2", "3"]
    assert all(job["restarts"] == 0 for (job,) in jobs.values())
    for (job,) in jobs.values():
        assert slurm.job(job["job_id"])["ArrayTaskThrottle"] == "2"
    assert "#SBATCH --array=0-3%2" in slurm.batch_script(jobs[0][0]["job_id"])

    for seed in range(4):
        assert epochs(done[seed]) == epochs(reference[seed])
    assert same_table(list(done.values())) == same_table(list(reference.values()))


def test_scontrol_requeue_resumes_the_run_in_the_same_job_while_its_claim_keeps_out_a_second_trainer(
    slurm,
    reference,
    tmp_path: Path,
    synthetic_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """While the run holds after epoch 1, a second sweep of it gets a job that says busy and trains nothing (the
    claim holds across jobs); then `scontrol requeue` (as a preemption in requeue mode): the same job runs again,
    resumes after epoch 1, and the driver follows it instead of submitting another (no retry)."""
    monkeypatch.setenv(HOLD_ONCE_ENV, str(tmp_path / "hold"))
    (tmp_path / "hold").mkdir()
    argv = slurm_argv(tmp_path, synthetic_root, "--cases", "hg1", "--seeds", "0")
    driver = start_sweep(tmp_path, argv)
    try:
        (pid,) = held(tmp_path / "hold", 1)
        job = job_of(pid)

        assert cli.main([*argv, "--retries", "0"]) == 1  # the same sweep again, from another driver
        busy_out, busy_err = capsys.readouterr()
        assert "1 of 1 runs are being trained by other processes (left to them): hg1 seed 0" in busy_err
        assert f"pid {pid} since" in busy_out  # the claim names the held worker
        assert alive(pid)

        slurm.command("scontrol", "requeue", job)
    finally:
        status, out = finish(driver, tmp_path)
    assert status == 0, out
    assert "hgbench: sweep of 1 runs: 1 finished" in out
    assert "retry" not in out
    assert not alive(pid)
    (record,) = records(tmp_path)
    assert_resumed_once_to_the_reference(record, reference[0], log_of(tmp_path))
    assert record["slurm"] == {"jobs": [{"job_id": job, "restarts": 1}], "requeues": 1}
    assert slurm.job(job)["Restarts"] == "1"


def test_a_preemptions_sigterm_then_usr2_checkpoints_requeues_and_the_run_resumes(
    slurm, reference, tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A preemption as submitit emulates it (`job._interrupt()`: SIGTERM, then USR2, each with `scancel --signal`),
    here with the USR2 sent once the SIGTERM has landed: submitit's job ignores the SIGTERM (the run holds on, its
    claim kept), checkpoints on USR2 and requeues itself, and the same job resumes the run after epoch 1. A run
    that stopped at the SIGTERM would end the job before the USR2 could requeue it."""
    monkeypatch.setenv(HOLD_ONCE_ENV, str(tmp_path / "hold"))
    (tmp_path / "hold").mkdir()
    driver = start_sweep(tmp_path, slurm_argv(tmp_path, synthetic_root, "--cases", "hg1", "--seeds", "1"))
    try:
        (pid,) = held(tmp_path / "hold", 1)
        job = job_of(pid)
        slurm.command("scancel", job, "--signal", "SIGTERM")
        wait_for(lambda: "Bypassing signal SIGTERM" in submitit_logs(tmp_path, job) or not alive(pid), "the SIGTERM")
        assert alive(pid)
        slurm.command("scancel", job, "--signal", "USR2")
    finally:
        status, out = finish(driver, tmp_path)
    assert status == 0, out
    assert "retry" not in out
    (record,) = records(tmp_path)
    assert_resumed_once_to_the_reference(record, reference[1], log_of(tmp_path))
    assert record["slurm"] == {"jobs": [{"job_id": job, "restarts": 1}], "requeues": 1}
    submitit_log = submitit_logs(tmp_path, job)
    assert "Caught signal SIGUSR2" in submitit_log
    assert f"Requeued job {job}" in submitit_log


def seconds(runtime: str) -> int:
    """Slurm's ``[D-]HH:MM:SS`` (or ``MM:SS``) in seconds."""
    days, _, clock = runtime.rpartition("-")
    total = 0
    for part in clock.split(":"):
        total = total * 60 + int(part)
    return total + int(days or 0) * 86400


@pytest.mark.slow
def test_a_job_out_of_time_is_signalled_checkpoints_is_requeued_and_finishes(
    slurm, reference, tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the run holds after epoch 1, its job's time limit is cut to a minute or two past what it has run
    (`scontrol update`, as an admin may): it now has less time than the run needs. Slurm's own warning (USR2, 90 s
    before the limit: submitit's --signal) comes at its next limit check, submitit checkpoints and requeues the job,
    and the same job, given its 10 minutes back, resumes the run after epoch 1 and finishes it. The record counts
    the requeue as Slurm does. Cutting the limit of a job already holding, rather than submitting it with a short
    one, keeps the warning from landing before the run has an epoch to resume from, however loaded the machine."""
    monkeypatch.setenv(HOLD_ONCE_ENV, str(tmp_path / "hold"))
    (tmp_path / "hold").mkdir()
    driver = start_sweep(tmp_path, slurm_argv(tmp_path, synthetic_root, "--cases", "hg1", "--seeds", "2"))
    try:
        (pid,) = held(tmp_path / "hold", 1)
        job = job_of(pid)
        limit = seconds(slurm.job(job)["RunTime"]) // 60 + 2  # 60-120 s left: warned at the next check
        slurm.command("scontrol", "update", f"JobId={job}", f"TimeLimit={limit}")
        wait_for(lambda: int(slurm.job(job)["Restarts"]) >= 1, "the job to be requeued")
        slurm.command("scontrol", "update", f"JobId={job}", "TimeLimit=10")
    finally:
        status, out = finish(driver, tmp_path)
    assert status == 0, out
    assert "retry" not in out
    (record,) = records(tmp_path)
    assert_resumed_once_to_the_reference(record, reference[2], log_of(tmp_path))
    assert record["slurm"] == {"jobs": [{"job_id": job, "restarts": 1}], "requeues": 1}
    assert slurm.job(job)["Restarts"] == "1"
    submitit_log = submitit_logs(tmp_path, job)
    assert "Caught signal SIGUSR2" in submitit_log
    assert "this job is timed-out" in submitit_log
    assert f"Requeued job {job}" in submitit_log
    assert "#SBATCH --signal=USR2@90\n" in slurm.batch_script(job)


def test_sigterm_to_the_sweep_cancels_its_jobs_leaving_none_queued_and_every_record_interrupted(
    slurm, tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four runs two at a time; once two hold (two tasks queued behind them), SIGTERM to the driver: the running jobs
    stop with their records marked interrupted, the queued ones leave the queue, and the driver says so."""
    monkeypatch.setenv(HOLD_ONCE_ENV, str(tmp_path / "hold"))
    (tmp_path / "hold").mkdir()
    argv = slurm_argv(tmp_path, synthetic_root, "--cases", "hg1", "--seeds", "0,1,2,3")
    driver = start_sweep(tmp_path, [*argv, "--slurm-array-parallelism", "2"])
    try:
        pids = held(tmp_path / "hold", 2)
        assert len(slurm.queue("PENDING")) == 1  # the array's two other tasks, as one pending line
        driver.send_signal(signal.SIGTERM)
    finally:
        status, out = finish(driver, tmp_path)
    assert status == 128 + signal.SIGTERM, out
    assert "hgbench: stopped by SIGTERM; the same sweep again resumes its runs" in out
    assert "hgbench: sweep of 4 runs: 4 cancelled" in out, out
    assert slurm.queue("PENDING", "RUNNING") == []
    wait_for(lambda: not any(alive(pid) for pid in pids), "the held workers to end")
    done = records(tmp_path)
    assert len(done) == 2  # the two that ran; the two that never started have none
    assert all(record["status"] == "interrupted" for record in done)
    assert all(len(record["results"]["epochs"]) == 1 for record in done)  # epoch 1 kept, to resume from


def test_a_run_gone_nan_fails_without_a_retry_while_the_other_finishes(
    slurm, reference, tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write_plan(tmp_path, "[[run]]\ncase = 'hg1'\nseed = 3\n\n[[run]]\ncase = 'hg1'\nseed = 0\nlr = 1e12\n")
    assert cli.main(slurm_argv(tmp_path, synthetic_root, "--plan", str(plan), "--retries", "1")) == 1
    out, err = capsys.readouterr()
    assert "hgbench: sweep of 2 runs: 1 finished, 1 failed" in out
    assert "retry" not in out
    assert err.strip().endswith("1 of 2 runs failed: hg1 seed 0")
    assert "Traceback" not in out + err
    done = by_seed(tmp_path)
    assert done[3]["status"] == "finished"
    assert epochs(done[3]) == epochs(reference[3])
    assert done[0]["status"] == "failed"
    assert "nan" in done[0]["status_reason"].lower()
    assert done[0]["slurm"]["requeues"] == 0
    assert len(done[0]["slurm"]["jobs"]) == 1
    assert len(list((tmp_path / "runs" / "submitit").glob("*_submitted.pkl"))) == 2


@pytest.mark.parametrize(
    ("gpus_as", "gpu_line"), [("gpus-per-node", "#SBATCH --gpus-per-node=1"), ("gres", "#SBATCH --gres=gpu:1")]
)
def test_the_options_a_cluster_needs_reach_the_job(
    slurm, tmp_path: Path, synthetic_root: Path, gpus_as: str, gpu_line: str
) -> None:
    """Partition, a GPU (the test cluster's GPUs are bookkeeping: the run uses the CPU), CPUs, memory, time and other
    sbatch options, read back from Slurm's own view of the job; the job runs this virtual environment's Python."""
    argv = slurm_argv(tmp_path, synthetic_root, "--cases", "hg1", "--seeds", "0", "--epochs", "1")
    argv += ["--slurm-partition", "batch", "--slurm-gpus-per-run", "1", "--slurm-gpus-as", gpus_as]
    argv += ["--cpus-per-run", "2", "--slurm-mem", "1G", "--slurm-time", "7"]
    argv += ["--slurm-extra", "account=hgbench-lab", "--slurm-extra", "comment=options-check"]
    assert cli.main(argv) == 0
    (record,) = records(tmp_path)
    assert record["status"] == "finished"
    assert record["machine_info"]["torch_threads"] == 2  # the job's CPUs are the run's threads
    ((job,),) = [record["slurm"]["jobs"]]
    fields = slurm.job(job["job_id"])
    assert fields["Partition"] == "batch"
    assert fields["TresPerNode"] == "gres:gpu:1"
    assert fields["NumCPUs"] == "2"
    assert fields["MinMemoryNode"] == "1G"
    assert fields["TimeLimit"] == "00:07:00"
    assert fields["Account"] == "hgbench-lab"
    assert fields["Comment"] == "options-check"
    script = slurm.batch_script(job["job_id"])
    assert gpu_line in script
    assert ("--gres" in script) == (gpus_as == "gres")
    assert f"{sys.executable} -u -m submitit.core._submit" in script
    assert sys.executable.startswith(sys.prefix)
    assert Path(sys.prefix, "pyvenv.cfg").is_file()


def test_a_partition_the_cluster_lacks_is_one_line(
    slurm, tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = slurm_argv(tmp_path, synthetic_root, "--cases", "hg1", "--seeds", "0", "--slurm-partition", "nowhere")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hgbench: error: --engine slurm: sbatch refused the jobs: sbatch: error: ")
    assert "invalid partition" in err.lower()
    assert err.count("\n") == 1, err
    assert slurm.queue() == []
    assert records(tmp_path) == []
