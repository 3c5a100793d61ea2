"""`hgbench data mpii`: a resumable download, an atomic extraction and the verification, against a local server.

No network here: the archive is a small tar.gz of a synthetic MPII folder's images, served from 127.0.0.1
(`helpers.local_http`), which can drop the connection half-way or ignore Range requests.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections import namedtuple
from pathlib import Path

import pytest
from helpers.damage import truncate_jpeg
from helpers.local_http import serve

from hgbench.cli import main
from hgbench.data import download as dl
from hgbench.data.download import DownloadError, download, extract_images, extracting_dir, partial_path
from hgbench.data.verify import MARKER_NAME, verify_images
from hgbench.errors import DataError, HGBenchError


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_archive(images_from: Path, out: Path) -> Path:
    """A tar.gz laid out as MPII's: ``images/<name>.jpg`` (plus a file outside images/ that is not extracted)."""
    with tarfile.open(out, "w:gz") as tar:
        tar.add(images_from / "images", arcname="images")
        readme = b"not an image"
        info = tarfile.TarInfo("README.txt")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
    return out


@pytest.fixture
def served(tmp_path: Path, synthetic_root: Path) -> Path:
    """A folder to serve, holding the archive of the synthetic dataset's images."""
    root = tmp_path / "www"
    root.mkdir()
    make_archive(synthetic_root, root / "mpii_human_pose_v1.tar.gz")
    return root


def test_an_interrupted_download_resumes_with_a_range_request(served: Path, tmp_path: Path) -> None:
    original = served / "mpii_human_pose_v1.tar.gz"
    dest = tmp_path / "data" / "mpii_human_pose_v1.tar.gz"
    half = original.stat().st_size // 2
    with serve(served, drop_after=half) as (base, state):
        with pytest.raises(DownloadError, match="run the same command again to resume") as err:
            download(base + original.name, dest, progress=False)
        assert "\n" not in str(err.value)
        assert not dest.exists()
        assert partial_path(dest).stat().st_size == half
        assert download(base + original.name, dest, progress=False) == dest
    assert state.requests[1] == ("/" + original.name, f"bytes={half}-")  # only the rest was asked for
    assert sha(dest) == sha(original)
    assert not partial_path(dest).exists()


def test_a_server_that_ignores_range_sends_it_all_again(served: Path, tmp_path: Path) -> None:
    original = served / "mpii_human_pose_v1.tar.gz"
    dest = tmp_path / "mpii_human_pose_v1.tar.gz"
    partial_path(dest).write_bytes(b"stale bytes of another try")
    with serve(served, ignore_range=True) as (base, _):
        download(base + original.name, dest, progress=False)
    assert sha(dest) == sha(original)


def test_no_server_is_one_line_that_says_to_run_again(tmp_path: Path) -> None:
    with serve(tmp_path) as (base, _):
        pass  # the port is closed now
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download(base + "x.tar.gz", tmp_path / "x.tar.gz", progress=False)


def test_a_full_disk_is_refused_before_any_byte_is_written(
    served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda _: usage(10**9, 10**9, 1000))
    dest = tmp_path / "mpii_human_pose_v1.tar.gz"
    with serve(served) as (base, _):
        with pytest.raises(HGBenchError, match="not enough disk space .* needed, .* free"):
            download(base + dest.name, dest, room_to_extract=True, progress=False)
    assert not dest.exists()
    assert not partial_path(dest).exists()


def test_extraction_lands_atomically_and_a_corrupt_archive_leaves_nothing(served: Path, tmp_path: Path) -> None:
    archive = served / "mpii_human_pose_v1.tar.gz"
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    data = tmp_path / "data"
    with pytest.raises(DataError, match="is damaged .*download it anew") as err:
        extract_images(damaged, data, progress=False)
    assert "\n" not in str(err.value)
    assert not (data / "images").exists()
    assert not extracting_dir(data).exists()

    images = extract_images(archive, data, progress=False)
    assert images == data / "images"
    assert not extracting_dir(data).exists()
    assert not (data / "README.txt").exists()  # only images/ is taken from the archive
    with tarfile.open(archive) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile() and m.name.startswith("images/"))
    assert sorted(str(p.relative_to(data)) for p in images.iterdir()) == names


def test_the_command_downloads_extracts_verifies_and_removes_the_archive(
    served: Path, tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "mpii"
    data.mkdir()
    shutil.copy(synthetic_root / "mpii_annotations.json", data)
    n_images = len(list((synthetic_root / "images").glob("*.jpg")))
    with serve(served) as (base, _):
        assert main(["data", "mpii", str(data), "--url", base + "mpii_human_pose_v1.tar.gz"]) == 0
    assert capsys.readouterr().out.strip() == f"{n_images} images, 0 missing, 0 corrupt"
    assert not (data / "mpii_human_pose_v1.tar.gz").exists()
    marker = json.loads((data / MARKER_NAME).read_text())
    assert marker["annotation_sha256"] == sha(data / "mpii_annotations.json")
    assert marker["images"] == n_images
    # Run again: the marker says it is verified, nothing is decoded.
    assert main(["data", "mpii", str(data)]) == 0
    assert "verified before" in capsys.readouterr().out


def test_from_archive_keeps_the_users_file(served: Path, tmp_path: Path, synthetic_root: Path) -> None:
    data = tmp_path / "mpii"
    data.mkdir()
    shutil.copy(synthetic_root / "mpii_annotations.json", data)
    archive = served / "mpii_human_pose_v1.tar.gz"
    assert main(["data", "mpii", str(data), "--from-archive", str(archive)]) == 0
    assert archive.is_file()
    assert (data / "images").is_dir()


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


def test_a_marker_of_another_annotation_file_counts_for_nothing(tmp_path: Path, synthetic_root: Path) -> None:
    data = tmp_path / "mpii"
    shutil.copytree(synthetic_root, data)
    assert verify_images(data, progress=False).ok
    assert verify_images(data, use_marker=True, progress=False).from_marker
    (data / MARKER_NAME).write_text(json.dumps({"annotation_sha256": "0" * 64, "images": 1}))
    report = verify_images(data, use_marker=True, progress=False)
    assert not report.from_marker
    assert report.images > 1


@pytest.mark.mpii
def test_verify_the_real_sample_images(tmp_path: Path, mpii_sample: Path) -> None:
    data = tmp_path / "sample"
    shutil.copytree(mpii_sample, data)  # the shared folder is read-only; verification writes its marker
    report = verify_images(data, progress=False)
    assert report.summary() == "7 images, 0 missing, 0 corrupt"
    assert (data / MARKER_NAME).is_file()
