"""Tests of the results store (hgbench/run/results.py): atomic writes, numbering, validation, loading, the sweep's
skip."""

from __future__ import annotations

import copy
import errno
import json
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from hgbench.measure.environment import machine_id
from hgbench.run import results
from hgbench.run.results import (
    SCHEMA,
    atomic_output,
    find_finished,
    load_records,
    next_record_path,
    read_record,
    summarize,
    validate_record,
    write_json_atomic,
)

RECORDS = Path(__file__).parent / "data" / "records"
CPU_DIR = RECORDS / "cpu-pt2.14.1"
GPU_DIR = RECORDS / "nvidia-h100-80gb-hbm3-pt2.14.1-cu13.0"
VALID = sorted([*CPU_DIR.glob("000[1-5]_*.json"), *GPU_DIR.glob("*.json")])


def golden(name: str = "0002_case3_seed0.json", folder: Path = CPU_DIR) -> dict:
    return json.loads((folder / name).read_text())


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------------------ machine_id
@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (
            {
                "device": "cpu",
                "gpu_name": None,
                "torch": "2.14.1+cu130",
                "cuda": "13.0",
                "cpu": "AMD EPYC 7B13",
                "cpu_count": 2,
            },
            "cpu-amd-epyc-7b13-2c-pt2.14.1",
        ),
        (
            {
                "device": "cpu",
                "cpu": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
                "cpu_count": 16,
                "torch": "2.14.1",
            },
            "cpu-intel-xeon-platinum-8375c-16c-pt2.14.1",
        ),
        (
            {
                "device": "cuda",
                "gpu_name": "NVIDIA H100 80GB HBM3",
                "torch": "2.14.1+cu130",
                "cuda": "13.0",
                "cpu": "AMD EPYC 7B13",
                "cpu_count": 2,
            },
            "nvidia-h100-80gb-hbm3-pt2.14.1-cu13.0",
        ),
        (
            {
                "device": "cpu",
                "gpu_name": "NVIDIA H100 80GB HBM3",
                "torch": "2.14.1",
                "cuda": "13.0",
                "cpu": "AMD EPYC",
                "cpu_count": 8,
            },
            "cpu-amd-epyc-8c-pt2.14.1",
        ),
        (
            {"device": "cuda", "gpu_name": "Quadro RTX 6000 (rev/2)", "torch": "1.8.1", "cuda": None},
            "quadro-rtx-6000-rev-2-pt1.8.1",
        ),
        ({"device": "cpu", "torch": "2.14.1"}, "cpu-pt2.14.1"),
        ({}, "cpu-ptunknown"),
    ],
)
def test_machine_id(info: dict, expected: str) -> None:
    assert machine_id(info) == expected


def test_machine_id_tells_cpus_apart() -> None:
    """Two CPUs on one torch version are two machines (a sweep on one must not skip runs finished on the other)."""
    base = {"device": "cpu", "torch": "2.14.1", "cpu": "AMD EPYC 7B13", "cpu_count": 2}
    ids = {machine_id(base), machine_id({**base, "cpu_count": 4}), machine_id({**base, "cpu": "AMD EPYC 9654"})}
    assert len(ids) == 3


def test_golden_records_keep_the_machine_id_they_stored() -> None:
    """Records written before the CPU was named sit in ``cpu-pt2.14.1/`` and are read under that id."""
    for path in VALID:
        record = json.loads(path.read_text())
        assert record["machine_info"]["machine_id"] == path.parent.name
        assert summarize(record, path).machine_id == path.parent.name


