"""The package's layering: every import of hgbench by hgbench goes down the layers (or sideways without a cycle).

Data flows one way: the case registry -> the model -> the data -> the loops that train, evaluate and time it ->
checkpoints and the record -> the runner (then the model-only bench) -> the results store -> the report -> the sweep
-> the CLI; the package's top level (its Python API) sits above them all.
A module may import its own layer or any layer below it, never one above; and the module graph has no cycle at all.

Every import counts: module level, inside functions, under ``TYPE_CHECKING``, and ``importlib.import_module`` /
``__import__`` with a literal name. A new module must be placed in `LAYERS` before this test passes.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

# Layers from the bottom up; a module may import modules of its own layer or of any earlier one. Names are relative
# to the package ("" is hgbench/__init__.py); a package name covers every module under it.
LAYERS: dict[str, tuple[str, ...]] = {
    # Import nothing of hgbench but each other: the version, errors, the skeleton, config, file IO, the output stride,
    # statistics.
    "leaves": ("_version", "errors", "skeleton", "config", "atomic_io", "bounded_read", "claim", "geometry", "stats"),
    # The registry: plain data. The registry itself reads only the leaves below it (in practice HEATMAP_STRIDE);
    # variant files and the case a run's config names are read beside it.
    "cases": ("cases", "variants", "footprint"),
    # The network, building it by case name, reading weights in other tools' layouts, counting its cost.
    "models": ("models",),
    # MPII's format and the datasets; the ground-truth file belongs to the format (the datasets read and write it).
    "data": ("data", "groundtruth"),
    # What runs over the data: metrics and decoding, loss, clocks, environment, NVML, speed modes, sampling, DDP,
    # the training and inference loops, the evaluation output, pictures of poses.
    "loops": (
        "metrics",
        "decoding",
        "loss",
        "timing",
        "environment",
        "host_memory",
        "nvml",
        "nvml_device",
        "contention",
        "speed_modes",
        "workload",
        "mode_probe",
        "compile_watch",
        "compile_probe",
        "sampling",
        "distributed",
        "training",
        "inference",
        "evaluation",
        "visualize",
    ),
    "checkpoint and record": ("checkpoint", "record", "run_summary"),
    # Sending a run's figures, pictures and settings to TensorBoard and MLflow, from the record's own entries.
    "tracking": ("tracking",),
    # One run: its plan (device, settings, data, identity), progress display, recorder, the final inference pass, how
    # a run that stops early says why, the runner, scoring a saved checkpoint (which plans its data as a run does) and
    # checking that a set-up reproduces published figures.
    "runner": (
        "plan",
        "progress",
        "recorder",
        "state",
        "final_pass",
        "failures",
        "runner",
        "scoring",
        "reproduce",
        "run_setup",
    ),
    # The model-only benchmark may reuse the runner's pieces, never the reverse (--fast reads hgbench.speed_modes).
    "bench": ("bench",),
    "results store": ("results",),
    "report": ("report",),
    # Many runs over an engine (local, Ray, Slurm): plans runs as the runner does, reads the store, shows the report.
    "sweep": ("sweep",),
    "commands and cli": ("commands", "cli"),
    # `python -m hgbench.gpu_check`: measures README's GPU claims with every layer below, the CLI's `run` included.
    "gpu check": ("gpu_check",),
    # The package's top level ("" is hgbench/__init__.py): the Python API (`hgbench.create_model`), imported lazily.
    "api": ("",),
}

# Imports that go against the layers and are tolerated for now, each pair (importer, imported) with its reason. None
# today. The test fails on any violation not listed here, and on a listed one that no longer happens.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()

PACKAGE = "hgbench"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = (PACKAGE, *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _layer_of(module: str) -> int:
    """Index in `LAYERS` of a module (the most specific entry wins); -1 when no entry covers it."""
    relative = module.removeprefix(PACKAGE).removeprefix(".")
    best, best_len = -1, -1
    for index, names in enumerate(LAYERS.values()):
        for name in names:
            covers = relative == name or (name and relative.startswith(name + ".")) or (not name and not relative)
            if covers and len(name) > best_len:
                best, best_len = index, len(name)
    return best


def _resolve(name: str) -> str | None:
    """The hgbench module an imported name means (``hgbench.a.b`` -> that module or its nearest package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _imported_names(module: str, tree: ast.AST) -> list[tuple[str, int]]:
    """(dotted name, line) of everything `module` imports or may import by a literal name, anywhere in its body."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package, up `level - 1` packages
                package = _package_of(module).split(".")
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # `from a import b` imports module a.b when there is one, else the name b from module a.
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.append((submodule if submodule in MODULES else base, node.lineno))
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.append((arg.value, node.lineno))
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                names.append((str(arg.values[0].value).rstrip("."), node.lineno))  # f"hgbench.commands.{name}"
    return names


def _is_dynamic_import(func: ast.expr) -> bool:
    """``importlib.import_module(...)``, ``import_module(...)`` or ``__import__(...)``."""
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


def _edges() -> dict[tuple[str, str], list[int]]:
    """(importer, imported) -> the lines of the importer where it happens, for every hgbench -> hgbench import."""
    edges: dict[tuple[str, str], list[int]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, line in _imported_names(module, tree):
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            target = _resolve(name)
            if target is not None and target != module:
                edges.setdefault((module, target), []).append(line)
    return edges


EDGES = _edges()


def _where(edge: tuple[str, str]) -> str:
    importer, imported = edge
    rel = MODULES[importer].relative_to(ROOT.parent)
    return f"{rel}:{','.join(map(str, sorted(set(EDGES[edge]))))} imports {imported}"


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in MODULES if _layer_of(m) < 0]
    assert not unplaced, f"modules missing from LAYERS (place each in its layer): {unplaced}"


def test_the_walker_sees_function_level_and_dynamic_imports() -> None:
    # Guards the test itself: these imports exist today and are of the kinds a careless walker misses.
    assert ("hgbench.cli", "hgbench.commands") in EDGES  # importlib.import_module(f"hgbench.commands.{name}")
    assert ("hgbench.plan", "hgbench.data.synthetic") in EDGES  # inside open_datasets
    assert ("hgbench.models.hourglass", "hgbench.cases") in EDGES  # under TYPE_CHECKING
    assert ("hgbench.results", "hgbench.atomic_io") in EDGES


def test_imports_follow_the_layers() -> None:
    names = list(LAYERS)
    upward = {edge for edge in EDGES if _layer_of(edge[1]) > _layer_of(edge[0])}
    new = sorted(upward - KNOWN_VIOLATIONS)
    assert not new, "imports against the layer order:\n" + "\n".join(
        f"  {_where(e)} ({names[_layer_of(e[0])]} may not import {names[_layer_of(e[1])]})" for e in new
    )
    gone = sorted(KNOWN_VIOLATIONS - upward)
    assert not gone, f"KNOWN_VIOLATIONS entries that no longer happen (delete them): {gone}"


def test_cases_imports_only_leaves() -> None:
    # The registry is data: it may read a leaf constant, and nothing that could import torch.
    deps = {imported for importer, imported in EDGES if importer == "hgbench.cases"}
    assert all(_layer_of(d) == list(LAYERS).index("leaves") for d in deps), deps


def test_no_import_cycle() -> None:
    """Tarjan's strongly connected components over the module graph (the known violations left out)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for importer, imported in EDGES:
        if (importer, imported) not in KNOWN_VIOLATIONS:
            graph[importer].add(imported)
    cycles = _strongly_connected(graph)
    assert not cycles, "import cycles:\n" + "\n".join(
        "  " + " <-> ".join(sorted(c)) + ": " + "; ".join(_where((a, b)) for a in sorted(c) for b in graph[a] if b in c)
        for c in cycles
    )


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The components of more than one module (iterative Tarjan, so deep graphs cannot hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _strongly_connected(graph) == [{"a", "b", "c"}]
    assert _strongly_connected({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    "module", ["hgbench", "hgbench.cases", "hgbench.variants", "hgbench.results", "hgbench.environment"]
)
def test_lower_layers_load_without_torch(module: str) -> None:
    # The registry is data and the store only reads JSON: neither may pull in torch (seconds of import time).
    code = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT.parent, check=False).returncode == 0
