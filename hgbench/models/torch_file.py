"""Reading a torch file from a stranger: weights only, what it can make torch allocate bounded first, one line if not.

Every weights file and checkpoint goes through `load_torch_file`, which checks, before torch reads a byte:

- **the file**: a regular file (opened without blocking: never a FIFO's wait), no larger than the caller's bound (a
  case's weights and training state: `hgbench.models.weights.file_bound`);
- **its records** (torch's zip format, `hgbench.models.zip_directory`): the sizes its directory declares must fit in
  the file itself (`torch.save` stores them uncompressed, and `torch.load` allocates each declared size and inflates a
  compressed record, so a 0.5 MB file could make it allocate 512 MB), with a pickle of at most `PICKLE_BYTES`; a
  TorchScript archive is named as such;
- **its pickle** (`hgbench.models.pickle_scan`, walked without running it): only the globals weights and checkpoints
  hold (a malicious pickle is refused naming the object it asks for, whether torch's weights-only loader would refuse
  it, as ``posix.system``, or build it, as ``builtins.bytearray`` of gigabytes), no opcode torch's loader does not
  run (a protocol-4 pickle's), and no more Python objects than a file of its size can need.

Then ``torch.load(weights_only=True)`` reads it from the same open file (tensors, containers and plain values; no
fallback), and it is hashed from that file in chunks. Should torch refuse it all the same, the line names the global in
any of the wordings torch 2.11 to 2.14 use ("Unsupported global: GLOBAL x was not an allowed global", "Trying to load
unsupported GLOBAL x whose module m is blocked"), and torch's advice to load the file with ``weights_only=False``,
which is the unpickle that runs code, is never relayed.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import stat
import warnings
from pathlib import Path
from typing import IO, Any

import torch

from hgbench.errors import HGBenchError, one_line
from hgbench.files.bounded_read import file_kind
from hgbench.models.pickle_scan import scan
from hgbench.models.zip_directory import is_zip, read_record, zip_records

# A checkpoint's pickle holds the names, shapes and plain values (the record so far): ~2 MB for the largest registry
# case with Adam's state; the unpickler's objects are a few times that (`pickle_scan` bounds them).
PICKLE_BYTES = 16 * 2**20
_LEGACY_PICKLES = 5  # torch's legacy format: magic number, protocol, system info, the object, its storages' keys
# The Python objects a pickle may build: as much as the file holds, or this much for a small file (an hg1 checkpoint's
# pickle builds ~4 MiB; the estimate is taken with a quarter's margin).
_OBJECTS_FLOOR = 64 * 2**20
# How torch names a global it refuses, in the wordings of torch 2.11 to 2.14 (the blocked-module form since 2.5).
_NAMED_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module \S+ is blocked)")
OLD_CHECKPOINT_GLOBAL = re.compile(r"^numpy\.")  # hgbench 0.2.0's checkpoints kept numpy's RNG state as an ndarray
# Sentences of torch's messages that give advice, never relayed: loading with weights_only=False runs the pickle.
_ADVICE = re.compile(r"weights_only|safe_globals|trust|file an issue|documentation|Weights only load failed", re.I)


def load_torch_file(
    path: str | Path, *, what: str, max_bytes: int | None = None, map_location: Any = "cpu", sha256: bool = False
) -> tuple[Any, str | None]:
    """Read the torch file at `path` weights-only, after bounding what it can make torch allocate.

    Args:
        path: the file (a link to one is followed: the user named it).
        what: the file in words for messages ("weights file", "checkpoint").
        max_bytes: the largest file accepted (None: any size; what it declares must still fit in it).
        map_location: as for `torch.load`.
        sha256: also hash the file's bytes (read from the same open file, in chunks).

    Returns:
        The loaded object, and the SHA-256 (hex) when asked for, else None.

    Raises:
        HGBenchError: one line: not a regular file, too large, records or objects that do not fit it, a global that
            weights do not hold (named), or damaged / not a torch file.
    """
    path = Path(path)
    try:  # without blocking: a FIFO put in the file's place would make a plain open wait for a writer for ever
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise HGBenchError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        size = _check_file(fd, path, what, max_bytes)
        os.set_blocking(fd, True)
        _check_pickle(_pickles(fd, size, path, what), size, path, what)
        obj = _load(f, path, what, map_location)
        return obj, (_sha256(fd) if sha256 else None)


def _check_file(fd: int, path: Path, what: str, max_bytes: int | None) -> int:
    """The file's size, once it is known to be a regular file within `max_bytes`."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise HGBenchError(f"cannot read {what} {path}: a {file_kind(info.st_mode)}, not a regular file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise HGBenchError(
            f"refusing {what} {path}: {_mib(info.st_size)}, more than the network's weights and training state can "
            f"take ({_mib(max_bytes)}); nothing was loaded"
        )
    return info.st_size


def _pickles(fd: int, size: int, path: Path, what: str) -> tuple[bytes, int]:
    """The bytes holding the file's pickles and how many there are: the zip format's ``data.pkl`` once its directory
    is checked, else the start of the legacy format."""
    if not is_zip(fd):  # (the tar format of torch before 0.4 holds no pickle at its start: refused as unparsable)
        return os.pread(fd, PICKLE_BYTES + 1, 0), _LEGACY_PICKLES
    try:
        records = zip_records(fd, size)
    except ValueError as exc:
        raise HGBenchError(f"cannot read {what} {path}: {exc}") from None
    if any(r.name.endswith(("/constants.pkl", "/code/")) or "/code/" in r.name for r in records):
        raise HGBenchError(f"cannot read {what} {path}: it is a TorchScript archive (a compiled program), not weights")
    declared = sum(r.size for r in records)
    pickle_record = next((r for r in records if r.name.endswith("data.pkl")), None)
    pickled = pickle_record.size if pickle_record is not None else 0
    if declared > size or pickled > PICKLE_BYTES:
        big = f"a {_mib(pickled)} pickle" if pickled > PICKLE_BYTES else f"{_mib(declared)} of records"
        raise HGBenchError(
            f"refusing {what} {path}: it declares {big} in a {_mib(size)} file (torch.save stores records "
            "uncompressed, and a pickle of weights is a few MB); nothing was loaded"
        )
    if pickle_record is None:
        raise HGBenchError(f"cannot read {what} {path}: a zip file without data.pkl, not a torch file")
    try:
        return read_record(fd, pickle_record), 1
    except (ValueError, OSError) as exc:  # zlib.error is an Exception of its own
        raise HGBenchError(f"cannot read {what} {path}: {exc}") from None


