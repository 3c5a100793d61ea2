"""The torch range hgbench declares, the pins `make install` uses, the oldest torch `make test-oldest` tests and the
install-free `make gpu-check`: kept consistent with each other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from test_makefile import recipe

REPO = Path(__file__).resolve().parents[1]


def _deps() -> dict[str, str]:
    """pyproject's runtime dependencies: name -> version specifier ('' when none)."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {m[1].lower(): m[2].replace(" ", "") for m in (re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", d) for d in deps)}


def _pins() -> dict[str, str]:
    """constraints.txt: name -> pinned version."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exact versions only: {line!r}"
            pins[name.lower()] = version
    return pins


def _makefile_var(name: str) -> str:
    (value,) = re.findall(rf"^{name}\s*:?=\s*(\S+)", (REPO / "Makefile").read_text(), re.MULTILINE)
    return value


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def test_torch_is_a_range_not_a_pin() -> None:
    deps = _deps()
    assert deps["torch"] == ">=2.11,<2.15"
    assert deps["torchvision"] == ">=0.26,<0.30"  # torchvision 0.N pairs with torch 2.(N-15)


def test_make_install_pins_every_runtime_dependency_inside_the_range() -> None:
    pins, deps = _pins(), _deps()
    assert set(deps) <= set(pins)
    for name in ("torch", "torchvision"):
        low, high = re.fullmatch(r">=([\d.]+),<([\d.]+)", deps[name]).groups()
        assert _minor(low) <= _minor(pins[name]) < _minor(high), name
    assert any("-c constraints.txt" in line and "pip install" in line for line in recipe("$(STAMP)"))


def test_make_test_oldest_tests_the_lowest_version_of_the_range() -> None:
    deps = _deps()
    assert _minor(_makefile_var("OLDEST_TORCH")) == _minor(deps["torch"].split(",")[0].removeprefix(">="))
    assert _minor(_makefile_var("OLDEST_TORCHVISION")) == _minor(deps["torchvision"].split(",")[0].removeprefix(">="))
    install = recipe("$(OLDEST)/.installed")
    assert any("torch==$(OLDEST_TORCH)" in line for line in install)
    assert any("-c $(OLDEST)/constraints.txt" in line and "pip install" in line for line in install)
    assert recipe("test-oldest") == ["$(OLDEST)/bin/python -m pytest -q $(TEST_ARGS)"]
    assert ".venv-oldest/" in (REPO / ".gitignore").read_text().splitlines()


def test_make_gpu_check_installs_nothing() -> None:
    makefile = (REPO / "Makefile").read_text()
    (prerequisites,) = re.findall(r"^gpu-check:(.*)$", makefile, re.MULTILINE)
    assert prerequisites.strip() == ""
    assert recipe("gpu-check") == ["$(PYTHON) -m hgbench.gpu_check $(CHECK_ARGS)"]
