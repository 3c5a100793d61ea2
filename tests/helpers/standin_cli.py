"""``python tests/helpers/standin_cli.py ARGS``: `hgbench ARGS` in a process that looks like one with two GPUs (the
CUDA stand-in, NVML faked and wired to the stand-in's GPUs as the `cuda_standin` fixture does).

For tests that need a process of its own: an environment the test process should not take on (a PATH without a C
compiler), or state that lasts a process (what Triton caches). Exits with hgbench's exit code, or 99 when a CUDA rule
was broken (listed on stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `helpers` importable, as under pytest

import pytest  # noqa: E402 - after the path above

from helpers.cuda_standin import cuda_standin  # noqa: E402
from helpers.fake_nvml import answer_for_standin, make_fake_nvml  # noqa: E402
from hgbench.cli import main  # noqa: E402


def run(argv: list[str]) -> int:
    patch = pytest.MonkeyPatch()
    fake = make_fake_nvml()
    patch.setitem(sys.modules, "pynvml", fake)
    try:
        with cuda_standin(patch, device_count=2) as gpu:
            answer_for_standin(patch, fake, gpu)
            code = main(argv)
    finally:
        patch.undo()
    if gpu.violations:
        print("CUDA rules broken:\n" + "\n".join(gpu.violations), file=sys.stderr)
        return 99
    return code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
