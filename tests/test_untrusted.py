"""Untrusted files: a weights file or checkpoint that is a malicious pickle runs nothing on any load path, a 0.2.0
checkpoint is refused by name, and the RNG states a checkpoint holds load weights-only and on another GPU count."""

from __future__ import annotations

import builtins
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hgbench import create_model
from hgbench.cli import main
from hgbench.errors import HGBenchError
from hgbench.models.weights import read_weights
from hgbench.run.runner import run
from hgbench.spec.cases import get_spec
from hgbench.spec.config import RunConfig
from hgbench.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint


class _Payload:
    """Unpickling this creates the file `marker` (as a payload would run a command): the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


def _malicious(tmp_path: Path, name: str = "evil.pt") -> tuple[Path, Path]:
    """A torch file whose full unpickle creates ``pwned``: an hgbench-looking checkpoint with a payload inside."""
    marker = tmp_path / "pwned"
    path = tmp_path / name
    torch.save({"format": CHECKPOINT_FORMAT, "model": {"x": _Payload(marker)}}, path)
    assert not marker.exists()
    return path, marker


def _one_line_refusal(exc: BaseException | str) -> str:
    message = str(exc)
    assert "\n" not in message
    assert "refusing" in message
    assert "arbitrary code" in message
    return message


def test_every_library_load_refuses_a_malicious_pickle_and_runs_nothing(tmp_path: Path) -> None:
    path, marker = _malicious(tmp_path)
    for load in (
        lambda: load_checkpoint(path),
        lambda: read_weights(path, get_spec("hg1")),
        lambda: create_model("hg1", checkpoint=path),
    ):
        with pytest.raises(HGBenchError) as caught:
            load()
        _one_line_refusal(caught.value)
        assert not marker.exists()


@pytest.mark.parametrize("flag", ["evaluate", "init-from", "resume"])
def test_the_cli_refuses_a_malicious_pickle_in_one_line(
    tiny: RunConfig, tmp_path: Path, capsys: pytest.CaptureFixture, flag: str
) -> None:
    path, marker = _malicious(tmp_path)
    common = ["--device", "cpu", "--workers", "0", "--data-dir", tiny.data_dir, "--input-res", "64"]
    argv = {
        "evaluate": ["evaluate", "--checkpoint", str(path), *common, "--limit", "4"],
        "init-from": ["run", "--case", "hg1", "--init-from", str(path), *common, "--out", tiny.out, "--quiet"],
        "resume": ["run", "--case", "hg1", "--resume", str(path), *common, "--out", tiny.out, "--quiet"],
    }[flag]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    _one_line_refusal(err)
    assert not marker.exists()


def test_resume_refuses_a_replaced_last_pt(tiny: RunConfig, tmp_path: Path) -> None:
    cut = replace(tiny, epochs=2)
    killed = run(cut, progress=False, stop_after_epoch=1)
    last = Path(json.loads(killed.record_path.read_text())["checkpoint"])
    evil, marker = _malicious(tmp_path)
    last.write_bytes(evil.read_bytes())
    with pytest.raises(HGBenchError) as caught:
        run(cut, resume=True, progress=False)
    _one_line_refusal(caught.value)
    assert not marker.exists()


def test_a_checkpoint_with_numpy_rng_states_is_named_as_an_older_hgbenchs(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "rng": {"numpy": np.random.get_state()}}, path)  # as 0.2.0 saved it
    with pytest.raises(HGBenchError, match=r"written by an older hgbench, 0\.2\.0 or earlier, .*start a fresh run"):
        load_checkpoint(path)


def test_a_checkpoint_holds_only_what_a_weights_only_load_reads(tmp_path: Path) -> None:
    from hgbench.run.state import _rng_state

    path = tmp_path / "last.pt"
    record = {"loss": np.float32(0.5), "torch": torch.__version__}  # a numpy scalar, a str subclass
    save_checkpoint(path, {"record": record, "rng": _rng_state(torch.device("cpu"))})
    loaded = torch.load(path, weights_only=True)
    assert loaded["record"] == {"loss": 0.5, "torch": str(torch.__version__)}


class _FakeCudaRng:
    """torch.cuda's RNG functions over `count` devices, each generator a distinct byte tensor; a device the process
    cannot see raises IndexError, as torch does."""

    def __init__(self, count: int) -> None:
        self.states = [torch.full((8,), i, dtype=torch.uint8) for i in range(count)]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.states))
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in self.states])
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self.set_all)

    @staticmethod
    def _index(device: int | str | torch.device) -> int:
        device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        return device.index or 0

    def get(self, device: int | str | torch.device = "cuda") -> torch.Tensor:
        return self.states[self._index(device)].clone()

    def set(self, state: torch.Tensor, device: int | str | torch.device = "cuda") -> None:
        self.states[self._index(device)] = state.clone()

    def set_all(self, states: list[torch.Tensor]) -> None:
        for i, state in enumerate(states):
            self.states[i] = state.clone()


def test_rng_states_saved_on_eight_gpus_restore_on_a_worker_that_sees_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hgbench.run.state import _rng_state, _set_rng_state

    _FakeCudaRng(8).install(monkeypatch)
    saved = _rng_state(torch.device("cuda", 5))
    assert torch.equal(saved["cuda"], torch.full((8,), 5, dtype=torch.uint8))  # the run device's generator only
    path = tmp_path / "rng.pt"
    torch.save(saved, path)
    one = _FakeCudaRng(1)
    one.install(monkeypatch)
    _set_rng_state(torch.load(path, weights_only=True), torch.device("cuda", 0))
    assert torch.equal(one.states[0], torch.full((8,), 5, dtype=torch.uint8))


def test_a_full_disk_during_a_checkpoint_write_is_one_line_whatever_torch_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"previous")

    def full_disk(obj, f) -> None:  # what torch's zip writer raises on ENOSPC: no "write" in it
        f.write(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1536 vs 1472")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(HGBenchError, match=r"cannot write checkpoint .*free some space and continue with --resume"):
        save_checkpoint(path, {"epoch": 1})
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


def test_a_description_cannot_write_markers_or_control_characters_into_the_readme(tmp_path: Path) -> None:
    from hgbench.report import README_END, README_START, comparison_table, rewrite_readme, to_markdown
    from hgbench.run.results import summarize

    record_path = Path(__file__).parent / "data" / "records" / "cpu-pt2.14.1" / "0001_case1_seed0.json"
    summary = summarize(json.loads(record_path.read_text()), record_path)
    summary.description = f"evil {README_END} {README_START}\rcarriage\x1b[31m\u2028<!-- x --> & end"
    readme = tmp_path / "README.md"
    readme.write_text(f"# r\n\n{README_START}\nold\n{README_END}\n")
    markdown = to_markdown(comparison_table([summary]))
    rewrite_readme(readme, markdown)
    assert rewrite_readme(readme, markdown) is False  # the next `make table` finds one marker each and agrees
    text = readme.read_text()
    assert (text.count(README_START), text.count(README_END), text.count("<!--")) == (1, 1, 2)
    row = next(line for line in text.splitlines() if "evil" in line)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or c == "\u2028" for c in row)
    assert "&lt;!-- x --&gt; &amp; end" in row


def test_the_readme_is_never_given_a_second_marker(tmp_path: Path) -> None:
    from hgbench.report import README_END, README_START, rewrite_readme

    readme = tmp_path / "README.md"
    readme.write_text(f"{README_START}\nold\n{README_END}\n")
    with pytest.raises(HGBenchError, match="holds the marker"):
        rewrite_readme(readme, f"| {README_END} |\n")
    assert readme.read_text() == f"{README_START}\nold\n{README_END}\n"


@pytest.mark.parametrize("tag", ["../../escape", "a/b", "..", "x y", "-dash"])
def test_a_tag_that_is_no_plain_word_is_refused_before_anything_is_written(
    tiny: RunConfig, tmp_path: Path, capsys: pytest.CaptureFixture, tag: str
) -> None:
    deep = tmp_path / "deep"
    argv = ["run", "--case", "hg1", "--device", "cpu", "--workers", "0", "--data-dir", tiny.data_dir, "--quiet"]
    argv += ["--epochs", "1", "--batch", "4", "--input-res", "64", "--limit-train", "8", "--limit-val", "6"]
    before = sorted(tmp_path.rglob("*"))
    assert main([*argv, "--out", str(deep / "results"), "--checkpoint-dir", str(deep / "runs"), f"--tag={tag}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--tag" in err
    assert sorted(tmp_path.rglob("*")) == before  # no record, no checkpoint, not even the output folders


def test_a_run_folder_that_leads_out_of_its_root_is_refused(tmp_path: Path) -> None:
    from hgbench.run.plan import check_inside

    root, outside = tmp_path / "runs", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "linked").symlink_to(outside)
    check_inside(root / "plain-abc", root, "--checkpoint-dir")
    for path in (root / ".." / "x", root / "linked"):
        with pytest.raises(HGBenchError, match="is not inside --checkpoint-dir"):
            check_inside(path, root, "--checkpoint-dir")
