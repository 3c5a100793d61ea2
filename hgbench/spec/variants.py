"""Cases from outside the registry: a variant declared in a TOML file, and the case a run's settings name.

A variant file holds `CaseSpec`'s own fields (``name``, ``num_stacks``, ``num_feats``, ``depths``, ``norm``, ...),
read with `tomllib`; a field it leaves out takes the baseline's value (case 1), and ``depths`` left out is the
baseline's depth for every stack. ``name`` is required: it labels the variant in tables, plots and record file names.
A variant may take a registry id as its name only when it declares exactly that case (then it *is* that case).

Every problem is one `CaseError` line naming the file, the key and what is allowed. Once read, a variant lives on as
its full spec (`CaseSpec.to_dict`) in the run's config (``variant``), record and checkpoint, so a resume, a
re-evaluation or a sweep's skip check never needs the file again (`spec_of_config`).

Like the registry, this module imports no torch.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hgbench.errors import CaseError
from hgbench.spec.cases import BASELINE, CaseSpec, get_spec, list_cases
from hgbench.spec.footprint import FLOAT_BYTES, gib, host_memory_bytes, param_count, spec_params

if TYPE_CHECKING:
    from hgbench.spec.config import RunConfig

VARIANT_SUFFIX = ".toml"

# A name is part of record and checkpoint file names, so it stays a short plain word.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")

# What a TOML value must be, by the annotation of the CaseSpec field it sets (a test keeps every field covered).
_KINDS: dict[str, str] = {
    "str": "a string",
    "int": "an integer",
    "int | None": "an integer",
    "bool": "true or false",
    "tuple[int, ...]": "a list of integers",
}


def is_variant_file(text: str | Path) -> bool:
    """Whether a ``--case`` value names a variant file rather than a registry id."""
    return str(text).lower().endswith(VARIANT_SUFFIX)


def resolve_case(text: str | int | Path, *, as_built: bool = False) -> CaseSpec:
    """The case a ``--case`` value names: a registry id (``1``-``8``, ``hg1``, ...) or a variant ``.toml`` file.

    The one lookup every command uses (`run`, `list`, `evaluate`, `bench`, the sweep).

    Args:
        text: the id or the file's path.
        as_built: the study's code as it ran (registry cases 1-8 only; a variant file declares its network itself).

    Raises:
        CaseError: unknown id, or a variant file that is missing or declares no buildable network (one line).
    """
    if is_variant_file(text):
        if as_built:
            raise CaseError(
                f"{text}: --as-built builds the study's cases 1-8 as its code did; a variant file declares its "
                "network itself (write the fields you want into it)"
            )
        return read_variant(text)
    try:
        return get_spec(text, as_built=as_built)
    except ValueError as exc:
        raise CaseError(f"{exc}; or a variant file (.toml)") from None


def read_variant(path: str | Path) -> CaseSpec:
    """Read a variant file (see the module docstring); `CaseError` names the file, the key and what is allowed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CaseError(f"variant file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseError(f"cannot read variant file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CaseError(f"{path}: not valid TOML ({exc})") from None
    return variant_spec(data, source=str(path))


def variant_spec(data: dict[str, Any], *, source: str) -> CaseSpec:
    """The spec a variant's keys declare on top of the baseline (case 1).

    Args:
        data: the parsed TOML table.
        source: where it came from (the file), for the error messages.

    Raises:
        CaseError: unknown key, wrong type, a spec that cannot be built, a missing or unusable name.
    """
    annotations = {f.name: str(f.type) for f in fields(CaseSpec)}
    for key, value in data.items():
        if key not in annotations:
            close = difflib.get_close_matches(key, list(annotations), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise CaseError(f"{source}: unknown key {key!r}{hint}; allowed: {', '.join(annotations)}")
        kind = annotations[key]
        if not _is_kind(value, kind):
            raise CaseError(f"{source}: {key} must be {_KINDS[kind]}, got {value!r}")
    name = data.get("name")
    if name is None:
        raise CaseError(f'{source}: name is required (a short label for tables and file names, e.g. name = "three96")')
    if not NAME_PATTERN.fullmatch(name):
        raise CaseError(
            f"{source}: name {name!r} must be 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    _check_size(data, source)
    values = {"expected_params": None, "description": f"declared in {Path(source).name}", **data}
    if "depths" in data:
        values["depths"] = tuple(data["depths"])
    else:  # the baseline's depth for every stack, however many there are
        values["depths"] = (BASELINE.depths[0],) * data.get("num_stacks", BASELINE.num_stacks)
    try:
        spec = replace(BASELINE, **values)
    except ValueError as exc:
        raise CaseError(f"{source}: {exc}") from None
    return _as_registered(spec, source)


def _check_size(data: dict[str, Any], source: str) -> None:
    """Refuse a network whose weights alone exceed this machine's memory, from the declared sizes and before the spec
    (its ``depths``, one per stack) is built: ``num_stacks = 10**9`` would otherwise build an 8 GB tuple first."""
    size = {k: data.get(k, getattr(BASELINE, k)) for k in _SIZE_FIELDS}
    if min(size.values()) < 1:
        return  # the spec's own check names the field
    stacks = size["num_stacks"]
    depth_sum = sum(data["depths"]) if "depths" in data else BASELINE.depths[0] * stacks
    params = param_count(
        num_stacks=stacks,
        depth_sum=max(depth_sum, 0),
        num_feats=size["num_feats"],
        num_blocks=size["num_blocks"],
        level_units=size["level_units"],
        bottleneck_steps=data.get("bottleneck_steps", BASELINE.bottleneck_steps),
        share_extra_step=data.get("share_extra_step", BASELINE.share_extra_step),
        num_joints=size["num_joints"],
    )
    memory = host_memory_bytes()
    if memory is not None and params * FLOAT_BYTES > memory:
        raise CaseError(
            f"{source}: declares a network of {params:.3g} parameters, {gib(params * FLOAT_BYTES)} of weights alone, "
            f"more than this machine's {gib(memory)} of memory (num_stacks {stacks}, num_feats {size['num_feats']}, "
            f"num_blocks {size['num_blocks']}, level_units {size['level_units']}); the registry's largest case has "
            f"{param_count_of_largest():,}"
        )


_SIZE_FIELDS = ("num_stacks", "num_feats", "num_blocks", "level_units", "num_joints")


def param_count_of_largest() -> int:
    """Parameters of the registry's largest network (case 8 as described), for scale in messages."""
    return max(spec_params(get_spec(name)) for name in list_cases())


def _is_kind(value: Any, kind: str) -> bool:
    """Whether a TOML value fits a field's annotation (TOML's booleans are not integers here)."""
    if kind in ("int", "int | None"):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "tuple[int, ...]":
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    raise AssertionError(f"CaseSpec field of an annotation variants.py does not know: {kind}")


def _as_registered(spec: CaseSpec, source: str) -> CaseSpec:
    """A variant named by a registry id must declare that very case; it then is the registry's spec."""
    try:
        registered = get_spec(spec.name, as_built=spec.as_built)
    except ValueError:
        return spec  # not a registry id (or a reference model's id with as_built: no registered twin to match)
    if registered.fingerprint() != spec.fingerprint():
        raise CaseError(
            f"{source}: name {spec.name!r} is the id of {registered.label}, but the file declares another network; "
            "give the variant a name of its own"
        )
    return registered


def is_registered(spec: CaseSpec) -> bool:
    """Whether `spec` is a registry case (in its form), so that its id alone names it."""
    try:
        return get_spec(spec.name, as_built=spec.as_built) == spec
    except ValueError:
        return False


def run_case_fields(spec: CaseSpec) -> dict[str, Any]:
    """The `RunConfig` fields that name a case: ``case``, ``as_built`` and, for a variant, its full spec."""
    return {"case": spec.name, "as_built": spec.as_built, "variant": None if is_registered(spec) else spec.to_dict()}


def spec_of_config(config: RunConfig) -> CaseSpec:
    """The network a run's settings name: the variant spec they carry, else the registry's case.

    Raises:
        CaseError: an unknown case id, or a stored variant spec that is damaged.
    """
    if config.variant is not None:
        try:
            return CaseSpec.from_dict(config.variant)
        except (KeyError, TypeError, ValueError) as exc:
            raise CaseError(f"the run's stored variant spec is damaged: {exc}") from None
    return resolve_case(config.case, as_built=config.as_built)


def check_input_res(text: str | Path, spec: CaseSpec, input_res: int) -> None:
    """`CaseSpec.check_input_res` as a one-line `CaseError` that names the variant file when `text` is one."""
    try:
        spec.check_input_res(input_res)
    except ValueError as exc:
        raise CaseError(f"{text}: {exc}" if is_variant_file(text) else str(exc)) from None
