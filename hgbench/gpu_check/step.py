"""One GPU check's subprocess: ``python -m hgbench.gpu_check.step <name>``.

The check (found by name in `hgbench.gpu_check.checks.CHECKS`) reports through `hgbench.gpu_check.protocol`. A
package that does not import is a failed step naming it, never a traceback in place of a report; any other error is
a failed step with its one-line reason (the traceback goes to the step's log).
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

from hgbench.gpu_check.protocol import RESULT_ENV, WORK_ENV, Outcome, StepContext, missing_package


def run_check_fn(fn: Callable[[StepContext], Outcome], ctx: StepContext) -> Outcome:
    """Run one check and write its outcome; every exception becomes a failed outcome with a one-line reason."""
    try:
        outcome = fn(ctx)
    except ModuleNotFoundError as exc:
        outcome = Outcome("fail", missing_package(exc))
    except Exception as exc:  # noqa: BLE001 - a check that crashes is a failed check, reported with its reason
        traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        outcome = Outcome("fail", f"{type(exc).__name__}: {first}"[:300])
    ctx.finish(outcome)
    return outcome


def _lookup(name: str) -> Callable[[StepContext], Outcome]:
    # Each check imports torch when it runs, so a missing package fails inside run_check_fn's net.
    from hgbench.gpu_check.checks import CHECKS

    if name not in CHECKS:
        raise KeyError(f"no GPU check named {name!r}; known: {', '.join(CHECKS)}")
    return CHECKS[name]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hgbench.gpu_check.step <name>", file=sys.stderr)
        return 2
    name = args[0]
    result = os.environ.get(RESULT_ENV)
    work = Path(os.environ.get(WORK_ENV) or tempfile.mkdtemp(prefix="gpu-check-"))
    ctx = StepContext(Path(result) if result else None, work)
    outcome = run_check_fn(lambda c: _lookup(name)(c), ctx)
    print(f"{name}: {outcome.status}" + (f": {outcome.reason}" if outcome.reason else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
