"""The one exception type for user-facing errors: the CLI prints its message on one line and exits non-zero."""

from __future__ import annotations

import re

# The import name of a package hgbench uses where pip calls it something else.
PIP_NAMES = {"cv2": "opencv-python-headless", "pynvml": "nvidia-ml-py", "yaml": "pyyaml", "PIL": "pillow"}
# How Python says an import failed; also in the text of an error a DataLoader worker raised and the loader re-raised.
_NO_MODULE = re.compile(r"No module named '([\w.]+)'")


def missing_package(exc: ModuleNotFoundError) -> str:
    """``missing package: cv2 (pip install opencv-python-headless)`` from an import that failed."""
    found = _NO_MODULE.findall(str(exc))
    name = (exc.name or (found[-1] if found else str(exc))).split(".")[0]
    return f"missing package: {name} (pip install {PIP_NAMES.get(name, name)})"


def missing_package_in(text: str) -> str | None:
    """`missing_package`'s line for the last package that `text` (a log) says did not import: a traceback's last
    line, ``ModuleNotFoundError: No module named 'x'``, or hgbench's own ``missing package: x`` (a passing mention of
    a module, as a library's warning may make, is not taken for one)."""
    found = re.findall(r"(?:ModuleNotFoundError: No module named '|missing package: )([\w.]+)", text)
    return missing_package(ModuleNotFoundError(name=found[-1])) if found else None


def missing_dependency(exc: BaseException) -> str | None:
    """`missing_package`'s line when `exc` says a package hgbench depends on did not import (raised here, or in a
    DataLoader worker and re-raised with the worker's traceback as its text); None for anything else, a failed
    import of hgbench's own modules included (that is a bug)."""
    if not isinstance(exc, ModuleNotFoundError):
        return None
    found = _NO_MODULE.findall(str(exc))
    name = exc.name or (found[-1] if found else "")
    if not name or name.split(".")[0] == "hgbench":
        return None
    return missing_package(ModuleNotFoundError(name=name))


def one_line(exc: BaseException) -> str:
    """An exception's message squeezed onto one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class HGBenchError(Exception):
    """A problem with the user's input or environment (bad file, unknown case, full disk...), not a bug.

    The message must be one self-contained line that names the offending file, entry or value.
    """

    exit_code: int = 2


class DataError(HGBenchError):
    """A dataset, image or annotation file is missing or malformed."""


class RunFailed(HGBenchError):
    """A run stopped for a reason the user must see (NaN loss, ...); its record is written as failed."""

    exit_code = 3


class CaseError(HGBenchError, ValueError):
    """An unknown case id, or a variant file that does not declare a network hgbench can build.

    A `ValueError` too, as the registry's own lookup (`hgbench.spec.cases.get_spec`) raises for an unknown id.
    """


class PeerLost(HGBenchError):
    """Another process of a torchrun job stopped (its node lost, killed) or did not answer within the collective
    timeout: this process's run is interrupted, not failed, and its record (rank 0's) says how to continue it."""

    exit_code = 5
