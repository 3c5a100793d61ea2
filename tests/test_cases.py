"""The registry: ids, both forms of every case, published rows, parameter counts against the public reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.cases_table import readme_cases

from hgbench.cli import main
from hgbench.models import build_model, count_params, count_used_params, create_model, measure_cost
from hgbench.spec.cases import PUBLISHED, STUDY_CASES, CaseSpec, case_label, get_spec, list_cases

ALL_FORMS = [(c, False) for c in list_cases()] + [(c, True) for c in STUDY_CASES]


def test_registry_lists_cases_1_to_8_then_reference_models() -> None:
    assert list_cases() == ["1", "2", "3", "4", "5", "6", "7", "8", "hg1", "hg2", "hg8"]


@pytest.mark.parametrize(("name", "expected"), [("hg1", 3_586_960), ("hg2", 6_730_912), ("hg8", 25_594_624)])
def test_reference_models_match_public_parameter_counts(name: str, expected: int) -> None:
    assert count_params(build_model(get_spec(name))) == expected


@pytest.mark.parametrize(("name", "expected"), [("hg1", 11.61), ("hg2", 17.98), ("hg8", 56.19)])
def test_reference_models_match_published_gflops(name: str, expected: float) -> None:
    assert measure_cost(get_spec(name), use_cache=False).gflops == pytest.approx(expected, abs=0.005)


@pytest.mark.parametrize(("name", "as_built"), ALL_FORMS)
def test_every_case_builds_with_its_pinned_parameter_count(name: str, as_built: bool) -> None:
    spec = get_spec(name, as_built=as_built)
    assert spec.expected_params is not None
    assert count_params(build_model(spec)) == spec.expected_params


def test_create_model_builds_a_case_by_name() -> None:
    model = create_model("case 3", as_built=True)
    assert count_params(model) == get_spec(3, as_built=True).expected_params
    assert model.stacks_run == 6
    with pytest.raises(ValueError, match="Valid cases"):
        create_model("9")


def test_case_8_costs_1_58x_case_1_in_both_forms() -> None:
    base = measure_cost(get_spec(1)).gflops
    for as_built in (False, True):
        assert measure_cost(get_spec(8, as_built=as_built)).gflops / base == pytest.approx(1.58, abs=0.01)


def test_as_built_case_8_shares_weights_so_has_case_1_parameters() -> None:
    assert get_spec(8, as_built=True).expected_params == get_spec(1).expected_params


def test_as_built_dead_stacks_get_no_gradient() -> None:
    # Case 3 as built: 8 stacks' parameters exist, only 6 stacks (and not the 6th merge) train.
    built = build_model(get_spec(3, as_built=True))
    used = count_used_params(built)
    assert used < count_params(built)
    assert used == count_params(build_model(get_spec(3)))
    for p in built.hg[6].parameters():
        assert p.grad is None
    assert built.fc_[5].weight.grad is None
    # Case 4 as built: the fourth unit of every hourglass level (fifth at the innermost) never runs.
    c4 = build_model(get_spec(4, as_built=True))
    count_used_params(c4)
    level = c4.hg[0].levels[1]
    assert len(level) == 4
    assert all(p.grad is None for p in level[3].parameters())
    inner = c4.hg[0].levels[0]
    assert len(inner) == 5
    assert all(p.grad is None for p in inner[4].parameters())
    assert all(p.grad is not None for p in inner[3].parameters())


@pytest.mark.parametrize(("case", "gflops"), [("3", 43.45), ("4", 14.34)])
def test_as_built_cases_3_and_4_compute_no_merge_after_their_last_running_stack(case: str, gflops: float) -> None:
    """The study's forward merges only `if i < self.num_stacks - 1` with num_stacks = 6: the sixth stack feeds none."""
    spec = get_spec(case, as_built=True)
    assert measure_cost(spec, input_res=256).gflops == pytest.approx(gflops, abs=0.005)
    model = build_model(spec).eval()
    calls: list[int] = []
    for i, layer in enumerate(model.fc_):
        layer.register_forward_hook(lambda m, a, out, i=i: calls.append(i))
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    assert calls == [0, 1, 2, 3, 4]


def test_measured_used_params_match_the_backward_pass() -> None:
    for name in ("3", "4"):
        spec = get_spec(name, as_built=True)
        assert measure_cost(spec, use_cache=False).params_used == count_used_params(build_model(spec))


def test_published_rows_cover_the_study_cases() -> None:
    assert set(PUBLISHED) == set(STUDY_CASES)
    assert PUBLISHED["1"].min_per_epoch == 18
    assert PUBLISHED["8"].val_acc == 84.23


def test_unknown_case_lists_valid_ids_and_suggests() -> None:
    with pytest.raises(ValueError, match=r"unknown case '9'.*Valid cases: 1, 2, 3, 4, 5, 6, 7, 8, hg1, hg2, hg8"):
        get_spec("9")
    with pytest.raises(ValueError, match="Did you mean hg8"):
        get_spec("hg9")


