"""`hgbench.cli` whose load meters read synthetic CPU counters: ``torchrun ... -m helpers.two_ranks_busy run ...``.

Every `LoadMeter` of the run reads counters in which, between any two readings of a process, that process used one
CPU second and the machine (two CPUs) was busy exactly two: both ranks busy, nothing else running. So in every
window each rank's own CPU time is half the machine's, and "other processes" are only the run's other rank: a window
is quiet once the ranks' windows are combined (`hgbench.measure.contention.combine_loads`) and contended (50%) if a
rank's sibling is taken for a competitor. The figures depend on no clock and no real load.
"""

from __future__ import annotations

import sys

from hgbench.cli import main
from hgbench.measure.contention import CpuReading, LoadMeter
from hgbench.run import runner


class TwoRanksBusy:
    """The counters one rank reads: its own CPU time, and a two-CPU machine busy with both ranks."""

    def __init__(self) -> None:
        self.readings = 0

    def __call__(self) -> CpuReading:
        self.readings += 1
        n = float(self.readings)
        return CpuReading(t=n, busy_s=2 * n, total_s=2 * n, steal_s=0.0, own_s=n, load_avg_1m=2.0, cpus=2)


if __name__ == "__main__":
    runner.LoadMeter = lambda: LoadMeter(read=TwoRanksBusy())  # the runner's meter, for this process
    sys.exit(main(sys.argv[1:]))