# ----------------------------------------------------------------------------------------------- numbering
def test_next_record_path_numbers_and_claims(tmp_path: Path) -> None:
    first = next_record_path(tmp_path, "cpu-pt2.14.1", "case3_seed0")
    assert first == tmp_path / "cpu-pt2.14.1" / "0001_case3_seed0.json"
    assert first.exists()
    assert first.stat().st_size == 0
    second = next_record_path(tmp_path, "cpu-pt2.14.1", "case3_seed0")
    assert second.name == "0002_case3_seed0.json"  # same stem: a new number, never an overwrite
    (tmp_path / "cpu-pt2.14.1" / "0041_other.json").write_text("{}")
    (tmp_path / "cpu-pt2.14.1" / "notes.txt").write_text("")
    assert next_record_path(tmp_path, "cpu-pt2.14.1", "x").name == "0042_x.json"
    assert next_record_path(tmp_path, "gpu", "case 1/seed 0").name == "0001_case_1_seed_0.json"  # other folder


def test_next_record_path_concurrent_runs_get_distinct_numbers(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        paths = list(pool.map(lambda i: next_record_path(tmp_path, "m", f"run{i}"), range(32)))
    numbers = sorted(int(p.name[:4]) for p in paths)
    assert numbers == list(range(1, 33))  # different stems, still one number each
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".")]  # claims released


def test_next_record_path_past_9999(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "9999_a.json").write_text("{}")
    assert next_record_path(tmp_path, "m", "b").name == "10000_b.json"


# -------------------------------------------------------------------------------------------- atomic writes
def test_write_json_atomic_writes_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.json"
    write_json_atomic(
        path, {"a": float("nan"), "b": np.float32(1.5), "c": np.arange(3), "d": (1, math.inf), "e": tmp_path}
    )
    assert json.loads(path.read_text()) == {"a": None, "b": 1.5, "c": [0, 1, 2], "d": [1, None], "e": str(tmp_path)}
    assert leftovers(path.parent) == []


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_write_json_atomic_failure_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    path = tmp_path / "r.json"
    write_json_atomic(path, {"version": 1})
    before = path.read_bytes()

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results.os, fail_at, full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_json_atomic(path, {"version": 2, "big": list(range(1000))})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_write_json_atomic_unserialisable_touches_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="object"):
        write_json_atomic(tmp_path / "r.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_write_json_atomic_fills_a_claimed_path(tmp_path: Path) -> None:
    path = next_record_path(tmp_path, "m", "case1_seed0")
    record = golden()
    write_json_atomic(path, record)
    assert json.loads(path.read_text()) == record
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # a normal file, not mkstemp's 0600


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_atomic_output_success_and_failure(tmp_path: Path) -> None:
    target = tmp_path / "ckpt" / "last.pt"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp != target
        tmp.write_bytes(b"epoch 1")
    assert target.read_bytes() == b"epoch 1"

    def crash_while_saving() -> None:
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half of epoch 2")
            raise RuntimeError("crash while saving")

    with pytest.raises(RuntimeError, match="crash"):
        crash_while_saving()
    assert target.read_bytes() == b"epoch 1"
    assert leftovers(target.parent) == []


def test_atomic_output_failed_rename_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")
    monkeypatch.setattr(results.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError, match="I/O error"), atomic_output(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------- validation
def test_golden_records_are_valid() -> None:
    assert len(VALID) == 6
    for path in VALID:
        assert validate_record(json.loads(path.read_text())) == [], path


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r.update(schema="hgbench.run/2"), "schema is 'hgbench.run/2'"),
        (lambda r: r.pop("schema"), "no 'schema' key"),
        (lambda r: r.pop("machine_info"), "missing key 'machine_info'"),
        (lambda r: r.update(status="done"), "status 'done' is not one of"),
        (lambda r: r.update(config=[1, 2]), "'config' is not an object"),
        (lambda r: r["results"]["pckh"].update(Mean="83.1"), "results.pckh.Mean is '83.1', not a number"),
        (lambda r: r["results"].pop("heatmap_acc"), "finished record lacks results.heatmap_acc"),
        (lambda r: r["spec"].pop("name"), "spec.name missing"),
    ],
)
def test_validate_record_problems(mutate: object, expected: str) -> None:
    record = golden()
    mutate(record)  # type: ignore[operator]
    problems = validate_record(record)
    assert any(expected in p for p in problems), problems


