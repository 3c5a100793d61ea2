"""The results store: finding and reading the run records under ``results/`` (the record's schema is
hgbench.run.record).

Records are written by the runner's recorder through `hgbench.files.atomic_io` (numbered, never overwritten, atomic) to
``results/<machine_id>/NNNN_<stem>.json``, pytest-benchmark's ``storage/file.py`` layout. Readers (the reporter,
`hgbench table/compare/plot`, the sweep's skip check, `--resume`) use `load_records`, `read_record`, `find_finished`,
`interrupted_runs` and `runs_in_training`; each record read is validated and summarised by hgbench.run.record. The
committed example records live in ``results/published/``; readers take them only where a source names that folder, so
they are never mistaken for this machine's runs.

Readers never crash or hang on a bad file: a corrupt, truncated or foreign JSON, a file that is not a regular one (a
FIFO, a link to a device), one over 64 MiB or nested over 64 levels deep is skipped with a one-line warning that names
the file (`hgbench.files.bounded_read`: checked before and after it is opened, never waited on, never read past the
bound).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hgbench.files.atomic_io import NUMBERED_NAME as _NUMBERED
from hgbench.files.atomic_io import atomic_output, next_record_path, write_bytes_atomic, write_json_atomic  # noqa: F401
from hgbench.files.bounded_read import JSON_BYTES, parse_json, read_json, read_limited
from hgbench.files.claim import Owner, holder
from hgbench.run.record import (  # noqa: F401  (the store's readers hand out the schema's own types)
    SCHEMA,
    record_value,
    validate_record,
)
from hgbench.run.run_summary import RunSummary, summarize  # noqa: F401  (as the schema's types above)
from hgbench.spec.cases import CaseSpec
from hgbench.spec.config import ADDED_KEYS, run_identity

# Sub-folders of results/ that hold other JSON by design (pytest-benchmark saves, micro-benchmarks): a directory
# walk skips them silently; naming one of their files explicitly still gets a warning.
OTHER_JSON_DIRS: frozenset[str] = frozenset({"benchmarks", "bench", ".benchmarks"})

# The sub-folder of results/ that holds the README's published example records (committed, measured elsewhere): a
# folder walk or a glob reads it only when the path or pattern names it, so `hgbench table`, `compare`, `plot` and the
# sweep's skip check never take those records for this machine's runs.
PUBLISHED_DIR = "published"

_GLOB_CHARS = re.compile(r"[*?\[]")


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
        key = _real(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for source in sources:
        text = os.fspath(source)
        path = Path(text).expanduser()
        if path.is_dir():
            for found in _walk(path):
                add(found)
        elif path.exists():  # a FIFO or a device too: reading it names why it is skipped
            add(path)
        elif _GLOB_CHARS.search(text) and (matches := _glob(text)):
            for match in (Path(m) for m in matches if not _reaches_unnamed_published(Path(m), text)):
                if match.is_dir():
                    for found in _walk(match):
                        add(found)
                elif match.exists():
                    add(match)
        else:
            missing.append(text)
    return files, missing


def _real(path: Path) -> Path:
    """`path` with its links resolved, to tell two names of one file apart; a link loop (which `Path.resolve` raises
    on) or a vanished link keeps its absolute name, and reading the file then names the problem."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: Python < 3.13's "Symlink loop"
        return Path(os.path.abspath(path))  # noqa: PTH100 (resolve is what failed)


def _glob(pattern: str) -> list[str]:
    """Shell-style matches of a pattern, ``**`` included, sorted; `Path.glob` cannot take an absolute pattern.

    ``**`` never follows a link to a folder (`glob.glob` does, and a folder linking to its parent never ends): it
    goes through `Path.glob` from the pattern's literal head, leaving hidden names out as `glob.glob` does.
    """
    path = Path(pattern).expanduser()
    if "**" not in path.parts:
        return sorted(glob.glob(str(path)))  # noqa: PTH207
    literal = next(i for i, part in enumerate(path.parts) if _GLOB_CHARS.search(part))
    root, rest = Path(*path.parts[:literal]), Path(*path.parts[literal:])
    matches = list(root.glob(str(rest)))
    names_hidden = any(part.startswith(".") for part in rest.parts)
    return sorted(
        str(m) for m in matches if names_hidden or not any(part.startswith(".") for part in m.relative_to(root).parts)
    )


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
        data = read_limited(path, limit=JSON_BYTES)
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    if not data.strip():
        return None, "empty file (a run that never wrote its record?)"
    try:
        document = parse_json(data)
    except UnicodeDecodeError as exc:
        return None, f"unreadable ({exc})"
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    problems = validate_record(document)
    if problems:
        kind = "not an hgbench run record" if record_value(document, "schema") != SCHEMA else "invalid record"
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
    explicit = {_real(Path(os.fspath(s)).expanduser()) for s in sources}
    summaries: list[RunSummary] = []
    for path in files:
        record, reason = read_record(path)
        if record is None:
            if _real(path) not in explicit and _is_known_other(_try_json(path)):
                continue
            warnings.append(f"{path}: skipped, {reason}")
            continue
        summaries.append(summarize(record, path))
    return summaries, warnings


