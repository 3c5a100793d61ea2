"""The one exception type for user-facing errors: the CLI prints its message on one line and exits non-zero."""

from __future__ import annotations


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

    A `ValueError` too, as the registry's own lookup (`hgbench.cases.get_spec`) raises for an unknown id.
    """


class PeerLost(HGBenchError):
    """Another process of a torchrun job stopped (its node lost, killed) or did not answer within the collective
    timeout: this process's run is interrupted, not failed, and its record (rank 0's) says how to continue it."""

    exit_code = 5