def test_validate_record_non_object() -> None:
    assert validate_record([1, 2]) == ["not a JSON object but a list"]


def test_validate_record_allows_nulls_and_partial_unfinished() -> None:
    record = golden()
    record["results"]["train"]["energy_j_per_epoch"] = None
    record["results"]["inference"]["plain"]["device_min"] = None
    assert validate_record(record) == []
    interrupted = json.loads((CPU_DIR / "0005_case2_seed0.json").read_text())
    assert interrupted["results"]["pckh"] is None
    assert validate_record(interrupted) == []


# -------------------------------------------------------------------------------------------------- summary
def test_summarize_takes_fields_where_the_doc_says() -> None:
    record = golden()
    s = summarize(record, CPU_DIR / "0002_case3_seed0.json")
    assert (s.case, s.as_built, s.description, s.seed, s.status) == ("3", False, "6 stacks", 0, "finished")
    assert s.run_id == "0002_case3_seed0"
    assert s.params == record["model"]["params"]
    assert s.gflops == record["model"]["gflops"]
    assert s.min_per_epoch == record["results"]["train"]["min_per_epoch"]["mean"]
    assert s.epoch_minutes == record["results"]["train"]["min_per_epoch"]["data"]
    assert s.data_wait_pct == pytest.approx(100 * record["results"]["train"]["data_wait_fraction"])
    assert s.pckh_mean == record["results"]["pckh"]["Mean"]
    assert s.heatmap_acc == record["results"]["heatmap_acc"]
    assert s.images_per_s == record["results"]["train"]["images_per_s"]
    assert s.energy_j_per_epoch is None
    # no device clock on the CPU: no device-compute figure, and the headline is the wall-clock pass as everywhere
    assert (s.inference_min, s.inference_device_min) == (record["results"]["inference"]["plain"]["wall_min"], None)
    assert s.device == "CPU: AMD EPYC 7B13"
    assert s.machine_id == "cpu-pt2.14.1"
    assert s.dataset == "synthetic"
    assert s.config["batch_size"] == 6
    assert s.finished


def test_summarize_gpu_record_headlines_the_wall_clock_pass_with_device_compute_beside_it() -> None:
    record = golden("0001_case1_seed0.json", GPU_DIR)
    s = summarize(record, GPU_DIR / "0001_case1_seed0.json")
    assert s.device == "NVIDIA H100 80GB HBM3"
    plain = record["results"]["inference"]["plain"]
    assert plain["device_min"] != plain["wall_min"]
    # The study timed a whole pass, data included: the table must not mix clocks across rows.
    assert (s.inference_min, s.inference_device_min) == (plain["wall_min"], plain["device_min"])
    assert s.energy_j_per_epoch == 850.0


def test_summarize_interrupted_record() -> None:
    s = summarize(json.loads((CPU_DIR / "0005_case2_seed0.json").read_text()), CPU_DIR / "0005_case2_seed0.json")
    assert not s.finished
    assert s.status == "interrupted"
    assert s.pckh_mean is None
    assert s.inference_min is None
    assert s.epochs_done == 1
    assert "KeyboardInterrupt" in (s.status_reason or "")


# -------------------------------------------------------------------------------------------------- loading
def test_load_records_folder_skips_corrupt_and_foreign_with_named_warnings() -> None:
    summaries, warnings = load_records([RECORDS])
    assert sorted(s.path for s in summaries) == VALID
    assert len(warnings) == 2
    assert any("0006_case8_seed0.json" in w and "not valid JSON" in w for w in warnings)
    assert any("foreign.json" in w and "not an hgbench run record" in w for w in warnings)
    assert all("\n" not in w for w in warnings)


