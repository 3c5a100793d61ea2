"""Holding a run still mid-run on one "node" of a cluster test, so that the node is lost mid-run however fast or slow
the machine is, never after its run finished: a fault injected at a fixed point of the run, not at a moment.

Python imports a `sitecustomize` module it finds on its path when it starts. `hold_env` writes one into a folder and
returns the environment that puts it on the path of that node's processes only (its Ray workers, its torchrun
worker): there, once the runner has written the checkpoint and record of the run's first epoch (rank 0 under DDP;
another rank just reaches that point), the process says so with a file in `markers` (`held-<seed>`, holding its PID)
and sleeps, holding whatever it holds (the run's claim, its place in the process group), until the test kills or
freezes its node. Processes of other nodes run everything as it is.
"""

from __future__ import annotations

from pathlib import Path

MARKERS_ENV = "HGBENCH_TEST_HOLD_MARKERS"

SITECUSTOMIZE = """
import importlib.abc, importlib.util, os, sys, time
from pathlib import Path


class _HoldAfterFirstCheckpoint(importlib.abc.MetaPathFinder):
    # Patches hgbench.run.recorder when it is first imported, so processes that never import it pay nothing.
    def find_spec(self, name, path, target=None):
        if name != "hgbench.run.recorder":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        plain_exec = spec.loader.exec_module

        def exec_module(module):
            plain_exec(module)
            plain = module.Recorder.checkpoint

            def checkpoint(self, epoch, state):
                plain(self, epoch, state)
                marker = Path(os.environ["HGBENCH_TEST_HOLD_MARKERS"]) / f"held-{self.plan.config.seed}"
                marker.write_text(str(os.getpid()))
                while True:
                    time.sleep(1.0)

            module.Recorder.checkpoint = checkpoint

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _HoldAfterFirstCheckpoint())
"""


def hold_env(folder: Path, markers: Path) -> dict[str, str]:
    """The environment that holds a node's runs still after their first checkpoint (the module written to `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    markers.mkdir(parents=True, exist_ok=True)
    return {"PYTHONPATH": str(folder), MARKERS_ENV: str(markers)}


def held(markers: Path) -> tuple[int, int] | None:
    """(seed, PID) of the run held still, once one is."""
    for marker in markers.glob("held-*"):
        if pid := marker.read_text():
            return int(marker.name.removeprefix("held-")), int(pid)
    return None