def _try_json(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def record_identity(record: Mapping[str, Any]) -> str | None:
    """The run identity (`hgbench.spec.config.run_identity`) of a record, recomputed from what it stores; None if it
    cannot be (a record without spec, config or dataset fingerprint)."""
    try:
        spec = CaseSpec.from_dict(record["spec"])
        dataset = record["dataset"]["fingerprint"]
        return run_identity(
            record["config"],
            spec_fingerprint=spec.fingerprint(),
            dataset_fingerprint=str(dataset),
            version=str(record.get("hgbench_version")),
        )
    except (KeyError, TypeError, ValueError):
        return None


def find_finished(results_dir: str | Path, identity: str, *, machine_id: str | None = None) -> Path | None:
    """The newest finished record of the run whose identity is `identity`, so a sweep can skip it.

    Args:
        results_dir: the results root to search (recursively; its ``published/`` folder is not this machine's).
        identity: the planned run's `hgbench.spec.config.run_identity` (see `hgbench.run.plan.planned_identity`): the
        same
            function resume uses, so "already finished" and "can be resumed" never disagree.
        machine_id: only look in this machine's sub-folder (timings from another machine are not a finished run here).

    Returns:
        The matching record's path, or None.
    """
    found = [
        path for path, record in _records(results_dir, "finished", machine_id) if record_identity(record) == identity
    ]
    return max(found, key=_order_key, default=None)


def interrupted_runs(
    results_dir: str | Path, case: str, as_built: bool, *, machine_id: str | None = None
) -> list[tuple[Path, dict]]:
    """Records of `case` (in that form) that stopped before finishing and whose checkpoint is still there, newest
    first: the runs `hgbench run --resume` can continue. A record that says interrupted while a live process holds
    its run's claim (`hgbench.files.claim`) is of a run being trained now, not stopped: see `runs_in_training`."""
    return [
        (path, record)
        for path, record, owner in _unfinished(results_dir, case, as_built, machine_id)
        if owner is None and Path(record["checkpoint"]).is_file()
    ]


def runs_in_training(
    results_dir: str | Path, case: str, as_built: bool, *, machine_id: str | None = None
) -> list[tuple[Path, dict, Owner]]:
    """Records of `case` (in that form) whose run a live process is training now, with that process, newest first."""
    return [(p, r, owner) for p, r, owner in _unfinished(results_dir, case, as_built, machine_id) if owner is not None]


def _unfinished(
    results_dir: str | Path, case: str, as_built: bool, machine_id: str | None
) -> list[tuple[Path, dict, Owner | None]]:
    """The interrupted records of `case` that name a checkpoint, newest first, each with the process training its run
    now (None: none)."""
    found = [
        (path, record, holder(Path(record["checkpoint"]).parent))
        for path, record in _records(results_dir, "interrupted", machine_id)
        if str(record_value(record, "spec.name")) == str(case)
        and bool(record_value(record, "spec.as_built")) == bool(as_built)
        and record.get("checkpoint")
    ]
    return sorted(found, key=lambda item: _order_key(item[0]), reverse=True)


def _records(results_dir: str | Path, status: str, machine_id: str | None) -> Iterator[tuple[Path, dict]]:
    """The valid records of one status under `results_dir` (only its `machine_id` sub-folder when given)."""
    root = Path(results_dir) / machine_id if machine_id is not None else Path(results_dir)
    if not root.is_dir():
        return
    for path in _walk(root):
        record, _ = read_record(path)
        if record is not None and record["status"] == status:
            yield path, record


def _order_key(path: Path) -> tuple[int, str]:
    """Record number first (numbers grow with time in one folder), then name."""
    m = _NUMBERED.match(path.name)
    return (int(m.group(1)) if m else -1, path.name)
