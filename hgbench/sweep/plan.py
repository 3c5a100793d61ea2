"""A sweep's runs: the grid its flags describe, or the runs a plan file lists, as one settings dict per run.

A run's settings use the names of `hgbench run`'s options with underscores (``epochs``, ``input_res``, ``synthetic``,
``limit_train``, ``lr``, ...) plus ``case``, ``seed`` and ``as_built``; the command layer turns each into a
`RunConfig` with the same function `hgbench run` uses, so a sweep's run and the `hgbench run` of the same flags are
the same run (the same identity).

A plan file is TOML::

    [defaults]            # options every run shares (the command line's flags override these)
    epochs = 50
    data_dir = "/shared/mpii"

    [[run]]               # one table per run: its case, its seed and whatever differs for it
    case = 3
    seed = 0

    [[run]]
    case = 3
    as_built = true
    lr = 2.5e-4
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from hgbench.errors import HGBenchError

FORMS: dict[str, tuple[bool, ...]] = {"no": (False,), "yes": (True,), "both": (False, True)}  # --as-built


# How an error names what a setting accepts.
_KIND_WORDS: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


@dataclass(frozen=True)
class Option:
    """What a run setting accepts: its type and, for some, the values allowed."""

    kind: type  # bool, int, float or str
    choices: tuple[str, ...] | None = None

    def check(self, value: Any) -> str | None:
        """Why `value` is not acceptable (one phrase), or None when it is."""
        if self.kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, self.kind)
        if not ok:
            return f"expected {_KIND_WORDS[self.kind]}, got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"expected one of {', '.join(self.choices)}, got {value!r}"
        return None


# The settings that are a run's own rather than options of `hgbench run`'s flags shared by all.
RUN_KEYS: dict[str, Option] = {"case": Option(str), "seed": Option(int), "as_built": Option(bool)}


def grid(cases: Sequence[str], seeds: Sequence[int | None], forms: Sequence[bool]) -> list[dict[str, Any]]:
    """Every (case, form, seed) combination, case by case, as a run's own settings."""
    return [{"case": case, "as_built": as_built, "seed": seed} for case, as_built, seed in product(cases, forms, seeds)]


def parse_list(text: str, kind: type, flag: str) -> list:
    """``"1,2,3"`` -> ``[1, 2, 3]`` (of `kind`); a one-line error naming `flag` otherwise."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise HGBenchError(f"{flag}: expected a comma-separated list, got {text!r}")
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise HGBenchError(f"{flag}: expected a comma-separated list of {kind.__name__}s, got {text!r}") from None


def read_plan(path: str | Path, options: Mapping[str, Option]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``[defaults]`` and the ``[[run]]`` tables of a plan file, every key and value checked.

    Args:
        path: the TOML file.
        options: the settings a run accepts beside `RUN_KEYS` (the shared `hgbench run` options), by name.

    Returns:
        The defaults, and each run's own settings (a run without a case takes the defaults' case).

    Raises:
        HGBenchError: unreadable or invalid TOML, an unknown table or key, a wrong value, a run without a case; the
            one-line message names the file and the key.
    """
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HGBenchError(f"--plan {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise HGBenchError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(document) - {"defaults", "run"})
    if unknown:
        raise HGBenchError(f"{path}: unknown table or key {unknown[0]!r}; a plan has [defaults] and [[run]] tables")
    accepted = {**options, **RUN_KEYS}
    defaults = _checked(path, "defaults", document.get("defaults", {}), accepted)
    runs = document.get("run", [])
    if not isinstance(runs, list) or not runs:
        raise HGBenchError(f"{path}: no runs; add a [[run]] table for each run, with its case")
    checked = []
    for i, table in enumerate(runs, start=1):
        where = f"run {i}"
        own = _checked(path, where, table, accepted)
        if "case" not in own and "case" not in defaults:
            raise HGBenchError(f"{path}: run {i} has no case; give it one, e.g. case = 3")
        checked.append(own)
    return defaults, checked


def _checked(path: Path, where: str, table: Any, options: Mapping[str, Option]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise HGBenchError(f"{path}: {where} must be a table of settings")
    out = {}
    for key, value in table.items():
        if key not in options:
            allowed = ", ".join(sorted(options))
            raise HGBenchError(f"{path}: {where}: unknown key {key!r}; allowed: {allowed}")
        if key == "case" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # case = 3 reads as naturally as case = "3"
        problem = options[key].check(value)
        if problem:
            raise HGBenchError(f"{path}: {where}: {key}: {problem}")
        out[key] = value
    return out
