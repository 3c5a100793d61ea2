"""Torch files from strangers, second round: a refused pickle is named in every wording torch 2.11 to 2.14 uses and
torch's advice to load it with weights_only=False is never relayed; a small file cannot make hgbench allocate what its
zip directory declares before it is refused.

`make test` runs this on the newest torch of the supported range, `make test-oldest TEST_ARGS=...` on the lowest
(2.11); torch's weights-only unpickler words a refused global identically across them (see the module docstring of
hgbench.models.torch_file).
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from hgbench.cli import main
from hgbench.errors import HGBenchError
from hgbench.models import build_model
from hgbench.models.weights import file_bound, read_weights
from hgbench.spec.cases import get_spec
from hgbench.spec.config import RunConfig
from hgbench.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint


class _RunsACommand:
    """Unpickled, runs ``touch <marker>`` through os.system (posix.system): the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ExecsCode:
    """Unpickled, creates the marker through builtins.exec."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _checkpoint_with(payload: object) -> dict:
    return {"format": CHECKPOINT_FORMAT, "model": {"x": payload}}


# Each form: how the file is written, and the global its refusal must name.
FORMS: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    # torch >= 2.5: "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"
    "blocked module": (lambda path, m: torch.save(_checkpoint_with(_RunsACommand(m)), path), "posix.system"),
    # "Unsupported global: GLOBAL exec was not an allowed global by default" (torch drops the "builtins.")
    "not allowed": (lambda path, m: torch.save(_checkpoint_with(_ExecsCode(m)), path), "builtins.exec"),
    # protocol 4's STACK_GLOBAL: torch says only "Unsupported operand 149"; the pickle itself names the global
    "pickle protocol 4": (
        lambda path, m: torch.save(_checkpoint_with(_RunsACommand(m)), path, pickle_protocol=4),
        "posix.system",
    ),
    # a bare pickle, as `pickle.dump` writes it (torch's legacy loader reads it)
    "bare pickle": (lambda path, m: path.write_bytes(pickle.dumps(_RunsACommand(m))), "posix.system"),
    "bare pickle protocol 2": (lambda path, m: path.write_bytes(pickle.dumps(_RunsACommand(m), 2)), "posix.system"),
}


def _assert_refusal_names(message: str, name: str) -> None:
    assert "\n" not in message
    assert f"it holds a Python object ({name}) that only a full unpickle can build" in message
    assert "arbitrary code" in message
    assert "weights_only" not in message  # torch's advice is to set it to False: never relayed
    assert "False" not in message


@pytest.mark.parametrize("form", FORMS)
def test_a_malicious_pickle_is_refused_naming_the_global_it_asks_for(
    form: str, tmp_path: Path, tiny: RunConfig, capsys: pytest.CaptureFixture
) -> None:
    write, name = FORMS[form]
    path, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    write(path, marker)
    for load in (lambda: read_weights(path, get_spec("hg1")), lambda: load_checkpoint(path)):
        with pytest.raises(HGBenchError) as caught:
            load()
        _assert_refusal_names(str(caught.value), name)
    common = ["--device", "cpu", "--workers", "0", "--data-dir", tiny.data_dir, "--input-res", "64", "--limit", "4"]
    assert main(["evaluate", "--checkpoint", str(path), *common]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    _assert_refusal_names(err, name)
    assert not marker.exists()


@pytest.mark.parametrize("form", FORMS)
def test_torchs_own_refusal_is_named_the_same_way_without_its_advice(form: str, tmp_path: Path) -> None:
    """Past hgbench's own reading of the pickle (should torch refuse a file all the same): torch's wording, whichever
    of its versions, gives the name, and its advice to load with weights_only=False is dropped."""
    from hgbench.models.torch_file import _load

    write, name = FORMS[form]
    path, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    write(path, marker)
    with path.open("rb") as f, pytest.raises(HGBenchError) as caught:
        _load(f, path, "weights file", "cpu")
    message = str(caught.value)
    assert "\n" not in message
    assert "weights_only" not in message
    assert "False" not in message
    if "protocol 4" not in form and form != "bare pickle":  # torch says only "Unsupported operand 149" for those
        _assert_refusal_names(message, name)
    assert not marker.exists()


def test_weights_in_torchs_legacy_format_still_load(tmp_path: Path) -> None:
    """Files saved before torch 1.6 (the released weights of the study's time): five pickles, then the storages."""
    spec = get_spec("hg1")
    model = build_model(spec)
    path = tmp_path / "legacy.pth"
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, path, _use_new_zipfile_serialization=False)
    weights = read_weights(path, spec)
    assert weights.container == "training checkpoint (epoch 3)"
    assert torch.equal(weights.state_dict["conv1.weight"], model.state_dict()["conv1.weight"])


def test_a_fifo_in_a_weights_files_place_is_refused_at_once(tmp_path: Path) -> None:
    """Named directly to the loader (the commands check the name first, but it may change in between)."""
    from hgbench.models.torch_file import load_torch_file

    os.mkfifo(tmp_path / "last.pt")
    with pytest.raises(HGBenchError, match=r"last\.pt: a FIFO, not a regular file$"):
        load_torch_file(tmp_path / "last.pt", what="checkpoint")


