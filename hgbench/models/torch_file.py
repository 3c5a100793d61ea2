"""Reading a torch file from a stranger: weights only, its declared sizes bounded first, and one line when refused.

Every weights file and checkpoint goes through `load_torch_file`:

- **Weights only.** ``torch.load(weights_only=True)``: tensors, containers and plain values, never arbitrary objects,
  so a malicious pickle runs nothing, and there is no fallback. When torch refuses a file, the line names the Python
  object the file asked for, in any of the wordings torch 2.11 to 2.14 use ("Unsupported global: GLOBAL x was not an
  allowed global", "Trying to load unsupported GLOBAL x whose module m is blocked", or only "Unsupported operand N"
  for a pickle written with a newer protocol, whose globals are then read from the pickle without running it), and
  never relays torch's advice to load it with ``weights_only=False``: that is the unpickle that runs code.
- **Bounded before it is read.** The file must be a regular file, no larger than the caller's bound (a case's
  weights and training state: `hgbench.models.weights.file_bound`), and, for torch's zip format, the records its
  directory declares must fit in the file itself (`torch.save` stores them uncompressed; `torch.load` allocates the
  declared size of each and inflates a compressed one, so a 0.5 MB file could make it allocate 512 MB) with a pickle
  of at most `PICKLE_BYTES`. Only then is it loaded, from the same open file, and hashed from it in chunks.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import re
import stat
import warnings
from pathlib import Path
from typing import IO, Any

import torch

from hgbench.bounded_read import file_kind
from hgbench.errors import HGBenchError, one_line
from hgbench.models.zip_directory import is_zip, zip_records

# A checkpoint's pickle holds the names, shapes and plain values (the record so far): ~2 MB for the largest registry
# case with Adam's state. The unpickler builds Python objects from it (a few times its size at worst), so it is bounded.
PICKLE_BYTES = 16 * 2**20
# How torch names a global it refuses, in the wordings of torch 2.11 to 2.14 (the blocked-module form since 2.5).
_NAMED_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module \S+ is blocked)")
OLD_CHECKPOINT_GLOBAL = re.compile(r"^numpy\.")  # hgbench 0.2.0's checkpoints kept numpy's RNG state as an ndarray
# Sentences of torch's messages that give advice, never relayed: loading with weights_only=False runs the pickle.
_ADVICE = re.compile(r"weights_only|safe_globals|trust|file an issue|documentation|Weights only load failed", re.I)
# Globals that torch's weights-only loader builds itself: not what a refused file "asked for".
_TORCHS_OWN = ("torch.", "collections.OrderedDict", "_codecs.encode")


def load_torch_file(
    path: str | Path, *, what: str, max_bytes: int | None = None, map_location: Any = "cpu", sha256: bool = False
) -> tuple[Any, str | None]:
    """Read the torch file at `path` weights-only, after bounding what it can make torch allocate.

    Args:
        path: the file (a link to one is followed: the user named it).
        what: the file in words for messages ("weights file", "checkpoint").
        max_bytes: the largest file accepted (None: any size; the declared records must still fit in the file).
        map_location: as for `torch.load`.
        sha256: also hash the file's bytes (read from the same open file, in chunks).

    Returns:
        The loaded object, and the SHA-256 (hex) when asked for, else None.

    Raises:
        HGBenchError: one line: not a regular file, too large, records that do not fit in it, a file that needs a
            full unpickle (naming the object it asks for), or damaged / not a torch file.
    """
    path = Path(path)
    try:  # without blocking: a FIFO put in the file's place would make a plain open wait for a writer for ever
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise HGBenchError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        _check_sizes(fd, path, what, max_bytes)
        os.set_blocking(fd, True)
        obj = _load(f, path, what, map_location)
        return obj, (_sha256(fd) if sha256 else None)


def _check_sizes(fd: int, path: Path, what: str, max_bytes: int | None) -> None:
    """Refuse a file that is not regular, larger than `max_bytes`, or whose zip records declare more than it holds."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise HGBenchError(f"cannot read {what} {path}: a {file_kind(info.st_mode)}, not a regular file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise HGBenchError(
            f"refusing {what} {path}: {_mib(info.st_size)}, more than the network's weights and training state can "
            f"take ({_mib(max_bytes)}); nothing was loaded"
        )
    if not is_zip(fd):
        return  # torch's legacy format: a storage's declared size is reserved, never touched, and filled from the file
    try:
        records = zip_records(fd, info.st_size)
    except ValueError as exc:
        raise HGBenchError(f"cannot read {what} {path}: {exc}") from None
    declared = sum(r.size for r in records)
    pickled = max((r.size for r in records if r.name.endswith("data.pkl")), default=0)
    if declared > info.st_size or pickled > PICKLE_BYTES:
        big = f"a {_mib(pickled)} pickle" if pickled > PICKLE_BYTES else f"{_mib(declared)} of records"
        raise HGBenchError(
            f"refusing {what} {path}: it declares {big} in a {_mib(info.st_size)} file (torch.save stores records "
            "uncompressed, and a pickle of weights is a few MB); nothing was loaded"
        )


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
        raise HGBenchError(_refusal(exc, f, path, what)) from None
    except Exception as exc:  # torch raises many types for damaged or foreign files
        reason = _without_advice(one_line(exc)) or _no_reason(exc)
        raise HGBenchError(f"cannot read {what} {path}: {type(exc).__name__}: {reason[:300]}") from None