def _check_pickle(pickles: tuple[bytes, int], size: int, path: Path, what: str) -> None:
    """Refuse a pickle that names a global weights do not hold, that torch's loader cannot run, or that would build
    more objects than a file of `size` bytes can need."""
    data, count = pickles
    limit = max(_OBJECTS_FLOOR, size) * 4 // 5  # the estimate with a quarter's margin stays within the bound
    found = scan(data, pickles=count, limit=limit)
    if found.refused:
        raise HGBenchError(_refused_global(found.refused[0], path, what))
    if found.stops_at is not None:
        raise HGBenchError(
            f"cannot read {what} {path}: its pickle uses the opcode {found.stops_at}, which torch's weights-only "
            "loader does not read (a pickle protocol above 2?)"
        )
    if found.problem is not None:
        longer = len(data) > PICKLE_BYTES and found.problem == "its pickle ends early"
        problem = f"its pickles run past the first {_mib(PICKLE_BYTES)}" if longer else found.problem
        raise HGBenchError(f"cannot read {what} {path}: {problem}")
    if found.estimate > limit:
        raise HGBenchError(
            f"refusing {what} {path}: its pickle would build over {_mib(limit)} of Python objects, more than a "
            f"{_mib(size)} file of weights can need; nothing was loaded"
        )


def _refused_global(name: str, path: Path, what: str) -> str:
    """The line for a pickle that names a global weights and checkpoints do not hold."""
    name = _printable(name)
    if _torch_builds(name):
        return (
            f"refusing {what} {path}: it asks for {name}, which weights and checkpoints never hold (torch's "
            "weights-only loader would build it, and from a few bytes it can fill memory); hgbench loads tensors and "
            "plain values only"
        )
    older = (
        " (a checkpoint written by an older hgbench, 0.2.0 or earlier, holds numpy RNG states: start a fresh run)"
        if OLD_CHECKPOINT_GLOBAL.match(name)
        else ""
    )
    return (
        f"refusing {what} {path}: it holds a Python object ({name}) that only a full unpickle can build, and "
        f"unpickling can run arbitrary code; hgbench loads tensors and plain values only{older}"
    )


def _torch_builds(name: str) -> bool:
    """Whether torch's weights-only unpickler would build this global (its allowlist; the known few if torch's
    private list moved)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return name in _get_allowed_globals()
    except (ImportError, AttributeError):
        return name in ("builtins.bytearray", "builtins.set", "builtins.complex", "_codecs.encode")


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _sha256(fd: int) -> str:
    digest, at = hashlib.sha256(), 0
    while chunk := os.pread(fd, 1 << 20, at):
        digest.update(chunk)
        at += len(chunk)
    return digest.hexdigest()


def _load(f: IO[bytes], path: Path, what: str, map_location: Any) -> Any:
    """`torch.load` weights-only from the open file, every failure one line without torch's advice."""
    f.seek(0)
    try:
        with warnings.catch_warnings():  # torch's warnings about a file ("pickle protocol 4") are not ours to print
            warnings.simplefilter("ignore")
            return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise HGBenchError(_refusal(exc, path, what)) from None
    except Exception as exc:  # torch raises many types for damaged or foreign files
        reason = _without_advice(one_line(exc)) or _no_reason(exc)
        raise HGBenchError(f"cannot read {what} {path}: {type(exc).__name__}: {reason[:300]}") from None


def _refusal(exc: pickle.UnpicklingError, path: Path, what: str) -> str:
    """The line for a file torch's weights-only unpickler refused after all: the global it names, else its reason."""
    raw = exc.__context__ if isinstance(exc.__context__, pickle.UnpicklingError) else exc  # before torch's advice
    found = _NAMED_GLOBAL.search(one_line(raw))
    if found:  # torch drops the module of a builtin ("GLOBAL exec"): put it back, so the name says what it is
        return _refused_global(found.group(1) if "." in found.group(1) else f"builtins.{found.group(1)}", path, what)
    reason = _without_advice(one_line(raw)) or "its pickle uses what torch's weights-only loader does not read"
    return f"cannot read {what} {path}: {reason[:300]}"


def _without_advice(text: str) -> str:
    """`text` without torch's sentences of advice (above all, loading with weights_only=False)."""
    sentences = re.split(r"(?<=[.!?])\s+", text)
    return " ".join(s for s in sentences if not _ADVICE.search(s)).strip()


def _no_reason(exc: BaseException) -> str:
    if "TorchScript" in str(exc):
        return "it is a TorchScript archive (a compiled program), not weights"
    return "torch could not read it"


def _printable(name: str) -> str:
    """A name from the file, safe to print on one line: control characters escaped, at most 120 characters."""
    shown = "".join(c if c.isprintable() and not c.isspace() else f"\\x{ord(c):02x}" for c in name)
    return shown if len(shown) <= 120 else shown[:117] + "..."