def test_reference_models_have_no_as_built_form() -> None:
    with pytest.raises(ValueError, match="only cases 1-8"):
        get_spec("hg1", as_built=True)


def test_spec_round_trips_through_a_plain_dict() -> None:
    spec = get_spec(6, as_built=True)
    assert CaseSpec.from_dict(spec.to_dict()) == spec
    assert spec.fingerprint() == CaseSpec.from_dict(spec.to_dict()).fingerprint()
    assert get_spec(1).fingerprint() != get_spec(8).fingerprint()


def test_invalid_specs_are_rejected() -> None:
    with pytest.raises(ValueError, match="depths"):
        CaseSpec(name="x", description="x", num_stacks=2)
    with pytest.raises(ValueError, match="norm"):
        CaseSpec(name="x", description="x", norm="layer")


def test_case_labels() -> None:
    assert get_spec(4, as_built=True).label == case_label("4", True) == "case 4 (as built)"
    assert get_spec("hg2").label == case_label("hg2") == "hg2"
    assert case_label("5", True, short=True) == "5 (as built)"
    assert case_label("hg8", True, short=True) == case_label("hg8", True) == "hg8 (as built)"


def test_input_size_checks() -> None:
    get_spec(1).check_input_res(64)
    with pytest.raises(ValueError, match="multiple of 64"):
        get_spec(1).check_input_res(100)
    with pytest.raises(ValueError, match="instance norm"):
        get_spec(5).check_input_res(64)
    get_spec(5).check_input_res(128)
    get_spec(6).check_input_res(64)  # depth 4 is its deepest stack


def test_list_csv_prints_the_19_rows_with_the_required_leading_columns(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("case,as_built,params,params_used,gflops,")
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == 19
    keyed = {(r[0], r[1]): r for r in rows}
    assert keyed[("hg1", "false")][2] == "3586960"
    assert keyed[("3", "true")][2:4] == ["25594624", "19306720"]
    assert keyed[("1", "false")][4] == "56.19"
    # README's (and the manual's) cases table shows these figures for each case as described.
    described = {case: keyed[(case, "false")] for case in list_cases()}
    assert readme_cases() == {case: (int(row[2]), row[4]) for case, row in described.items()}


@pytest.mark.parametrize(("argv", "width"), [(["list"], 80), (["list", "--wide"], 140)])
def test_list_reads_in_full_at_its_width(
    argv: list[str], width: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`hgbench list` at 80 columns (and `--wide` at 140) cuts no cell short with an ellipsis."""
    from rich.console import Console

    from hgbench.commands import list as list_command

    monkeypatch.setattr(list_command, "Console", lambda **kw: Console(**{"width": width, **kw}))
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "…" not in text
    assert max(map(len, text.splitlines())) <= width
    for needle in ("[2x3,3x3,4x2]", "42,485,440", "5,137,760", "88.77", "6/8", "as built", "described"):
        assert needle in text
    assert ("4-4-4-4-4-4-4-4" in text) == ("--wide" in argv)


@pytest.mark.parametrize(("input_res", "says"), [("100", "must be a positive multiple of 64"), ("64", "instance norm")])
def test_list_at_an_input_size_a_case_cannot_run_is_one_line(
    input_res: str, says: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["list", "--input-res", input_res]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hgbench: error: ")
    assert says in err
    assert len(err.splitlines()) == 1


def _hg1_key(input_res: int) -> str:
    """The cost cache's key of hg1 at `input_res` (hgbench.models.cost.measure_cost's)."""
    from hgbench._version import __version__

    return f"{get_spec('hg1').fingerprint()}@{input_res}@torch{torch.__version__}@hgbench{__version__}"


@pytest.mark.parametrize(
    "cache",
    [[], "hg1 wrong types", "hg1 wrong count"],
    ids=["a list", "wrong types", "a count that is not hg1's"],
)
def test_a_corrupt_cost_cache_is_rebuilt_never_trusted(
    cache: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`hgbench list` with a damaged model_costs.json: the right figures, and a cache that holds them again."""
    from hgbench.models.cost import COST_CACHE_FILENAME

    monkeypatch.setenv("HGBENCH_CACHE_DIR", str(tmp_path))
    if cache == "hg1 wrong types":
        cache = {_hg1_key(64): {"params": "many", "params_used": None, "gflops": "fast", "input_res": 64}}
    elif cache == "hg1 wrong count":
        cache = {_hg1_key(64): {"params": 5, "params_used": 5, "gflops": 0.5, "input_res": 64}}
    path = tmp_path / COST_CACHE_FILENAME
    path.write_text(json.dumps(cache))
    for _ in range(2):  # rebuilt, then read from the rebuilt cache
        assert main(["list", "--case", "hg1", "--input-res", "64", "--format", "csv"]) == 0
        out, err = capsys.readouterr()
        assert err == ""
        assert out.splitlines()[1].split(",")[:4] == ["hg1", "false", "3586960", "3586960"]
    stored = json.loads(path.read_text())
    assert stored[_hg1_key(64)]["params"] == 3586960
