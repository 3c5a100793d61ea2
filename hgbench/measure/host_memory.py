"""The host's peak resident memory of this process (``results.peak_host_memory_mib``), on every device.

The figure is the run's own process only (``getrusage(RUSAGE_SELF).ru_maxrss``, the kernel's high-water mark of the
resident set): DataLoader workers are not counted. They are forked children that share the parent's pages copy-on-
write, so adding their resident sets would count the shared pages once per worker, and the kernel's figure for
children (``RUSAGE_CHILDREN``) is the largest *reaped* child only, which persistent workers never are during a run.
What a worker adds is its own decode buffers and a batch or two of images: small beside the model and optimiser.
"""

from __future__ import annotations

import resource
import sys


def peak_host_memory_mib() -> float:
    """Peak resident set size of this process since it started, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
