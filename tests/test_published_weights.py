"""Published weights by name (``anibali:hg2``): fetched once into torch.hub's cache, hash-checked, offline-friendly.

No network here: a tiny network's weights are served from 127.0.0.1 under a file name that carries (or does not
carry) their SHA-256 prefix, registered as a published name for the test; TORCH_HOME points at a fresh folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from helpers.local_http import serve
from helpers.pose_hourglass import pose_net

import hgbench
from hgbench.cli import main
from hgbench.errors import HGBenchError
from hgbench.models import published
from hgbench.models.published import PUBLISHED, PublishedWeights, cache_dir, is_published_name, resolve
from hgbench.spec.variants import read_variant

TINY_VARIANT = 'name = "tiny"\nnum_stacks = 1\nnum_feats = 8\ndepths = [4]\n'


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A tiny variant, its weights in anibali's layout (a plain state dict) in a folder to serve, a fresh TORCH_HOME."""
    variant = tmp_path / "tiny.toml"
    variant.write_text(TINY_VARIANT)
    net = pose_net(read_variant(variant))
    www = tmp_path / "www"
    www.mkdir()
    raw = www / "raw.pth"
    torch.save(net.state_dict(), raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    good = raw.rename(www / f"bearpaw_tiny-{digest[:8]}.pth")
    bad = www / f"bearpaw_tiny-{'0' * 8 if digest[:8] != '0' * 8 else '1' * 8}.pth"
    bad.write_bytes(good.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return {"variant": variant, "net": net, "www": www, "good": good, "bad": bad}


def register(monkeypatch: pytest.MonkeyPatch, name: str, case: str, url: str) -> PublishedWeights:
    entry = PublishedWeights(name, case, url)
    monkeypatch.setitem(PUBLISHED, name, entry)
    return entry


def test_the_published_table_is_anibalis_release() -> None:
    base = "https://github.com/anibali/pytorch-stacked-hourglass/releases/download/v0.0.0/"
    assert {k: (v.case, v.url, v.hash_prefix) for k, v in PUBLISHED.items()} == {
        "anibali:hg1": ("hg1", base + "bearpaw_hg1-ce125879.pth", "ce125879"),
        "anibali:hg2": ("hg2", base + "bearpaw_hg2-15e342d9.pth", "15e342d9"),
        "anibali:hg8": ("hg8", base + "bearpaw_hg8-90e5d470.pth", "90e5d470"),
    }
    assert published.PUBLISHED_PCKH["anibali:hg2"]["Mean"] == 87.33


def test_names_and_paths_are_told_apart(tmp_path: Path) -> None:
    assert is_published_name("anibali:hg2")
    assert not is_published_name("weights/hg2.pth")
    assert not is_published_name("C:/weights/hg2.pth")  # a drive letter
    assert not is_published_name("./a:b.pth")
    assert resolve(tmp_path / "x.pth").path == tmp_path / "x.pth"  # a path is returned as it is


def test_a_file_with_the_right_prefix_loads_into_the_hub_cache_once(
    tiny: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(tiny["www"]) as (base, state):
        register(monkeypatch, "anibali:tiny", str(tiny["variant"]), base + tiny["good"].name)
        model = hgbench.create_model(read_variant(tiny["variant"]), checkpoint="anibali:tiny")
        assert len(state.requests) == 1
    cached = Path(str(tiny["www"]).replace("www", "torch-home")) / "hub" / "checkpoints" / tiny["good"].name
    assert cache_dir() / tiny["good"].name == cached  # TORCH_HOME is honoured
    assert cached.read_bytes() == tiny["good"].read_bytes()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x)[-1], tiny["net"].eval()(x)[-1], atol=1e-6)
    # The server is gone: the cached file is used, nothing is fetched.
    again = resolve("anibali:tiny")
    assert (again.path, again.case, again.name) == (cached, str(tiny["variant"]), "anibali:tiny")


def test_a_file_with_the_wrong_prefix_is_refused_and_not_kept(tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(tiny["www"]) as (base, _):
        register(monkeypatch, "anibali:tiny", str(tiny["variant"]), base + tiny["bad"].name)
        with pytest.raises(HGBenchError, match="did not match its SHA-256 prefix .*not kept") as err:
            resolve("anibali:tiny", progress=False)
    assert "\n" not in str(err.value)
    assert not cache_dir().is_dir() or not list(cache_dir().iterdir())  # no file, no .partial left


def test_a_damaged_cached_file_is_reported_not_used(tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = register(monkeypatch, "anibali:tiny", str(tiny["variant"]), "http://127.0.0.1:9/" + tiny["good"].name)
    cache_dir().mkdir(parents=True)
    (cache_dir() / entry.filename).write_bytes(b"not the weights")
    with pytest.raises(HGBenchError, match="do not match their SHA-256 prefix .*; delete it and run again"):
        resolve("anibali:tiny")


def test_offline_is_one_line_naming_the_url_and_where_to_put_the_file(
    tiny: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(tiny["www"]) as (base, _):
        pass  # closed: nothing listens on that port any more
    entry = register(monkeypatch, "anibali:tiny", str(tiny["variant"]), base + tiny["good"].name)
    with pytest.raises(HGBenchError) as err:
        resolve("anibali:tiny", progress=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert entry.url in msg
    assert str(cache_dir() / entry.filename) in msg


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(HGBenchError, match="unknown published weights 'anibali:hg3'; known: anibali:hg1, anibali:hg2"):
        resolve("anibali:hg3")


def test_init_from_takes_a_published_name(
    tiny: dict, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    with serve(tiny["www"]) as (base, _):
        register(monkeypatch, "anibali:tiny", str(tiny["variant"]), base + tiny["good"].name)
        argv = ["run", "--case", "hg1", "--init-from", "anibali:tiny", "--device", "cpu", "--workers", "0"]
        argv += ["--data-dir", str(synthetic_root), "--input-res", "64", "--out", str(tmp_path / "out"), "--quiet"]
        code = main(argv)
    err = capsys.readouterr().err
    # The name became the cached file, which the run then read: the tiny weights do not fit hg1.
    assert code != 0
    assert f"{cache_dir() / tiny['good'].name} (pytorch-pose layout) does not fit hg1" in err
