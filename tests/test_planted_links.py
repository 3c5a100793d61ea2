"""Writes into folders others can write: a link (or a FIFO) planted at a name hgbench is about to write is never written
through, whatever writes it: atomic replacement's temp file (records, checkpoints, caches, the README), a numbered
record, a sweep run's log, the synthetic dataset cache's lock. (claim.lock: tests/test_claims.py.)

A temp file's name is random, so the tests plant the link at the name the writer is about to draw, as someone who
watched the folder and won a race would.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hgbench.files import atomic_io
from hgbench.files.atomic_io import atomic_output, next_record_path, open_append, write_bytes_atomic, write_json_atomic
from hgbench.spec.config import RunConfig
from hgbench.train.checkpoint import save_checkpoint

USERS_OWN = b"the user's own file\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the user's, outside the shared folder, that a planted link points at."""
    path = tmp_path / "private" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(USERS_OWN)
    return path


@pytest.fixture
def planted_temp(monkeypatch: pytest.MonkeyPatch, victim: Path) -> Callable[[Path], Path]:
    """`plant(target)`: the next temp name drawn for `target` is a link to `victim`, planted before the write."""
    draw = atomic_io._temp_name

    def plant(target: Path) -> Path:
        link = target.with_name(f".{target.name}.0badc0de.tmp")
        target.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(victim)
        names = iter([link])
        monkeypatch.setattr(atomic_io, "_temp_name", lambda path: next(names, None) or draw(path))
        return link

    return plant


def _save_checkpoint(path: Path) -> None:
    save_checkpoint(path, {"epoch": 1, "model": {"w": torch.ones(2)}})


def _atomic_output(path: Path) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(b"new")


@pytest.mark.parametrize(
    "write",
    [
        lambda path: write_bytes_atomic(path, b"new"),
        lambda path: write_json_atomic(path, {"new": 1}),
        _save_checkpoint,
        _atomic_output,
    ],
    ids=["write_bytes_atomic", "write_json_atomic", "save_checkpoint", "atomic_output"],
)
def test_a_link_at_the_temp_name_is_never_written_through(
    write: Callable[[Path], None], planted_temp: Callable[[Path], Path], victim: Path, tmp_path: Path
) -> None:
    target = tmp_path / "shared" / "last.pt"
    link = planted_temp(target)
    write(target)
    assert victim.read_bytes() == USERS_OWN
    assert target.is_file()  # the write landed, in a file of its own
    assert not target.is_symlink()
    assert link.is_symlink()  # the planted name was passed over, not taken


def test_a_numbered_record_never_takes_a_planted_name(tmp_path: Path, victim: Path) -> None:
    folder = tmp_path / "results" / "m"
    folder.mkdir(parents=True)
    (folder / ".0001.claim").symlink_to(victim)  # the number's claim
    path = next_record_path(tmp_path / "results", "m", "case1_seed0")
    write_json_atomic(path, {"status": "running"})
    assert path.name == "0002_case1_seed0.json"
    assert victim.read_bytes() == USERS_OWN


def test_open_append_refuses_a_link_a_fifo_and_a_second_name(tmp_path: Path, victim: Path) -> None:
    log = tmp_path / "run.log"
    log.symlink_to(victim)
    with pytest.raises(atomic_io.NotAPlainFile, match=r"run\.log is a symbolic link; nothing was written through it"):
        open_append(log)
    log.unlink()
    os.mkfifo(log)
    with pytest.raises(atomic_io.NotAPlainFile, match=r"run\.log is a FIFO, not a regular file"):
        open_append(log)  # at once: opening a FIFO for writing without O_NONBLOCK waits for a reader for ever
    log.unlink()
    os.link(victim, log)
    with pytest.raises(atomic_io.NotAPlainFile, match="has other names"):
        open_append(log)
    assert victim.read_bytes() == USERS_OWN
    log.unlink()
    with open_append(log) as f:
        f.write(b"line\n")
    with open_append(log) as f:
        f.write(b"line\n")
    assert log.read_bytes() == b"line\nline\n"