def test_load_records_globs_files_and_missing_sources() -> None:
    summaries, warnings = load_records(
        [
            str(RECORDS / "*" / "000[23]_case3_*.json"),
            CPU_DIR / "0001_case1_seed0.json",
            "no/such/folder",
            str(RECORDS / "nothing-*.json"),
        ]
    )
    assert [s.run_id for s in summaries] == ["0002_case3_seed0", "0003_case3_seed1", "0001_case1_seed0"]
    assert warnings == [
        "no/such/folder: no such file, folder or matching pattern",
        f"{RECORDS / 'nothing-*.json'}: no such file, folder or matching pattern",
    ]


def test_a_record_with_a_section_of_the_wrong_type_still_summarises(tmp_path: Path) -> None:
    """A hand-edited record (``"plain": "n/a"``) must not crash `table`, `compare` and `plot` for every record."""
    record = json.loads((CPU_DIR / "0001_case1_seed0.json").read_text())
    record["results"]["inference"]["plain"] = "n/a"
    (tmp_path / "0001_case1_seed0.json").write_text(json.dumps(record))
    summaries, _ = load_records([tmp_path])
    [summary] = summaries
    assert summary.inference_min is None
    assert summary.pckh_mean == record["results"]["pckh"]["Mean"]


def test_load_records_deduplicates(tmp_path: Path) -> None:
    summaries, _ = load_records([CPU_DIR / "0001_case1_seed0.json", str(CPU_DIR / "0001_*.json")])
    assert len(summaries) == 1


def test_load_records_skips_benchmark_folders_silently(tmp_path: Path) -> None:
    shutil.copy(CPU_DIR / "0001_case1_seed0.json", tmp_path / "0001_case1_seed0.json")
    bench = tmp_path / "benchmarks" / "Linux-CPython-3.11-64bit"
    bench.mkdir(parents=True)
    (bench / "0001_bench.json").write_text(json.dumps({"machine_info": {}, "benchmarks": [], "version": "5.1.0"}))
    other = tmp_path / "bench"
    other.mkdir()
    (other / "0001_pipeline.json").write_text(json.dumps({"schema": "hgbench.bench/1"}))
    (tmp_path / "cpu-x").mkdir()
    (tmp_path / "cpu-x" / "0002_timing.json").write_text(json.dumps({"schema": "hgbench.bench/1"}))
    (tmp_path / ".0003_case1.json.ab12cd34.tmp").write_text("{")  # a write in progress
    (tmp_path / "0004_claimed.json").write_text("")  # claimed, not yet written
    summaries, warnings = load_records([tmp_path])
    assert [s.run_id for s in summaries] == ["0001_case1_seed0"]
    assert len(warnings) == 1
    assert "0004_claimed.json" in warnings[0]
    assert "empty file" in warnings[0]
    # named explicitly, a foreign file does get a warning
    _, warnings = load_records([bench / "0001_bench.json"])
    assert len(warnings) == 1
    assert "0001_bench.json" in warnings[0]


