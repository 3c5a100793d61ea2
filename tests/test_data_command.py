"""`hgbench data mpii DIR` as a user runs it: the whole path, the verification marker, one process per folder, and
messages that lead somewhere.

The concurrent case runs two real ``hgbench data mpii`` processes on one folder; the server holds the first one's
download until the second has answered, so the overlap is certain without any timing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.damage import truncate_jpeg
from helpers.local_http import serve
from helpers.mpii_archive import ARCHIVE_NAME, data_folder, sha

from hgbench.cli import main
from hgbench.data.verify import MARKER_NAME, verify_images

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def verified(tmp_path: Path, synthetic_root: Path) -> Path:
    """A copy of the synthetic folder, verified once (its marker written)."""
    data = tmp_path / "mpii"
    shutil.copytree(synthetic_root, data)
    assert verify_images(data, progress=False).ok
    assert (data / MARKER_NAME).is_file()
    return data


def test_the_command_downloads_extracts_verifies_and_removes_the_archive(
    served: Path, tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = data_folder(tmp_path / "mpii", synthetic_root)
    n_images = len(list((synthetic_root / "images").glob("*.jpg")))
    with serve(served) as (base, _):
        assert main(["data", "mpii", str(data), "--url", base + ARCHIVE_NAME]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == f"{n_images} images, 0 missing, 0 corrupt"
    assert "downloaded by this call" in out.err
    assert not (data / ARCHIVE_NAME).exists()
    marker = json.loads((data / MARKER_NAME).read_text())
    assert marker["annotation_sha256"] == sha(data / "mpii_annotations.json")
    assert marker["images"] == n_images
    # Run again: the marker still describes the folder, nothing is decoded.
    assert main(["data", "mpii", str(data)]) == 0
    assert "verified before" in capsys.readouterr().out


def test_from_archive_keeps_the_users_file(served: Path, tmp_path: Path, synthetic_root: Path) -> None:
    data = data_folder(tmp_path / "mpii", synthetic_root)
    archive = served / ARCHIVE_NAME
    assert main(["data", "mpii", str(data), "--from-archive", str(archive)]) == 0
    assert archive.is_file()
    assert (data / "images").is_dir()


def test_an_archive_already_in_dir_is_extracted_and_kept(
    served: Path, tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = data_folder(tmp_path / "mpii", synthetic_root)
    mine = data / ARCHIVE_NAME
    shutil.copy(served / ARCHIVE_NAME, mine)  # the user's own copy, put there by hand
    assert main(["data", "mpii", str(data)]) == 0  # no download: the archive is there
    assert mine.is_file()
    assert sha(mine) == sha(served / ARCHIVE_NAME)
    err = capsys.readouterr().err
    assert "deleted" not in err
    assert f"kept {mine}" in err


def test_a_marker_of_another_annotation_file_counts_for_nothing(verified: Path) -> None:
    assert verify_images(verified, use_marker=True, progress=False).from_marker
    marker = json.loads((verified / MARKER_NAME).read_text())
    (verified / MARKER_NAME).write_text(json.dumps({**marker, "annotation_sha256": "0" * 64}))
    report = verify_images(verified, use_marker=True, progress=False)
    assert not report.from_marker
    assert report.images > 1


def test_an_emptied_folder_is_not_reported_verified(verified: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jpgs = sorted((verified / "images").glob("*.jpg"))
    for jpg in jpgs:
        jpg.unlink()
    assert main(["data", "mpii", str(verified)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"{len(jpgs)} images, {len(jpgs)} missing, 0 corrupt"
    assert "verified before" not in err


def test_an_image_replaced_since_the_check_is_decoded_again(verified: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jpg = sorted((verified / "images").glob("*.jpg"))[3]
    truncate_jpeg(jpg)
    assert main(["data", "mpii", str(verified)]) == 1
    err = capsys.readouterr().err
    assert f"corrupt: {jpg}" in err
    assert "verified before" not in err


def test_an_image_touched_since_the_check_is_decoded_again_then_trusted(
    verified: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jpg = sorted((verified / "images").glob("*.jpg"))[0]
    st = jpg.stat()
    os.utime(jpg, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same bytes, another time
    assert main(["data", "mpii", str(verified)]) == 0
    assert "verified before" not in capsys.readouterr().out  # decoded again, and a new marker written
    assert main(["data", "mpii", str(verified)]) == 0
    assert "verified before" in capsys.readouterr().out


def test_a_marker_that_is_a_fifo_is_ignored_not_waited_on(tmp_path: Path, synthetic_root: Path) -> None:
    data = tmp_path / "mpii"
    shutil.copytree(synthetic_root, data)
    os.mkfifo(data / MARKER_NAME)
    report = verify_images(data, use_marker=True, progress=False)
    assert report.ok
    assert not report.from_marker


def test_verify_lists_a_missing_and_a_truncated_image(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "mpii"
    shutil.copytree(synthetic_root, data)
    jpgs = sorted((data / "images").glob("*.jpg"))
    jpgs[0].unlink()
    truncate_jpeg(jpgs[1])
    assert main(["data", "mpii", str(data), "--verify"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"{len(jpgs)} images, 1 missing, 1 corrupt"
    assert f"missing: {jpgs[0]}" in err
    assert f"corrupt: {jpgs[1]}" in err
    assert "to fix: rm -r" in err
    assert "hgbench data mpii" in err
    assert not (data / MARKER_NAME).exists()


@pytest.mark.parametrize("flags", [[], ["--verify"]], ids=["plain", "verify"])
def test_images_that_is_a_file_gets_a_way_out_not_a_circle(
    served: Path, tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    data = data_folder(tmp_path / "mpii", synthetic_root)
    (data / "images").write_text("not a folder")
    argv = ["data", "mpii", str(data), *flags] + ([] if flags else ["--from-archive", str(served / ARCHIVE_NAME)])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{data / 'images'} is a file, not a folder of images; move it away" in err
    assert "--verify" not in err
    assert "prepare it with" not in err
    assert (data / "images").read_text() == "not a folder"


def _hgbench(*args: str) -> list[str]:
    return [sys.executable, "-m", "hgbench.cli", *args]


@pytest.mark.slow  # two real processes: about 20 s on a loaded 2-core machine
def test_a_second_process_on_the_same_folder_refuses_naming_the_first(
    served: Path, tmp_path: Path, synthetic_root: Path
) -> None:
    data = data_folder(tmp_path / "mpii", synthetic_root)
    n_images = len(list((synthetic_root / "images").glob("*.jpg")))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with serve(served, hold_first=True) as (base, state):
        argv = _hgbench("data", "mpii", str(data), "--url", base + ARCHIVE_NAME)
        first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert state.first_arrived.wait(120), "the first process never asked for the archive"
            second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
            state.release.set()
            out, err = first.communicate(timeout=300)
        finally:
            if first.poll() is None:
                first.kill()
    assert second.returncode == 4, second.stderr
    refusal = second.stderr.strip()
    assert len(refusal.splitlines()) == 1
    assert f"{data} is being prepared by host " in refusal
    assert f" pid {first.pid} since " in refusal
    assert "nothing was done" in refusal
    assert len(state.requests) == 1  # the second never touched the download
    assert first.returncode == 0, err
    assert out.strip() == f"{n_images} images, 0 missing, 0 corrupt"
    assert len(list((data / "images").glob("*.jpg"))) == n_images
    # The claim ended with its process: the next call goes ahead.
    assert main(["data", "mpii", str(data)]) == 0


@pytest.mark.parametrize(
    ("flag", "value"), [("--rate-window", "0"), ("--rate-window", "nan"), ("--min-rate", "-1"), ("--min-rate", "inf")]
)
def test_a_nonsense_rate_or_window_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["data", "mpii", str(tmp_path / "mpii"), flag, value])
    assert exc.value.code == 2
    assert f"argument {flag}: must be" in capsys.readouterr().err
    assert not (tmp_path / "mpii").exists()
