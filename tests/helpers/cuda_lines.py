"""hgbench's CUDA-only lines and the ones no test executed: the second half of `make coverage`.

A line is CUDA-only when the source says so, not by guess:

- the body of an ``if`` whose condition requires CUDA: a comparison, name, attribute or call that mentions ``cuda``
  (``device.type == "cuda"``, ``self.cuda``, ``torch.cuda.is_available()``), alone or ``and``-ed with others;
- the ``else`` of an ``if`` whose condition requires *not* CUDA (``not ...cuda...``, ``!= "cuda"``, or such a
  condition ``or``-ed with others), and, when that ``if`` has no ``else`` and its body ends in ``return`` or
  ``raise``, the statements after it;
- every line of a function whose ``def`` line carries the comment ``# cuda-only`` (one called only from such a
  branch, e.g. the prefetching loop of ``--decode device``).

A branch that runs only without CUDA is never counted, even inside a CUDA one (``if dev.type == "cuda": if not
torch.cuda.is_available(): raise ...``). Conditional expressions (``a if cuda else b``) are single lines and not
counted.

Usage: ``python tests/helpers/cuda_lines.py [DATA_FILE]`` after ``pytest --cov=hgbench`` (DATA_FILE defaults to
``.coverage``). Prints the line coverage of the CUDA-only lines and every one no test executed, by file and function.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "hgbench"


def _mentions_cuda(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and sub.value == "cuda":
            return True
        if isinstance(sub, ast.Name) and "cuda" in sub.id.lower():
            return True
        if isinstance(sub, ast.Attribute) and "cuda" in sub.attr.lower():
            return True
    return False


def requires_cuda(test: ast.AST) -> bool:
    """True when `test` can only hold on CUDA."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):  # `cuda and not torch.cuda.is_available()`: no
        return any(requires_cuda(v) for v in test.values) and not any(requires_not_cuda(v) for v in test.values)
    if isinstance(test, ast.BoolOp) or (isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)):
        return False
    if isinstance(test, ast.Compare):
        return all(isinstance(op, (ast.Eq, ast.Is)) for op in test.ops) and _mentions_cuda(test)
    return isinstance(test, (ast.Name, ast.Attribute, ast.Call)) and _mentions_cuda(test)


def requires_not_cuda(test: ast.AST) -> bool:
    """True when `test` holds whenever the device is not CUDA (its negation requires CUDA)."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
        return any(requires_not_cuda(v) for v in test.values)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return requires_cuda(test.operand)
    if isinstance(test, ast.Compare):
        return all(isinstance(op, (ast.NotEq, ast.IsNot)) for op in test.ops) and _mentions_cuda(test)
    return False


def _lines(nodes: list[ast.stmt]) -> set[int]:
    out: set[int] = set()
    for node in nodes:
        out.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return out


def cuda_only_lines(source: str) -> dict[int, str]:
    """CUDA-only line numbers of a module's source, each with the function (or ``<module>``) it is in."""
    tree = ast.parse(source)
    text = source.splitlines()
    found: dict[int, str] = {}
    anti: set[int] = set()  # lines that run only without CUDA (a "no GPU" error inside a CUDA branch)

    def visit(node: ast.AST, where: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            where = node.name if where == "<module>" else f"{where}.{node.name}"
            if not isinstance(node, ast.ClassDef) and "# cuda-only" in text[node.lineno - 1]:
                for n in _lines(node.body):
                    found.setdefault(n, where)
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, field, None)
            if not isinstance(block, list):
                continue
            for i, stmt in enumerate(block):
                if isinstance(stmt, ast.If):
                    marked: set[int] = set()
                    if requires_cuda(stmt.test):
                        marked = _lines(stmt.body)
                        anti.update(_lines(stmt.orelse))
                    elif requires_not_cuda(stmt.test):
                        marked = _lines(stmt.orelse)
                        anti.update(_lines(stmt.body))
                        ends = stmt.body and isinstance(stmt.body[-1], (ast.Return, ast.Raise))
                        if not stmt.orelse and ends:
                            marked = _lines(block[i + 1 :])
                    for n in marked:
                        found.setdefault(n, where)
                visit(stmt, where)

    visit(tree, "<module>")
    return {n: f for n, f in found.items() if n not in anti}


@dataclass
class FileReport:
    path: Path
    cuda_only: dict[int, str]  # executable CUDA-only line -> function
    missed: list[int]


def report(data_file: str = ".coverage") -> list[FileReport]:
    import coverage

    cov = coverage.Coverage(data_file=data_file)
    cov.load()
    reports = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = cuda_only_lines(path.read_text())
        if not lines:
            continue
        _, statements, _, missing, _ = cov.analysis2(str(path))
        executable = {n: f for n, f in lines.items() if n in set(statements)}
        if executable:
            reports.append(FileReport(path, executable, sorted(n for n in executable if n in set(missing))))
    return reports


def main(argv: list[str]) -> int:
    reports = report(argv[1] if len(argv) > 1 else ".coverage")
    total = sum(len(r.cuda_only) for r in reports)
    missed = sum(len(r.missed) for r in reports)
    print(f"CUDA-only lines (tests/helpers/cuda_lines.py): {total - missed} of {total} executed", end="")
    print(f" ({100 * (total - missed) / total:.0f}%)" if total else "")
    for r in reports:
        if not r.missed:
            continue
        by_function: dict[str, list[int]] = {}
        for n in r.missed:
            by_function.setdefault(r.cuda_only[n], []).append(n)
        for function, numbers in by_function.items():
            print(f"  not executed: {r.path.relative_to(PACKAGE.parent)} {function}: lines {_ranges(numbers)}")
    return 0


def _ranges(numbers: list[int]) -> str:
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
