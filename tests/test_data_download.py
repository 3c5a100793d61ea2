"""`hgbench.data.download`: a resumable download that believes a reply only as far as it is consistent.

No network here: the archive is a small tar.gz of a synthetic MPII folder's images, served from 127.0.0.1 by a real
`http.server` (`helpers.local_http`) whose replies each test crafts: dropped connections, Range ignored, If-Range,
416, another file length, no or a garbage Content-Length, a trickle, silence. Nothing asserts on wall time: a slow
or silent server is given up by a rate and window the test sets, far from what the server sends.
"""

from __future__ import annotations

import os
from collections import namedtuple
from pathlib import Path

import pytest
from helpers.local_http import serve
from helpers.mpii_archive import ARCHIVE_NAME, data_folder, sha

from hgbench.cli import main
from hgbench.data import disk_room
from hgbench.data.download import DownloadError, Patience, download, partial_path
from hgbench.data.partial_download import FirstReply, note_path, write_note
from hgbench.errors import HGBenchError


@pytest.fixture
def plenty_of_room(monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk with room for the real archive: a reply without a length is checked against MPII's 12.9 GB."""
    monkeypatch.setattr(disk_room, "free_bytes", lambda _: 10**13)


def interrupt_at_half(base: str, served: Path, dest: Path) -> int:
    """Download until the server (started with ``drop_after=half``) drops the connection; the bytes in ``.part``."""
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download(base + ARCHIVE_NAME, dest, progress=False)
    half = (served / ARCHIVE_NAME).stat().st_size // 2
    assert partial_path(dest).stat().st_size == half
    return half


def half_of(served: Path) -> int:
    return (served / ARCHIVE_NAME).stat().st_size // 2


def test_an_interrupted_download_resumes_with_range_and_if_range(served: Path, tmp_path: Path) -> None:
    original = served / ARCHIVE_NAME
    dest = tmp_path / "data" / ARCHIVE_NAME
    half = half_of(served)
    with serve(served, drop_after=half) as (base, state):
        with pytest.raises(DownloadError, match="run the same command again to resume") as err:
            download(base + ARCHIVE_NAME, dest, progress=False)
        assert "\n" not in str(err.value)
        assert not dest.exists()
        assert partial_path(dest).stat().st_size == half
        assert download(base + ARCHIVE_NAME, dest, progress=False) == dest
    resume = state.requests[1]
    assert (resume.path, resume.range) == ("/" + ARCHIVE_NAME, f"bytes={half}-")  # only the rest was asked for
    assert resume.if_range is not None
    assert resume.if_range.startswith('"')
    assert sha(dest) == sha(original)
    assert not partial_path(dest).exists()
    assert not note_path(dest).exists()


def test_a_server_that_ignores_range_sends_it_all_again(served: Path, tmp_path: Path) -> None:
    dest = tmp_path / ARCHIVE_NAME
    with serve(served, drop_after=half_of(served)) as (base, state):
        interrupt_at_half(base, served, dest)
        state.ignore_range = True
        download(base + ARCHIVE_NAME, dest, progress=False)
    assert sha(dest) == sha(served / ARCHIVE_NAME)


def test_a_file_changed_on_the_server_is_downloaded_anew_not_spliced(served: Path, tmp_path: Path) -> None:
    dest = tmp_path / ARCHIVE_NAME
    changed = served / ARCHIVE_NAME
    with serve(served, drop_after=half_of(served)) as (base, state):
        interrupt_at_half(base, served, dest)
        changed.write_bytes(changed.read_bytes()[::-1])  # same length, other bytes: only If-Range can tell
        download(base + ARCHIVE_NAME, dest, progress=False)
    assert sha(dest) == sha(changed)  # not the old file's first half spliced to the new file's second
    assert state.requests[1].if_range is not None


def test_without_validators_a_resume_whose_total_differs_starts_again(served: Path, tmp_path: Path) -> None:
    dest = tmp_path / ARCHIVE_NAME
    longer = served / ARCHIVE_NAME
    with serve(served, drop_after=half_of(served), validators=False) as (base, state):
        interrupt_at_half(base, served, dest)
        longer.write_bytes(longer.read_bytes()[::-1] + b"more bytes than the first reply announced")
        download(base + ARCHIVE_NAME, dest, progress=False)
    assert [r.range is not None for r in state.requests] == [False, True, False]  # the resume refused, then all
    assert sha(dest) == sha(longer)


def test_a_416_to_a_half_partial_file_is_not_taken_as_complete(served: Path, tmp_path: Path) -> None:
    dest = tmp_path / ARCHIVE_NAME
    with serve(served, drop_after=half_of(served)) as (base, state):
        interrupt_at_half(base, served, dest)
        state.always_416 = True
        download(base + ARCHIVE_NAME, dest, progress=False)
    assert [r.range is not None for r in state.requests] == [False, True, False]
    assert sha(dest) == sha(served / ARCHIVE_NAME)


def test_a_416_to_a_whole_partial_file_completes_it_without_downloading_again(served: Path, tmp_path: Path) -> None:
    original = served / ARCHIVE_NAME
    dest = tmp_path / ARCHIVE_NAME
    with serve(served) as (base, state):
        partial_path(dest).write_bytes(original.read_bytes())  # every byte arrived; the rename did not happen
        write_note(dest, FirstReply(base + ARCHIVE_NAME, original.stat().st_size, None, None))
        download(base + ARCHIVE_NAME, dest, progress=False)
    assert len(state.requests) == 1
    assert state.requests[0].range is not None
    assert sha(dest) == sha(original)


def test_a_partial_file_without_its_note_is_downloaded_anew(served: Path, tmp_path: Path) -> None:
    dest = tmp_path / ARCHIVE_NAME
    partial_path(dest).write_bytes(b"stale bytes of who knows what")
    with serve(served) as (base, state):
        download(base + ARCHIVE_NAME, dest, progress=False)
    assert state.requests[0].range is None
    assert sha(dest) == sha(served / ARCHIVE_NAME)


@pytest.mark.parametrize("value", ["abc", "-5", "10, 10", ""])
@pytest.mark.usefixtures("plenty_of_room")
def test_a_garbage_content_length_is_no_length_not_a_crash(
    served: Path, tmp_path: Path, synthetic_root: Path, value: str
) -> None:
    data = data_folder(tmp_path / "mpii", synthetic_root)
    with serve(served, length_header=value) as (base, _):
        assert main(["data", "mpii", str(data), "--url", base + ARCHIVE_NAME]) == 0
    assert (data / "images").is_dir()


@pytest.mark.parametrize("value", ["1_000", "+1000"])
def test_a_content_length_python_would_misread_is_refused_in_one_line(
    served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    dest = tmp_path / ARCHIVE_NAME
    with serve(served, length_header=value) as (base, _):
        with pytest.raises(HGBenchError, match="malformed Content-Length") as err:
            download(base + ARCHIVE_NAME, dest, progress=False)
    assert "\n" not in str(err.value)
    assert not dest.exists()


@pytest.mark.usefixtures("plenty_of_room")
def test_a_body_without_length_that_ends_early_is_kept_to_resume(
    served: Path, tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = data_folder(tmp_path / "mpii", synthetic_root)
    half = (served / ARCHIVE_NAME).stat().st_size // 2
    url_args = ["data", "mpii", str(data), "--url"]
    with serve(served, length_header="none", drop_after=half) as (base, state):
        assert main([*url_args, base + ARCHIVE_NAME]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "incomplete" in err
        assert err.endswith("run the same command again to resume")
        assert partial_path(data / ARCHIVE_NAME).stat().st_size == half
        assert not (data / ARCHIVE_NAME).exists()
        assert not (data / "images").exists()
        assert main([*url_args, base + ARCHIVE_NAME]) == 0
    assert state.requests[1].range == f"bytes={half}-"
    assert (data / "images").is_dir()


def test_a_trickling_server_is_given_up_below_the_minimum_rate(served: Path, tmp_path: Path) -> None:
    dest = tmp_path / ARCHIVE_NAME
    # The server sends a few hundred bytes a second at most (fewer under load); a read may wait 60 s, so only the
    # rate can end this download.
    slow = Patience(min_rate=1e6, window_s=0.5, stall_s=60)
    with serve(served, trickle=(4, 0.02)) as (base, state):
        with pytest.raises(DownloadError, match="under the minimum of 1.0 MB/s.*run the same command again"):
            download(base + ARCHIVE_NAME, dest, patience=slow, progress=False)
        kept = partial_path(dest).stat().st_size
        assert 0 < kept < (served / ARCHIVE_NAME).stat().st_size  # what came is kept for the resume
        state.trickle = None
        download(base + ARCHIVE_NAME, dest, progress=False)
    assert state.requests[1].range == f"bytes={kept}-"
    assert sha(dest) == sha(served / ARCHIVE_NAME)


def test_a_silent_server_is_given_up_after_the_window(served: Path, tmp_path: Path) -> None:
    dest = tmp_path / ARCHIVE_NAME
    with serve(served, stall_after=1000) as (base, _):
        with pytest.raises(DownloadError, match=r"nothing came for 0.5 s\); run the same command again"):
            download(base + ARCHIVE_NAME, dest, patience=Patience(min_rate=0, stall_s=0.5), progress=False)
    assert partial_path(dest).stat().st_size == 1000


@pytest.mark.parametrize("ignore_range", [False, True], ids=["resume", "whole-file"])
def test_a_part_file_that_is_a_link_is_never_written_through(served: Path, tmp_path: Path, ignore_range: bool) -> None:
    victim = tmp_path / "someone_elses_file"
    victim.write_bytes(b"precious" * 10)
    dest = tmp_path / "shared" / ARCHIVE_NAME
    dest.parent.mkdir()
    partial_path(dest).symlink_to(victim)
    with serve(served, ignore_range=ignore_range) as (base, _):
        with pytest.raises(HGBenchError, match=r"\.part is a symbolic link, not a regular file") as err:
            download(base + ARCHIVE_NAME, dest, progress=False)
    assert "\n" not in str(err.value)
    assert victim.read_bytes() == b"precious" * 10
    assert partial_path(dest).is_symlink()
    assert not dest.exists()


def test_a_part_file_that_is_a_fifo_is_refused_not_waited_on(served: Path, tmp_path: Path) -> None:
    dest = tmp_path / ARCHIVE_NAME
    os.mkfifo(partial_path(dest))
    with serve(served) as (base, _):
        with pytest.raises(HGBenchError, match=r"\.part is a FIFO"):
            download(base + ARCHIVE_NAME, dest, progress=False)


def test_no_server_is_one_line_that_says_to_run_again(tmp_path: Path) -> None:
    with serve(tmp_path) as (base, _):
        pass  # the port is closed now
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download(base + "x.tar.gz", tmp_path / "x.tar.gz", progress=False)


def test_a_full_disk_is_refused_before_any_byte_is_written_and_the_margin_is_said(
    served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = namedtuple("usage", "total used free")
    free = disk_room.ROOM_MARGIN_BYTES - 1000  # room for the archive itself, none for the margin
    monkeypatch.setattr(disk_room.shutil, "disk_usage", lambda _: usage(10**12, 10**12 - free, free))
    dest = tmp_path / ARCHIVE_NAME
    with serve(served) as (base, _):
        with pytest.raises(HGBenchError, match="not enough disk space") as err:
            download(base + dest.name, dest, room_to_extract=True, progress=False)
    margin = disk_room.human_bytes(disk_room.ROOM_MARGIN_BYTES)
    assert f"needed + {margin} kept free, {disk_room.human_bytes(free)} free" in str(err.value)
    assert not dest.exists()
    assert not partial_path(dest).exists()
