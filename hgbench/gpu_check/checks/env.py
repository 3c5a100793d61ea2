"""The environment check: the Python, torch and packages at hand, the machine's name, whether there is a CUDA device.

The first step, and the only one that runs without CUDA: it says what is missing or outside the supported torch range.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import re

from hgbench.gpu_check.checks._common import REPO_ROOT
from hgbench.gpu_check.protocol import Outcome, StepContext

# Every package hgbench imports somewhere (pyproject's dependencies), by import name and pip name.
PACKAGES: tuple[tuple[str, str], ...] = (
    ("torch", "torch"),
    ("torchvision", "torchvision"),
    ("numpy", "numpy"),
    ("pandas", "pandas"),
    ("scipy", "scipy"),
    ("rich", "rich"),
    ("pynvml", "nvidia-ml-py"),
    ("cv2", "opencv-python-headless"),
    ("matplotlib", "matplotlib"),
)


def _torch_range() -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The (lowest, first unsupported) torch versions pyproject.toml declares, e.g. ((2, 11), (2, 15))."""
    try:
        import tomllib

        deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    except (OSError, KeyError, ValueError):
        return None
    for dep in deps:
        m = re.fullmatch(r"torch\s*>=\s*([\d.]+)\s*,\s*<\s*([\d.]+)", dep.strip())
        if m:
            return tuple(map(int, m[1].split("."))), tuple(map(int, m[2].split(".")))
    return None


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text.split("+")[0])[:3])


def _import_problem(module: str) -> str | None:
    """None when the module imports; "not installed"; or why an installed one does not (a missing shared library)."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return "not installed"
        return f"does not import: {exc}"
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError of a shared library, anything: say which
        return f"does not import: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:200]
    return None


def environment(ctx: StepContext) -> Outcome:
    """The Python, torch and packages at hand; the machine's name; whether there is a CUDA device."""
    versions: dict[str, str | None] = {}
    missing = []
    for module, dist in PACKAGES:
        problem = _import_problem(module)
        if problem is not None:
            versions[dist] = None
            missing.append(f"{module} (pip install {dist})" if problem == "not installed" else f"{module} ({problem})")
            continue
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "present"  # importable, installed without metadata (a site build)
    versions["pytest"] = importlib.metadata.version("pytest") if importlib.util.find_spec("pytest") else None
    ctx.update(python=platform.python_version(), packages=versions)
    if versions["torch"] is None:
        ctx.update(cuda_available=False, cuda_reason="torch does not import (pip install torch)")
        return Outcome("fail", f"missing {', '.join(missing)}", f"Python {platform.python_version()}, no torch")
    import torch

    cuda = torch.cuda.is_available()
    ctx.update(python=platform.python_version(), packages=versions, cuda_available=cuda, torch=torch.__version__)
    if not cuda:
        ctx.update(cuda_reason="no CUDA device (torch.cuda.is_available() is False)")
    from hgbench.measure.environment import collect_environment, machine_id

    info = collect_environment(torch.device("cuda" if cuda else "cpu"))
    ctx.update(
        machine_id=machine_id(info),
        gpu_name=info.get("gpu_name"),
        cuda=info.get("cuda"),
        driver=info.get("driver"),
        cudnn=info.get("cudnn"),
    )
    problems = [f"missing {', '.join(missing)}"] if missing else []
    bounds = _torch_range()
    have = _version_tuple(torch.__version__)
    if bounds and not bounds[0] <= have[: len(bounds[0])] < bounds[1]:
        low, high = (".".join(map(str, b)) for b in bounds)
        problems.append(f"torch {torch.__version__} is outside the supported range >={low},<{high}")
    summary = f"Python {platform.python_version()}, torch {torch.__version__}, " + (
        f"{info.get('gpu_name')}, CUDA {info.get('cuda')}" if cuda else "no CUDA device"
    )
    return Outcome("fail" if problems else "pass", "; ".join(problems) or None, summary)