def test_a_torchscript_archive_is_refused_without_torchs_advice(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript; a stranger's file may still be one
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(nn.Linear(2, 2)), path)
    with pytest.raises(HGBenchError) as caught:
        read_weights(path, get_spec("hg1"))
    message = str(caught.value)
    assert "\n" not in message
    assert "it is a TorchScript archive (a compiled program), not weights" in message
    assert "weights_only" not in message


# ------------------------------------------------------------------------------------------- bounded allocation
def _inflating(path: Path, record: str, inflated_mib: int = 512) -> Path:
    """A torch file of ~0.5 MB whose `record` ("data/0": a tensor's storage, "data.pkl": the pickle) is DEFLATE-
    compressed and inflates to `inflated_mib` MiB of zeros: written as a stream, never held in memory here."""
    plain = io.BytesIO()
    torch.save({"w": torch.ones(3)}, plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w") as out:
        for info in source.infolist():
            if not info.filename.endswith(f"/{record}"):
                out.writestr(info, source.read(info.filename))
                continue
            inflating = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            inflating.compress_type = zipfile.ZIP_DEFLATED
            with out.open(inflating, "w", force_zip64=True) as w:
                if record == "data.pkl":
                    w.write(source.read(info.filename))  # a valid pickle, then zeros after its STOP
                for _ in range(inflated_mib):
                    w.write(bytes(2**20))
    assert path.stat().st_size < 2**20
    return path


def _bare_pickle(path: Path, body: bytes) -> Path:
    path.write_bytes(b"\x80\x02" + body + b".")
    return path


def _oversized(path: Path) -> Path:
    """A sparse file larger than any hg1 weights file or checkpoint could be (`file_bound`): no disk used."""
    with path.open("wb") as f:
        f.truncate(file_bound(get_spec("hg1")) + 2**20)
    return path


PEAK_RSS = """
import resource, sys
from hgbench.spec.cases import get_spec
from hgbench.errors import HGBenchError
from hgbench.models.weights import read_weights

spec = get_spec("hg1")
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[1:]:
    try:
        read_weights(path, spec)
        print("LOADED", path)
    except HGBenchError as exc:
        print("REFUSED", exc)
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024  # KiB on Linux
    print(f"PEAK+ {grew:.0f} MiB after {path}", flush=True)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_a_small_file_cannot_make_hgbench_allocate_what_it_declares(tmp_path: Path, tiny: RunConfig, capsys) -> None:
    """A 0.5 MB file whose tensor record (or pickle) inflates to 512 MiB, a file larger than the case's weights can
    be, and pickles that make torch's weights-only loader itself build ~500 MiB: each refused in one line, the
    process's peak memory growing by far less (torch allocates a record's declared size, and runs a pickle, before
    anything can check them: the checks read the zip's directory and walk the pickle before torch)."""
    files = [
        _inflating(tmp_path / "tensor-bomb.pt", "data/0"),
        _inflating(tmp_path / "pickle-bomb.pt", "data.pkl"),
        _oversized(tmp_path / "huge.pt"),
        # 30 bytes: bytearray(512 MiB), which torch's weights-only loader builds (zero-filled: all of it resident)
        _bare_pickle(tmp_path / "bytearray.pt", b"cbuiltins\nbytearray\nJ\x00\x00\x00\x20\x85R"),
        # 4 MiB of (empty set, append): ~475 MiB of Python sets, everything torch's loader allows
        _bare_pickle(tmp_path / "sets.pt", b"]" + b"\x8fa" * 2**21),
    ]
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *map(str, files)], capture_output=True, text=True, timeout=600, check=True
    )
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"REFUSED refusing weights file {files[0]}: it declares 512.0 MiB of records in a ")
    assert lines[2].startswith(f"REFUSED refusing weights file {files[1]}: it declares a 512.0 MiB pickle in a ")
    assert lines[4].startswith(f"REFUSED refusing weights file {files[2]}: ")
    assert "more than the network's weights and training state can take" in lines[4]
    assert lines[6] == (
        f"REFUSED refusing weights file {files[3]}: it asks for builtins.bytearray, which weights and checkpoints "
        "never hold (torch's weights-only loader would build it, and from a few bytes it can fill memory); hgbench "
        "loads tensors and plain values only"
    )
    assert lines[8] == (
        f"REFUSED refusing weights file {files[4]}: its pickle would build over 51.2 MiB of Python objects, more than "
        "a 4.0 MiB file of weights can need; nothing was loaded"
    )
    assert int(lines[9].split()[1]) < 64, done.stdout  # peak growth in MiB over all five, against ~500 each

    common = ["--device", "cpu", "--workers", "0", "--data-dir", tiny.data_dir, "--input-res", "64", "--limit", "4"]
    assert main(["evaluate", "--checkpoint", str(files[0]), "--case", "hg1", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "it declares 512.0 MiB of records in a" in err
    with pytest.raises(HGBenchError, match="it declares a 512.0 MiB pickle in a"):
        load_checkpoint(files[1])  # no case known: the records must still fit in the file
    with pytest.raises(HGBenchError, match="more than the network's weights and training state can take"):
        load_checkpoint(files[2], spec=get_spec("hg1"))  # a resumed run knows its case
