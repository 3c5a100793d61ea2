"""The package's top level is its Python API: each documented name is the object its module defines, loaded lazily."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import hgbench

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("create_model", "hgbench.models.factory"),
        ("load_records", "hgbench.run.results"),
        ("read_record", "hgbench.run.results"),
        ("RunSummary", "hgbench.run.run_summary"),
        ("summarize", "hgbench.run.run_summary"),
        ("validate_record", "hgbench.run.record"),
    ],
)
def test_each_public_name_is_its_modules_object(name: str, module: str) -> None:
    assert name in hgbench.__all__
    assert name in dir(hgbench)
    assert getattr(hgbench, name) is getattr(__import__(module, fromlist=[name]), name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute .no_such_name."):
        _ = hgbench.no_such_name


def test_importing_the_api_pulls_in_no_torch_until_a_name_needs_it() -> None:
    code = (
        "import sys, hgbench; assert 'torch' not in sys.modules; "
        "hgbench.load_records; assert 'torch' not in sys.modules; "
        "hgbench.create_model; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_the_published_records_load_through_the_api() -> None:
    summaries, warnings = hgbench.load_records([REPO / "results" / "published"])
    assert warnings == []
    assert sorted(s.case for s in summaries) == [str(n) for n in range(1, 9)]
    assert all(isinstance(s, hgbench.RunSummary) for s in summaries)
