"""`hgbench.data.extract` and `hgbench data mpii --from-archive`: atomic, bounded by the disk's room, trailer-checked.

A gzip bomb is a small archive whose members inflate to megabytes of zeros; the disk's room is either played by
replacing `disk_room.free_bytes` (everywhere) or real, on a small tmpfs this test mounts (only as root).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.mpii_archive import ARCHIVE_NAME, data_folder, flip_byte, make_archive, make_bomb

from hgbench.cli import main
from hgbench.data import disk_room
from hgbench.data.extract import EXTRACTING_PREFIX, ArchiveDamaged, extract_images
from hgbench.errors import DataError

MB = 1_000_000


@pytest.fixture
def archive(tmp_path: Path, synthetic_root: Path) -> Path:
    return make_archive(synthetic_root, tmp_path / ARCHIVE_NAME)


def leftovers(data: Path) -> list[str]:
    return [p.name for p in data.iterdir() if p.name.startswith(EXTRACTING_PREFIX)] if data.is_dir() else []


def bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_extraction_lands_atomically_and_a_corrupt_archive_leaves_nothing(archive: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    data = tmp_path / "data"
    with pytest.raises(ArchiveDamaged, match="is damaged .*nothing was extracted") as err:
        extract_images(damaged, data, progress=False)
    assert "\n" not in str(err.value)
    assert not (data / "images").exists()
    assert leftovers(data) == []

    images = extract_images(archive, data, progress=False)
    assert images == data / "images"
    assert leftovers(data) == []
    assert not (data / "README.txt").exists()  # only images/ is taken from the archive
    import tarfile

    with tarfile.open(archive) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile() and m.name.startswith("images/"))
    assert sorted(str(p.relative_to(data)) for p in images.iterdir()) == names


@pytest.mark.parametrize(("offset", "reason"), [(-8, "CRC check failed"), (-4, "Incorrect length")])
def test_a_wrong_gzip_trailer_fails_before_the_images_land(
    archive: Path, tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str], offset: int, reason: str
) -> None:
    flip_byte(archive, offset)  # CRC32 is the trailer's first 4 bytes, ISIZE its last 4
    data = data_folder(tmp_path / "mpii", synthetic_root)
    assert main(["data", "mpii", str(data), "--from-archive", str(archive)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("hgbench: error: archive")
    assert reason in err
    assert not (data / "images").exists()
    assert leftovers(data) == []


def test_a_gzip_bomb_stops_at_the_first_member_that_would_not_fit(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = make_bomb(tmp_path / "bomb.tar.gz", [2 * MB] * 6)  # 12 MB inflated, a few kB on disk
    assert bomb.stat().st_size < 100_000
    monkeypatch.setattr(disk_room, "free_bytes", lambda _: disk_room.ROOM_MARGIN_BYTES + 7 * MB)
    data = data_folder(tmp_path / "mpii", synthetic_root)
    assert main(["data", "mpii", str(data), "--from-archive", str(bomb)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    # 3 members (6 MB) fit in the 7 MB; the fourth would not, and nothing of it is written.
    margin = disk_room.human_bytes(disk_room.ROOM_MARGIN_BYTES)
    assert err.startswith("hgbench: error: not enough disk space")
    assert f"through images/bomb03.jpg, 8.0 MB needed + {margin} kept free" in err
    assert "stopped before writing images/bomb03.jpg" in err
    assert not (data / "images").exists()
    assert leftovers(data) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MB filesystem (tmpfs), mounted for this test; skipped where this process may not mount."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_gzip_bomb_on_a_real_small_disk_is_refused_before_it_fills_it(
    tmp_path: Path, synthetic_root: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = make_bomb(tmp_path / "bomb.tar.gz", [8 * MB, 8 * MB, 8 * MB])  # 24 MB into 16
    monkeypatch.setattr(disk_room, "ROOM_MARGIN_BYTES", 1 * MB)
    data = data_folder(small_disk / "mpii", synthetic_root)
    with pytest.raises(disk_room.NoRoom, match="stopped before writing images/bomb01.jpg"):
        extract_images(bomb, data, progress=False)
    assert bytes_under(small_disk) < 2 * MB  # the first member was written, then removed with the work folder
    assert leftovers(data) == []


def test_a_damaged_archive_the_user_gave_is_never_called_deletable(
    archive: Path, tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    data = data_folder(tmp_path / "mpii", synthetic_root)
    assert main(["data", "mpii", str(data), "--from-archive", str(archive)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is damaged" in err
    assert "left as it is" in err
    assert "delete" not in err
    assert archive.is_file()


def test_an_archive_that_is_not_a_regular_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / ARCHIVE_NAME
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="is a FIFO, not a regular file"):
        extract_images(fifo, tmp_path / "data", progress=False)
