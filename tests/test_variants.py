"""Variant files: a network declared in TOML, read into a CaseSpec; bad files are one line naming file and key."""

from __future__ import annotations

import copy
import csv
import io
import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from hgbench.cli import main
from hgbench.errors import CaseError
from hgbench.models import build_model, count_params
from hgbench.report import comparison_table
from hgbench.run.results import summarize
from hgbench.spec.cases import BASELINE, CaseSpec, get_spec
from hgbench.spec.config import RunConfig
from hgbench.spec.variants import _KINDS, read_variant, resolve_case, run_case_fields, spec_of_config, variant_spec

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "variants").glob("*.toml"))


def write(tmp_path: Path, text: str, name: str = "v.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def shapes(spec: CaseSpec) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the spec's network and its shape (built on the meta device: no memory)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build_model(spec).state_dict().items()}


def test_the_issue_example_reads_with_the_baseline_for_the_rest(tmp_path: Path) -> None:
    spec = resolve_case(
        write(tmp_path, 'name = "three96"\nnum_stacks = 3\nnum_feats = 96\ndepths = [4, 4, 4]\n', "three96.toml")
    )
    assert (spec.name, spec.num_stacks, spec.num_feats, spec.depths) == ("three96", 3, 96, (4, 4, 4))
    assert (spec.norm, spec.num_blocks, spec.bottleneck_steps, spec.as_built) == ("batch", 1, 3, False)
    assert spec.description == "declared in three96.toml"


def test_left_out_depths_are_the_baselines_for_every_stack(tmp_path: Path) -> None:
    spec = read_variant(write(tmp_path, 'name = "two"\nnum_stacks = 2\n'))
    assert spec.depths == (BASELINE.depths[0],) * 2


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_variant_builds(path: Path) -> None:
    spec = resolve_case(path)
    spec.check_input_res(256)
    assert shapes(spec)


def test_the_shipped_study_case_builds_the_registered_case_parameter_for_parameter() -> None:
    spec = resolve_case(REPO / "variants" / "case6.toml")
    assert spec.name == "case6-file"
    assert shapes(spec) == shapes(get_spec("6"))  # same keys, same shapes, same order
    assert spec.fingerprint() == get_spec("6").fingerprint()


def test_a_registry_id_as_name_must_declare_that_case(tmp_path: Path) -> None:
    same = resolve_case(write(tmp_path, 'name = "6"\nnum_feats = 64\ndepths = [2, 2, 2, 3, 3, 3, 4, 4]\n'))
    assert same is get_spec("6")  # it is case 6: its runs are case 6's
    with pytest.raises(CaseError, match=r"v\.toml: name '6' is the id of case 6, but the file declares another"):
        resolve_case(write(tmp_path, 'name = "6"\nnum_feats = 32\n'))


BAD_FILES = [
    ('name = "x"\nnum_stack = 3\n', r"unknown key 'num_stack' \(did you mean num_stacks\?\); allowed: name, "),
    ('name = "x"\nnum_stacks = "3"\n', r"num_stacks must be an integer, got '3'"),
    ('name = "x"\nnum_feats = true\n', r"num_feats must be an integer, got True"),
    ('name = "x"\ndepths = [4, "4"]\n', r"depths must be a list of integers"),
    ('name = "x"\nnorm_in_stem = 1\n', r"norm_in_stem must be true or false"),
    (
        'name = "x"\nnum_stacks = 2\ndepths = [4, 4, 4]\n',
        r"depths has 3 entries for num_stacks = 2; give one per stack",
    ),
    ('name = "x"\nnorm = "layer"\n', r"unknown norm 'layer'; allowed: batch, instance, group1"),
    ('name = "x"\nbottleneck_steps = 5\n', r"bottleneck_steps must be 3 or 4, got 5"),
    ('name = "x"\nnum_stacks = 0\n', r"num_stacks must be at least 1, got 0"),
    ("num_stacks = 2\n", r"name is required"),
    ('name = "a b"\n', r"name 'a b' must be 1-40 letters"),
    ('name = "x\n', r"not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CaseError, match=message) as info:
        resolve_case(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_missing_file_and_as_built_with_a_file(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match="variant file not found"):
        resolve_case(tmp_path / "nope.toml")
    with pytest.raises(CaseError, match="--as-built builds the study's cases 1-8"):
        resolve_case(write(tmp_path, 'name = "x"\n'), as_built=True)
    with pytest.raises(CaseError, match="Valid cases: .*or a variant file"):
        resolve_case("9")


def test_every_spec_field_has_a_known_toml_type() -> None:
    assert {str(f.type) for f in fields(CaseSpec)} <= set(_KINDS)


def test_a_run_config_carries_a_variant_spec_and_only_a_variant_spec(tmp_path: Path) -> None:
    spec = read_variant(write(tmp_path, 'name = "two"\nnum_stacks = 2\nnum_feats = 32\n'))
    config = RunConfig(**run_case_fields(spec))
    assert (config.case, config.variant["num_feats"]) == ("two", 32)
    assert spec_of_config(config) == spec  # from the config alone: the file is not read again
    registered = RunConfig(**run_case_fields(get_spec("3", as_built=True)))
    assert (registered.case, registered.as_built, registered.variant) == ("3", True, None)


def test_list_prints_a_variant_files_row(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, 'name = "tiny"\nnum_stacks = 1\nnum_feats = 16\ndepths = [2]\n', "tiny.toml")
    assert main(["list", "--case", str(path), "--format", "csv", "--input-res", "64"]) == 0
    (row,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    spec = read_variant(path)
    assert row["case"] == "tiny"
    assert int(row["params"]) == int(row["params_used"]) == count_params(build_model(spec))
    assert float(row["gflops"]) > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "--case", "{bad}"], "unknown key 'stacks'"),
        (["bench", "--case", "{bad}", "--device", "cpu"], "unknown key 'stacks'"),
        (["run", "--case", "{bad}", "--device", "cpu"], "unknown key 'stacks'"),
        (["run", "--case", "{deep}", "--device", "cpu", "--input-res", "64"], "must be a positive multiple of 256"),
        (["list", "--case", "{deep}", "--input-res", "64"], "must be a positive multiple of 256"),
    ],
)
def test_the_cli_rejects_a_bad_variant_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    files = {
        "bad": write(tmp_path, 'name = "x"\nstacks = 3\n', "bad.toml"),
        "deep": write(tmp_path, 'name = "deep"\nnum_stacks = 1\ndepths = [6]\n', "deep.toml"),
    }
    code = main([a.format(**files) for a in argv])
    out, err = capsys.readouterr()
    assert code != 0
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert err.startswith(f"hgbench: error: {tmp_path}")
    assert message in err


def test_the_table_labels_by_name_and_never_pools_two_networks() -> None:
    golden = REPO / "tests" / "data" / "records" / "cpu-pt2.14.1" / "0001_case1_seed0.json"
    record = json.loads(golden.read_text())
    specs = {feats: variant_spec({"name": "mine", "num_feats": feats}, source="mine.toml") for feats in (64, 32)}
    runs = []
    for seed, feats in ((0, 64), (1, 64), (0, 32)):  # one name, two networks (two files both naming it "mine")
        r = copy.deepcopy(record)
        r["spec"], r["config"]["seed"] = specs[feats].to_dict(), seed
        r.pop("spec_fingerprint", None)  # as an older record: the reader recomputes it from the spec
        runs.append(summarize(r, golden))
    df = comparison_table(runs)
    assert list(df["case"]) == ["mine", "mine"]
    assert sorted(df["runs"]) == [1, 2]
    assert {s.removeprefix("spec=") for s in df["setting"]} == {spec.fingerprint() for spec in specs.values()}


def test_the_manual_names_every_field_a_variant_file_takes() -> None:
    """The variant error lists every CaseSpec field as allowed; the manual's field list names each one too."""
    manual = (REPO / "docs" / "variants.md").read_text()
    section = manual.split("## A variant is a file", 1)[1].split("\n## ", 1)[0]
    listed = section.split("Fields:", 1)[1].split("\n\n", 1)[0]
    assert [f.name for f in fields(CaseSpec) if f.name != "name" and f"`{f.name}`" not in listed] == []
