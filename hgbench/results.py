"""The results store: atomic, numbered, never-overwritten run records under ``results/``, and their flattened view.

Writers (the runner) use `write_json_atomic`, `atomic_output`, `machine_id` and `next_record_path`; readers (the
reporter, `hgbench table/compare/plot`, the sweep's skip logic) use `load_records`, `summarize`, `validate_record` and
`find_finished`. The record's shape, ``hgbench.run/1``, is documented in docs/record.md; it follows pytest-benchmark's
JSON (``machine_info``, ``commit_info``, timing stats named ``min/max/mean/stddev/median/iqr/rounds/data``), and its
file layout follows pytest-benchmark's ``storage/file.py``: ``results/<machine_id>/NNNN_<stem>.json``.
The committed example records live in ``results/published/``; readers take them only where a source names that
folder, so they are never mistaken for this machine's runs.

Readers never crash on a bad file: a corrupt, truncated or foreign JSON is skipped with a one-line warning that names
the file.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hgbench.atomic_io import NUMBERED_NAME as _NUMBERED
from hgbench.atomic_io import atomic_output, next_record_path, write_bytes_atomic, write_json_atomic  # noqa: F401
from hgbench.cases import CaseSpec
from hgbench.config import ADDED_KEYS, run_identity
from hgbench.environment import machine_id

SCHEMA = "hgbench.run/1"
STATUSES: tuple[str, ...] = ("finished", "interrupted", "failed", "running")

# Top-level keys of every record (docs/record.md); values may be null where the doc allows it.
REQUIRED_KEYS: tuple[str, ...] = (
    "schema", "hgbench_version", "datetime", "started", "finished", "status", "status_reason", "run_id",
    "machine_info", "commit_info", "spec", "config", "dataset", "model", "results",
)  # fmt: skip

# Dotted paths the readers take from a *finished* record: each must be present (null allowed: "not measured").
READER_PATHS: tuple[str, ...] = (
    "spec.name", "spec.as_built", "spec.description", "model.params", "model.gflops",
    "results.train.min_per_epoch", "results.train.data_wait_fraction", "results.train.images_per_s",
    "results.train.energy_j_per_epoch", "results.pckh", "results.heatmap_acc", "results.inference",
    "config.seed",
)  # fmt: skip

# Numeric fields: when present and not null they must be numbers (a string here means a corrupt or foreign record).
NUMERIC_PATHS: tuple[str, ...] = (
    "model.params", "model.gflops", "results.train.min_per_epoch.mean", "results.train.data_wait_fraction",
    "results.train.images_per_s", "results.train.energy_j_per_epoch", "results.pckh.Mean", "results.heatmap_acc",
    "results.inference.plain.device_min", "results.inference.plain.wall_min",
)  # fmt: skip

# Sub-folders of results/ that hold other JSON by design (pytest-benchmark saves, micro-benchmarks): a directory
# walk skips them silently; naming one of their files explicitly still gets a warning.
OTHER_JSON_DIRS: frozenset[str] = frozenset({"benchmarks", "bench", ".benchmarks"})

# The sub-folder of results/ that holds the README's published example records (committed, measured elsewhere): a
# folder walk or a glob reads it only when the path or pattern names it, so `hgbench table`, `compare`, `plot` and the
# sweep's skip check never take those records for this machine's runs.
PUBLISHED_DIR = "published"

_GLOB_CHARS = re.compile(r"[*?\[]")


# ------------------------------------------------------------------------------------------------------- reading
_MISSING = object()


def _lookup(record: Any, dotted: str) -> Any:
    """``record["a"]["b"]`` for ``"a.b"``, or `_MISSING` when any level is missing or not a mapping."""
    node = record
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _get(record: Any, dotted: str) -> Any:
    """The value at ``dotted``; None when any level is missing."""
    value = _lookup(record, dotted)
    return None if value is _MISSING else value


def _has(record: Any, dotted: str) -> bool:
    """Whether every level of ``dotted`` exists (the last may hold null)."""
    return _lookup(record, dotted) is not _MISSING


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_record(record: Any) -> list[str]:
    """Check a parsed JSON document against ``hgbench.run/1`` (docs/record.md).

    Checks the schema string, every top-level key, the object-typed sections, the status value, and for a finished
    record every field the readers take (present; null allowed where not measured) and that numbers are numbers.

    Args:
        record: a parsed JSON document.

    Returns:
        One short line per problem; empty when the record is valid.
    """
    if not isinstance(record, Mapping):
        return [f"not a JSON object but a {type(record).__name__}"]
    schema = record.get("schema")
    if schema != SCHEMA:
        return [f"schema is {schema!r}, not {SCHEMA!r}" if "schema" in record else "no 'schema' key"]
    problems = [f"missing key {k!r}" for k in REQUIRED_KEYS if k not in record]
    for key in ("machine_info", "commit_info", "spec", "config", "dataset", "model", "results"):
        if key in record and not isinstance(record[key], Mapping):
            problems.append(f"{key!r} is not an object")
    status = record.get("status")
    if "status" in record and status not in STATUSES:
        problems.append(f"status {status!r} is not one of {', '.join(STATUSES)}")
    if not isinstance(_get(record, "spec.name"), str):
        problems.append("spec.name missing or not a string")
    if status == "finished":
        problems += [f"finished record lacks {p}" for p in READER_PATHS if not _has(record, p)]
    for p in NUMERIC_PATHS:
        value = _get(record, p)
        if value is not None and not _is_number(value):
            problems.append(f"{p} is {value!r}, not a number")
    return problems


@dataclass
class RunSummary:
    """One run record flattened to what the reporter shows (docs/record.md, "Readers take"); null -> None."""

    path: Path  # the record file
    run_id: str  # file stem, e.g. 0007_case3_seed0
    case: str  # spec.name: "1".."8", "hg1", ...
    as_built: bool  # the study's code as it ran (True) or the case as described (False)
    description: str  # spec.description
    seed: int | None  # config.seed
    status: str  # finished | interrupted | failed | running
    status_reason: str | None  # one line, for runs that did not finish
    device: str  # gpu_name, or "CPU: <cpu>"
    machine_id: str  # results sub-folder name, e.g. cpu-pt2.14.1
    datetime: str | None  # UTC ISO-8601, when the record was last written
    params: int | None  # model.params
    params_used: int | None  # model.params_used (parameters that get a gradient)
    gflops: float | None  # forward GFLOPs at model.gflops_input_res
    min_per_epoch: float | None  # mean training minutes per epoch (warm-up epoch excluded when 2+ epochs)
    min_per_epoch_first: float | None  # the first (warm-up) epoch on its own
    data_wait_pct: float | None  # 100 * fraction of epoch wall time spent waiting for data
    pckh_mean: float | None  # final PCKh@0.5 Mean (%), the table's "validation accuracy"
    heatmap_acc: float | None  # fraction, final validation epoch
    inference_min: float | None  # minutes for one plain pass over the validation set, wall clock, on every device
    inference_device_min: float | None  # the pass's per-batch compute on the GPU clock (CUDA events); None on CPU
    images_per_s: float | None  # training throughput
    energy_j_per_epoch: float | None  # None without an NVIDIA GPU
    peak_memory_mib: float | None  # torch.cuda.max_memory_allocated
    epochs_done: int  # epochs with an entry in results.epochs
    dataset: str | None  # dataset.name: synthetic | mpii
    config: dict = field(default_factory=dict)  # every hyperparameter of the run
    pckh: dict = field(default_factory=dict)  # the PCKh table: Head, Shoulder, ..., Mean
    epoch_minutes: list[float] = field(default_factory=list)  # per-epoch minutes behind min_per_epoch (stats.data)
    dataset_info: dict = field(default_factory=dict)  # dataset section without the skipped-images list
    hgbench_version: str | None = None  # the code version that measured the run (rows never pool two versions)
    gflops_input_res: int | None = None  # the input side `gflops` was counted at (model.gflops_input_res)

    @property
    def finished(self) -> bool:
        """Whether the run finished (only finished runs enter the table)."""
        return self.status == "finished"

    @property
    def label(self) -> str:
        """``case 3`` or ``case 5 (as built)``."""
        prefix = f"case {self.case}" if self.case.isdigit() else self.case
        return f"{prefix} (as built)" if self.as_built else prefix


def _num(value: Any) -> float | None:
    return float(value) if _is_number(value) and math.isfinite(value) else None


def _int(value: Any) -> int | None:
    return int(value) if _is_number(value) and float(value).is_integer() else None


def summarize(record: Mapping[str, Any], path: str | Path) -> RunSummary:
    """Flatten a (valid) record into a `RunSummary`, taking each field from where docs/record.md says.

    Missing or null fields become None, so a partial (interrupted) record summarises too.

    Args:
        record: the parsed record.
        path: the file it came from (its stem is the fallback run id).
    """
    path = Path(path)
    info = record.get("machine_info") or {}
    gpu = info.get("gpu_name")
    device = str(gpu) if gpu else (f"CPU: {info['cpu']}" if info.get("cpu") else "unknown device")
    plain = _get(record, "results.inference.plain") or {}
    wait = _num(_get(record, "results.train.data_wait_fraction"))
    stats = _get(record, "results.train.min_per_epoch")
    data = stats.get("data") if isinstance(stats, Mapping) else None
    pckh = _get(record, "results.pckh")
    epochs = _get(record, "results.epochs")
    dataset = record.get("dataset") if isinstance(record.get("dataset"), Mapping) else {}
    config = record.get("config") if isinstance(record.get("config"), Mapping) else {}
    return RunSummary(
        path=path,
        run_id=str(record.get("run_id") or path.stem),
        case=str(_get(record, "spec.name")),
        as_built=bool(_get(record, "spec.as_built")),
        description=str(_get(record, "spec.description") or ""),
        seed=_int(config.get("seed")),
        status=str(record.get("status")),
        status_reason=record.get("status_reason"),
        device=device,
        machine_id=str(info.get("machine_id") or machine_id(info)),
        datetime=record.get("datetime"),
        params=_int(_get(record, "model.params")),
        params_used=_int(_get(record, "model.params_used")),
        gflops=_num(_get(record, "model.gflops")),
        min_per_epoch=_num(_get(record, "results.train.min_per_epoch.mean")),
        min_per_epoch_first=_num(_get(record, "results.train.min_per_epoch_first")),
        data_wait_pct=None if wait is None else 100.0 * wait,
        pckh_mean=_num(_get(record, "results.pckh.Mean")),
        heatmap_acc=_num(_get(record, "results.heatmap_acc")),
        inference_min=_num(plain.get("wall_min")),
        inference_device_min=_num(plain.get("device_min")),
        images_per_s=_num(_get(record, "results.train.images_per_s")),
        energy_j_per_epoch=_num(_get(record, "results.train.energy_j_per_epoch")),
        peak_memory_mib=_num(_get(record, "results.peak_memory_mib")),
        epochs_done=len(epochs) if isinstance(epochs, list) else 0,
        dataset=dataset.get("name"),
        config=dict(config),
        pckh=dict(pckh) if isinstance(pckh, Mapping) else {},
        epoch_minutes=[float(x) for x in data if _num(x) is not None] if isinstance(data, list) else [],
        dataset_info={k: v for k, v in dataset.items() if k != "skipped_images"},
        hgbench_version=str(record["hgbench_version"]) if record.get("hgbench_version") is not None else None,
        gflops_input_res=_int(_get(record, "model.gflops_input_res")),
    )


def _walk(directory: Path) -> Iterator[Path]:
    """Every *.json under `directory`, sorted, skipping the folders that hold other JSON by design and published/."""
    skipped = OTHER_JSON_DIRS | {PUBLISHED_DIR}
    for path in sorted(directory.rglob("*.json")):
        rel = path.relative_to(directory).parts[:-1]
        if any(part in skipped or part.startswith(".") for part in rel) or path.name.startswith("."):
            continue
        yield path


def _reaches_unnamed_published(match: Path, pattern: str) -> bool:
    """Whether a glob match lies in a published/ folder that the pattern does not name as a literal part."""
    return PUBLISHED_DIR in match.parts and PUBLISHED_DIR not in Path(pattern).expanduser().parts


def expand_sources(sources: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Resolve files, directories (recursive ``*.json``) and glob patterns into record files.

    A ``published/`` folder (`PUBLISHED_DIR`) is read only where a source names it: ``results`` and ``results/*``
    leave it out, ``results/published`` and ``results/published/*/*.json`` read it.

    Args:
        sources: paths or patterns, in the order given.

    Returns:
        The files (each once, in order) and the sources that matched nothing (missing paths, empty globs).
    """
    files: list[Path] = []
    missing: list[str] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for source in sources:
        text = os.fspath(source)
        path = Path(text).expanduser()
        if path.is_dir():
            for found in _walk(path):
                add(found)
        elif path.is_file():
            add(path)
        elif _GLOB_CHARS.search(text) and (matches := _glob(text)):
            for match in (Path(m) for m in matches if not _reaches_unnamed_published(Path(m), text)):
                if match.is_dir():
                    for found in _walk(match):
                        add(found)
                elif match.is_file():
                    add(match)
        else:
            missing.append(text)
    return files, missing