def _run_with_planted_log(run: Callable[..., dict], tiny: RunConfig, victim: Path) -> None:
    """`run` (a sweep worker's entry) for one epoch of `tiny`, its log a link to `victim`: it fails in the one line of
    a sweep run whose log is a link, and the victim is untouched."""
    log = Path(tiny.checkpoint_dir) / "sweep-logs" / "hg1_seed0.log"
    log.parent.mkdir(parents=True)
    log.symlink_to(victim)
    result = run(replace(tiny, epochs=1).to_dict(), keep_checkpoint=False, log_path=str(log))
    assert result["status"] == "failed"
    assert result["reason"] == (
        f"cannot write the run's log: {log} is a symbolic link; nothing was written through it: remove it"
    )
    assert victim.read_bytes() == USERS_OWN


def test_a_sweep_run_whose_log_is_a_planted_link_fails_in_one_line_and_writes_nothing_through_it(
    tiny: RunConfig, victim: Path
) -> None:
    """A sweep's run logs lie in the checkpoint folder (``<checkpoint-dir>/sweep-logs/<run>.log``), often shared."""
    from hgbench.sweep.worker import run_one

    _run_with_planted_log(run_one, tiny, victim)
    assert not list(Path(tiny.out).rglob("*.json"))  # nothing ran


def test_a_ray_attempt_never_writes_its_first_line_through_a_planted_log_link(
    tiny: RunConfig, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ray task's log says first where the attempt runs (`ray_run_one`); through a link, never: the run fails in
    the same one line as any sweep run whose log is a link."""
    import ray

    from hgbench.sweep.engines import ray_run_one

    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "node-b"))
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "10.0.0.2")
    _run_with_planted_log(ray_run_one, tiny, victim)


def test_a_tensorboard_folder_whose_marker_is_a_fifo_or_a_link_is_not_the_runs(tmp_path: Path, victim: Path) -> None:
    """A shared TensorBoard folder: a FIFO named as a run folder's marker would hang the run at its start, a link to a
    device read it until memory ran out; neither names a run, so the run takes the next free folder."""
    from hgbench.tracking.figures import run_key
    from hgbench.tracking.tensorboard_log import MARKER, event_dir

    record = {"run_id": "0001_case1_seed0", "started": "2026-12-05T12:00:00+00:00", "machine_info": {"machine_id": "m"}}
    first = event_dir(tmp_path, record)
    first.mkdir(parents=True)
    os.mkfifo(first / MARKER)
    assert event_dir(tmp_path, record) == first.with_name(f"{first.name}-2")
    (first / MARKER).unlink()
    (first / MARKER).symlink_to("/dev/zero")
    assert event_dir(tmp_path, record) == first.with_name(f"{first.name}-2")
    (first / MARKER).unlink()
    elsewhere = tmp_path / "elsewhere.json"  # a marker naming this very run, linked in: not followed either
    elsewhere.write_text(json.dumps({"run": run_key(record)}))
    (first / MARKER).symlink_to(elsewhere)
    assert event_dir(tmp_path, record) == first.with_name(f"{first.name}-2")
    (first / MARKER).unlink()
    (first / MARKER).write_text(json.dumps({"run": run_key(record)}))  # the run's own marker: its folder
    assert event_dir(tmp_path, record) == first


def test_the_synthetic_cache_lock_is_never_opened_through_a_link(tmp_path: Path, victim: Path) -> None:
    from hgbench.data.synthetic import GENERATOR_VERSION, default_dataset
    from hgbench.errors import DataError

    cache = tmp_path / "cache"
    cache.mkdir()
    missing = tmp_path / "private" / "created-by-the-link"
    (cache / f".synthetic-4-0-64x48-v{GENERATOR_VERSION}.lock").symlink_to(missing)
    with pytest.raises(DataError, match=r"\.lock is a symbolic link; nothing was written through it"):
        default_dataset(people=4, image_size=(64, 48), cache_dir=cache)
    assert not missing.exists()  # opening a dangling link for append would have created its target
    assert victim.read_bytes() == USERS_OWN


def test_a_cost_cache_that_is_a_link_is_replaced_not_written_through(
    tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hgbench.models.cost import COST_CACHE_FILENAME, measure_cost
    from hgbench.spec.cases import get_spec

    monkeypatch.setenv("HGBENCH_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / COST_CACHE_FILENAME).symlink_to(victim)
    measure_cost(get_spec("hg1"), input_res=64)
    assert victim.read_bytes() == USERS_OWN
    cache = tmp_path / "cache" / COST_CACHE_FILENAME
    assert not cache.is_symlink()
    assert len(json.loads(cache.read_text())) == 1
