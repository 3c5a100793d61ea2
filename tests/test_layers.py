"""The package's floor plan: its folders are its layers, and every import of hgbench by hgbench goes down them.

Data flows one way: file safety -> the spec (cases, settings) -> the model -> the data -> how figures are measured ->
scoring poses -> training and predicting -> tracking -> one run and its records -> the report -> the sweep -> the
commands and the CLI -> gpu-check; the package's top level (its Python API) sits above them all.
A module may import its own layer or any layer below it, never one above; and the module graph has no cycle at all.

Every import counts: module level, inside functions, under ``TYPE_CHECKING``, and ``importlib.import_module`` /
``__import__`` with a literal name. A new module goes into one of the folders (its layer); the top level holds only
the API, the CLI entry, the version and the errors.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

# Layers from the bottom up, each a folder of the package but for the four top-level modules; a module may import
# modules of its own layer or of any earlier one. Names are relative to the package ("" is hgbench/__init__.py).
LAYERS: dict[str, tuple[str, ...]] = {
    # Import nothing of hgbench but each other: the version, the errors, file safety (atomic writes, bounded reads,
    # run claims).
    "leaves": ("_version", "errors", "files"),
    # What a run is asked to be, as plain data: the registry, variant files, the settings, the skeleton, the output
    # stride. The registry itself reads only spec's leaves (in practice HEATMAP_STRIDE).
    "spec": ("spec",),
    # The network, building it by case name, reading weights in other tools' layouts, counting its cost.
    "models": ("models",),
    # MPII's format and the datasets; the ground-truth file belongs to the format (the datasets read and write it).
    "data": ("data",),
    # How figures are measured: clocks, NVML, the machine's load, its environment, compile counters, statistics.
    "measure": ("measure",),
    # Scoring poses: heatmaps to joints on the device, PCKh and heatmap accuracy, predictions files, pictures.
    "eval": ("eval",),
    # Training and predicting: the loops, loss, DDP and sampling, speed modes and their probes, checkpoints.
    "train": ("train",),
    # Sending a run's figures, pictures and settings to TensorBoard and MLflow, from the record's own entries.
    "tracking": ("tracking",),
    # One run: its plan, state, recorder and record, the runner, the final pass, how a run that stops early says why,
    # the results store, scoring a saved checkpoint and reproducing published figures (which plan their data as a run
    # does), and the model-only benchmark, which reuses the run's pieces.
    "run": ("run",),
    # Tables, comparisons and plots from the records; it never runs anything.
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


TOP_LEVEL_MODULES = {"__init__.py", "_version.py", "errors.py", "cli.py"}


def test_the_top_level_holds_the_api_the_cli_entry_and_the_folders() -> None:
    """`ls hgbench/` is the floor plan: a new module goes into the folder of its layer, never beside them."""
    loose = sorted(p.name for p in ROOT.glob("*.py") if p.name not in TOP_LEVEL_MODULES)
    assert loose == [], f"modules at the package's top level (move each into its layer's folder): {loose}"
    folders = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())
    named = sorted({name.split(".")[0] for names in LAYERS.values() for name in names if name and "." not in name})
    assert set(folders) <= set(named), f"folders no layer names: {sorted(set(folders) - set(named))}"


@pytest.mark.parametrize("folder", sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()))
def test_each_folder_says_what_it_holds(folder: str) -> None:
    """One docstring per folder tells a newcomer where a thing lives: it names the folder's modules."""
    init = ROOT / folder / "__init__.py"
    docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
    modules = sorted(p.stem for p in (ROOT / folder).glob("*.py") if p.stem not in ("__init__", "__main__"))
    unnamed = [m for m in modules if f"`{m}`" not in docstring and f"{folder}.{m}`" not in docstring]
    assert docstring, f"hgbench/{folder}/__init__.py has no docstring"
    assert unnamed == [], f"hgbench/{folder}/__init__.py's docstring does not name: {unnamed}"


def test_the_walker_sees_function_level_and_dynamic_imports() -> None:
    # Guards the test itself: these imports exist today and are of the kinds a careless walker misses.
    assert ("hgbench.cli", "hgbench.commands") in EDGES  # importlib.import_module(f"hgbench.commands.{name}")
    assert ("hgbench.run.plan", "hgbench.data.synthetic") in EDGES  # inside open_datasets
    assert ("hgbench.models.hourglass", "hgbench.spec.cases") in EDGES  # under TYPE_CHECKING
    assert ("hgbench.run.results", "hgbench.files.atomic_io") in EDGES


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
    # The registry is data: it may read a constant of spec's leaves (skeleton, geometry), and nothing that could import
    # torch.
    deps = {imported for importer, imported in EDGES if importer == "hgbench.spec.cases"}
    leaves = {"hgbench.spec.skeleton", "hgbench.spec.geometry", "hgbench.spec.config"}
    assert deps
    assert all(_layer_of(d) == list(LAYERS).index("leaves") or d in leaves for d in deps), deps


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
    "module",
    ["hgbench", "hgbench.spec.cases", "hgbench.spec.variants", "hgbench.run.results", "hgbench.measure.environment"],
)
def test_lower_layers_load_without_torch(module: str) -> None:
    # The registry is data and the store only reads JSON: neither may pull in torch (seconds of import time).
    code = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT.parent, check=False).returncode == 0