def _refusal(exc: pickle.UnpicklingError, f: IO[bytes], path: Path, what: str) -> str:
    """The line for a file torch's weights-only unpickler refused: the object it asks for, else torch's own reason."""
    raw = exc.__context__ if isinstance(exc.__context__, pickle.UnpicklingError) else exc  # before torch's advice
    found = _NAMED_GLOBAL.search(one_line(raw))
    if found:  # torch drops the module of a builtin ("GLOBAL open"): put it back, so the name says what it is
        asked = [found.group(1) if "." in found.group(1) else f"builtins.{found.group(1)}"]
    else:
        asked = [g for g in _globals_in(f) if not g.startswith(_TORCHS_OWN)]
    if not asked:
        reason = _without_advice(one_line(raw)) or "its pickle uses what torch's weights-only loader does not read"
        return f"cannot read {what} {path}: {reason[:300]}"
    name = _printable(asked[0])
    older = (
        " (a checkpoint written by an older hgbench, 0.2.0 or earlier, holds numpy RNG states: start a fresh run)"
        if OLD_CHECKPOINT_GLOBAL.match(name)
        else ""
    )
    return (
        f"refusing {what} {path}: it holds a Python object ({name}) that only a full unpickle can build, and "
        f"unpickling can run arbitrary code; hgbench loads tensors and plain values only{older}"
    )


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


def _globals_in(f: IO[bytes]) -> list[str]:
    """The globals a refused file's pickle names, read with `pickletools` (which parses, never runs): the zip
    format's ``data.pkl``, or the first pickles of the legacy format. Nothing on any doubt."""
    f.seek(0)
    try:
        if is_zip(f.fileno()):
            import zipfile

            with zipfile.ZipFile(f) as archive:  # sizes checked already: the pickle is at most PICKLE_BYTES
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(name) if name else b""
        else:
            data = f.read(PICKLE_BYTES)
    except (OSError, ValueError, RuntimeError, EOFError, KeyError):
        return []
    return _scan(io.BytesIO(data))


def _scan(stream: io.BytesIO, pickles: int = 4) -> list[str]:
    """GLOBAL and STACK_GLOBAL names in up to `pickles` consecutive pickles (the legacy format starts with three small
    ones). STACK_GLOBAL takes its two names from the stack: the strings pushed (or fetched from the memo) last."""
    found: list[str] = []
    for _ in range(pickles):
        strings: list[str] = []
        memo: dict[Any, str | None] = {}
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                    memo[len(memo) if op.name == "MEMOIZE" else arg] = strings[-1] if strings else None
                elif op.name in ("GET", "BINGET", "LONG_BINGET") and isinstance(memo.get(arg), str):
                    strings.append(memo[arg])
                elif isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name):
                    strings.append(arg)
        except Exception:  # a pickle that does not parse: what was found so far
            break
    return found