def test_read_record_reasons(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(b"\xff\xfe")
    (tmp_path / "b.json").write_text("[1, 2]")
    assert read_record(tmp_path / "a.json")[1].startswith("unreadable")
    assert read_record(tmp_path / "b.json")[1] == "not an hgbench run record: not a JSON object but a list"
    assert read_record(tmp_path / "missing.json")[1].startswith("unreadable")
    assert read_record(CPU_DIR / "0002_case3_seed0.json")[0]["schema"] == SCHEMA


# ----------------------------------------------------------------------------------------------- find_finished
def _identity(folder: str, name: str) -> str:
    return results.record_identity(json.loads((RECORDS / folder / name).read_text()))


def test_find_finished_matches_the_run_identity(tmp_path: Path) -> None:
    shutil.copytree(RECORDS, tmp_path / "results")
    root = tmp_path / "results"
    case3_seed1 = _identity("cpu-pt2.14.1", "0003_case3_seed1.json")
    assert find_finished(root, case3_seed1) == root / "cpu-pt2.14.1" / "0003_case3_seed1.json"
    assert find_finished(root, _identity("cpu-pt2.14.1", "0002_case3_seed0.json")).name == "0002_case3_seed0.json"
    assert find_finished(root, _identity("cpu-pt2.14.1", "0004_case5-asbuilt_seed0.json")) is not None
    assert find_finished(root, "000000000000") is None
    assert find_finished(root, case3_seed1, machine_id="nvidia-h100-80gb-hbm3-pt2.14.1-cu13.0") is None
    assert find_finished(tmp_path / "nowhere", case3_seed1) is None
    # An interrupted run is not finished, whatever its identity.
    interrupted = golden("0005_case2_seed0.json")
    assert interrupted["status"] == "interrupted"
    assert find_finished(root, results.record_identity(interrupted)) is None


def test_record_identity_covers_data_settings_and_version() -> None:
    record = golden()
    base = results.record_identity(record)
    assert base is not None
    assert results.record_identity(copy.deepcopy(record)) == base
    changes = [
        (("dataset", "fingerprint"), "another-dataset"),
        (("config", "epochs"), 50),
        (("config", "seed"), 7),
        (("spec", "num_feats"), 64),
        (("hgbench_version",), "9.9.9"),
    ]
    for path, value in changes:
        changed = copy.deepcopy(record)
        target = changed
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert results.record_identity(changed) != base, path
    # Settings that do not change what is measured leave the identity alone.
    moved = copy.deepcopy(record)
    moved["config"].update(out="elsewhere", checkpoint_dir="ckpts", workers=7, tag="x", data_dir="/somewhere/else")
    assert results.record_identity(moved) == base
    assert results.record_identity({"schema": SCHEMA}) is None


def test_find_finished_prefers_the_newest(tmp_path: Path) -> None:
    record = golden()
    for name in ("0002_case3_seed0.json", "0010_case3_seed0.json"):
        write_json_atomic(tmp_path / "m" / name, copy.deepcopy(record))
    assert find_finished(tmp_path, results.record_identity(record)).name == "0010_case3_seed0.json"


# ------------------------------------------------------------------------------------------------ published/
def _published_layout(root: Path) -> tuple[Path, Path]:
    """A results root with one of this machine's records and one published example record."""
    ours = root / "cpu-amd-epyc-2c-pt2.14.1" / "0001_case1_seed0.json"
    theirs = root / "published" / "cpu-pt2.14.1" / "0001_case3_seed0_smoke.json"
    for path, golden in ((ours, "0001_case1_seed0.json"), (theirs, "0002_case3_seed0.json")):
        path.parent.mkdir(parents=True)
        shutil.copy(CPU_DIR / golden, path)
    return ours, theirs


def test_published_records_are_read_only_where_named(tmp_path: Path) -> None:
    ours, theirs = _published_layout(tmp_path)
    for sources, expected in (
        ([tmp_path], [ours]),  # the default scan: results/ without published/
        ([str(tmp_path / "*")], [ours]),  # a wildcard does not name published/
        ([str(tmp_path / "**" / "*.json")], [ours]),
        ([tmp_path / "published"], [theirs]),
        ([str(tmp_path / "published" / "*" / "*.json")], [theirs]),
        ([theirs], [theirs]),
    ):
        found, warnings = load_records(sources)
        assert [s.path for s in found] == expected, sources
        assert warnings == []


def test_sweep_skip_never_counts_a_published_record(tmp_path: Path) -> None:
    _, theirs = _published_layout(tmp_path)
    identity = results.record_identity(json.loads(theirs.read_text()))
    assert find_finished(tmp_path, identity) is None
    assert find_finished(tmp_path / "published", identity) == theirs


def test_fresh_clone_results_hold_no_run_of_this_machine(fresh_clone_results: Path) -> None:
    """The committed records are the README's example: a default scan of a fresh clone's results/ finds none."""
    results_dir = fresh_clone_results
    found, _ = load_records([results_dir])
    assert found == []
    published, warnings = load_records([results_dir / "published"])
    assert len(published) == 8
    assert warnings == []