def _glob(pattern: str) -> list[str]:
    """Shell-style matches of a pattern, ``**`` included, sorted; `Path.glob` cannot take an absolute pattern."""
    return sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))  # noqa: PTH207


def _is_known_other(document: Any) -> bool:
    """JSON that lives in results/ by design but is not a run record: pytest-benchmark saves, other hgbench kinds."""
    if not isinstance(document, Mapping):
        return False
    schema = document.get("schema")
    if isinstance(schema, str) and schema.startswith("hgbench.") and not schema.startswith("hgbench.run/"):
        return True
    return "schema" not in document and "benchmarks" in document and "machine_info" in document


def read_record(path: str | Path) -> tuple[dict | None, str | None]:
    """Parse and validate one record file.

    Returns:
        ``(record, None)`` for a valid record, else ``(None, reason)`` with a one-line reason.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"unreadable ({getattr(exc, 'strerror', None) or exc})"
    if not text.strip():
        return None, "empty file (a run that never wrote its record?)"
    try:
        document = json.loads(text)
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    problems = validate_record(document)
    if problems:
        kind = "not an hgbench run record" if _get(document, "schema") != SCHEMA else "invalid record"
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        return None, f"{kind}: {'; '.join(problems[:3])}{more}"
    record = dict(document)
    if isinstance(record.get("config"), dict):  # written before a config key existed: it ran with the old value
        record["config"] = {**ADDED_KEYS, **record["config"]}
    return record, None


def load_records(sources: Iterable[str | Path]) -> tuple[list[RunSummary], list[str]]:
    """Load every run record under `sources` (files, directories searched recursively, glob patterns).

    Never raises for bad data: a corrupt, empty or foreign JSON and a source that matches nothing each add a warning
    line naming it. Inside a directory walk, the sub-folders ``benchmarks/`` and ``bench/`` (pytest-benchmark saves
    and micro-benchmark JSON) and files of another known kind are skipped silently, and so is ``published/`` (the
    README's example records) unless a source names it.

    Args:
        sources: what to read, e.g. ``["results"]`` or ``["results/cpu-*/00*_case3_*.json"]``.

    Returns:
        The summaries of every valid record (any status; in the order found), and the warnings.
    """
    sources = list(sources)
    files, missing = expand_sources(sources)
    warnings = [f"{m}: no such file, folder or matching pattern" for m in missing]
    explicit = {Path(os.fspath(s)).expanduser().resolve() for s in sources}
    summaries: list[RunSummary] = []
    for path in files:
        record, reason = read_record(path)
        if record is None:
            if path.resolve() not in explicit and _is_known_other(_try_json(path)):
                continue
            warnings.append(f"{path}: skipped, {reason}")
            continue
        summaries.append(summarize(record, path))
    return summaries, warnings


def _try_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def record_identity(record: Mapping[str, Any]) -> str | None:
    """The run identity (`hgbench.config.run_identity`) of a record, recomputed from what it stores; None if it cannot
    be (a record without spec, config or dataset fingerprint)."""
    try:
        spec = CaseSpec.from_dict(record["spec"])
        dataset = record["dataset"]["fingerprint"]
        return run_identity(record["config"], spec_fingerprint=spec.fingerprint(), dataset_fingerprint=str(dataset),
                            version=str(record.get("hgbench_version")))  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None


def find_finished(results_dir: str | Path, identity: str, *, machine_id: str | None = None) -> Path | None:
    """The newest finished record of the run whose identity is `identity`, so a sweep can skip it.

    Args:
        results_dir: the results root to search (recursively; its ``published/`` folder is not this machine's).
        identity: the planned run's `hgbench.config.run_identity` (see `hgbench.plan.planned_identity`): the same
            function resume uses, so "already finished" and "can be resumed" never disagree.
        machine_id: only look in this machine's sub-folder (timings from another machine are not a finished run here).

    Returns:
        The matching record's path, or None.
    """
    root = Path(results_dir)
    if machine_id is not None:
        root = root / machine_id
    if not root.is_dir():
        return None
    found: Path | None = None
    for path in _walk(root):
        record, _ = read_record(path)
        if record is None or record["status"] != "finished" or record_identity(record) != identity:
            continue
        if found is None or _order_key(path) >= _order_key(found):
            found = path
    return found


def interrupted_runs(results_dir: str | Path, case: str, as_built: bool, *,
                     machine_id: str | None = None) -> list[tuple[Path, dict]]:  # fmt: skip
    """Records of `case` (in that form) that stopped before finishing and whose checkpoint is still there, newest
    first: the runs `hgbench run --resume` can continue."""
    root = Path(results_dir) / machine_id if machine_id is not None else Path(results_dir)
    if not root.is_dir():
        return []
    found = []
    for path in _walk(root):
        record, _ = read_record(path)
        if record is None or record["status"] != "interrupted" or not record.get("checkpoint"):
            continue
        if str(_get(record, "spec.name")) != str(case) or bool(_get(record, "spec.as_built")) != bool(as_built):
            continue
        if Path(record["checkpoint"]).is_file():
            found.append((path, record))
    return sorted(found, key=lambda item: _order_key(item[0]), reverse=True)


def _order_key(path: Path) -> tuple[int, str]:
    """Record number first (numbers grow with time in one folder), then name."""
    m = _NUMBERED.match(path.name)
    return (int(m.group(1)) if m else -1, path.name)
