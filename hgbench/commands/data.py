"""`hgbench data mpii DIR`: prepare a real MPII folder that ``--data-dir DIR`` accepts: download, extract, verify.

Without flags: download the official image archive into DIR (resuming a partial download), extract its ``images/``
atomically, verify every image the annotation file names, then delete the archive this call downloaded
(``--keep-archive`` keeps it; an archive that was in DIR already, or one named by ``--from-archive``, is never
deleted). ``--verify`` alone checks an existing folder in full. A folder verified before is reported, not decoded
again, while its marker still matches it (the annotation file, and every image's name, size and time), unless
``--verify`` asks. One hgbench at a time prepares a folder: DIR is claimed as a run is (``claim.lock``), and a second
``hgbench data mpii DIR`` refuses, naming the first.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import sys
from pathlib import Path
from urllib.parse import urlparse

from hgbench.commands._args import at_least
from hgbench.errors import HGBenchError

EPILOG = """examples:
  hgbench data mpii ~/mpii                              download (12.9 GB), extract, verify
  hgbench data mpii ~/mpii --from-archive mpii_human_pose_v1.tar.gz
  hgbench data mpii ~/mpii --verify                     check every image of an existing folder
  hgbench data mpii ~/mpii --min-rate 1 --rate-window 300   a slow link: give up only below 1 kB/s over 5 min
"""


class DataDirBusy(HGBenchError):
    """Another process is preparing the data folder (its claim is held): nothing was done."""

    exit_code = 4


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="download, extract and verify a real dataset folder (MPII)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", choices=("mpii",), help="the dataset (MPII Human Pose)")
    p.add_argument("dir", type=Path, metavar="DIR", help="the data folder: images/ lands in it")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--url", metavar="URL", help="download from a mirror (or a local file path) instead")
    src.add_argument("--from-archive", type=Path, metavar="FILE", help="extract this archive instead of downloading")
    src.add_argument("--verify", action="store_true", help="only check an existing folder, in full")
    p.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive after extracting it")
    p.add_argument(
        "--workers", type=at_least(1), default=None, metavar="N", help="verification threads (default: CPUs)"
    )
    p.add_argument(
        "--min-rate",
        type=_number(above=None),
        default=10.0,
        metavar="KB_PER_S",
        help="give up a download (keeping it to resume) when it averages under this many kB/s over a window "
        "(default: 10)",
    )
    p.add_argument(
        "--rate-window",
        type=_number(above=0.0),
        default=60.0,
        metavar="S",
        help="that window in seconds, also the longest wait for any byte of the download (default: 60)",
    )
    p.set_defaults(func=cmd_data, _parser=p)


def _number(*, above: float | None):
    """An argparse `type`: a finite number, 0 or more (`above` None) or more than `above`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (above is not None and value <= above):
            bound = "0 or more" if above is None else f"more than {above:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def _fix_command(data_dir: Path, archive: Path | None) -> str:
    source = f" --from-archive {archive}" if archive is not None else ""
    return (
        f"rm -r {data_dir / 'images'} && hgbench data mpii {data_dir}{source}  (or train without the corrupt "
        "images: --skip-bad-images)"
    )


def _report(report, data_dir: Path, archive: Path | None) -> int:
    lines = report.lines(_fix_command(data_dir, archive))
    print("\n".join(lines), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def _claim(data_dir: Path, *, check_only: bool) -> contextlib.AbstractContextManager:
    """Claim DIR for this process as runs are claimed; a check of a folder this user cannot write goes unclaimed.

    Raises:
        DataDirBusy: another process holds the claim (the message names it).
    """
    from hgbench.files.claim import RunBusy, claim_run, holder

    try:
        return claim_run(data_dir, label=f"data folder {data_dir}")
    except RunBusy:
        owner = holder(data_dir)
        who = owner.describe() if owner is not None else "another process"
        raise DataDirBusy(
            f"{data_dir} is being prepared by {who} (another hgbench data mpii); nothing was done: wait for it to "
            "end, or stop it first"
        ) from None
    except OSError as exc:
        if check_only and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return contextlib.nullcontext()  # a read-only folder: nobody with these rights changes it meanwhile
        raise


def cmd_data(args: argparse.Namespace) -> int:
    from hgbench.data.extract import images_folder_problem

    data_dir: Path = args.dir.expanduser()
    images = data_dir / "images"
    problem = images_folder_problem(data_dir)
    if problem is not None:
        raise HGBenchError(f"{problem}, then run: hgbench data mpii {data_dir}")
    if args.verify and not images.is_dir():
        raise HGBenchError(f"no images/ folder in {data_dir}; prepare it with: hgbench data mpii {data_dir}")
    with _claim(data_dir, check_only=args.verify or images.is_dir()):
        return _prepare(args, data_dir)


def _prepare(args: argparse.Namespace, data_dir: Path) -> int:
    """The command's work, under DIR's claim."""
    from hgbench.data.verify import verify_images

    images = data_dir / "images"
    if args.verify:
        return _report(verify_images(data_dir, workers=args.workers), data_dir, None)
    if images.is_dir():
        report = verify_images(data_dir, use_marker=True, workers=args.workers)
        return _report(report, data_dir, args.from_archive)

    url = args.url or _mpii_url()
    local = None if args.from_archive is None else args.from_archive.expanduser()
    if local is None and urlparse(url).scheme in ("", "file"):
        local = Path(urlparse(url).path if urlparse(url).scheme == "file" else url).expanduser()
    archive, downloaded = (local, False) if local is not None else _get_archive(args, data_dir, url)
    _extract(archive, data_dir, downloaded=downloaded, given=local is not None)
    print(f"hgbench: extracted {archive.name} into {images}", file=sys.stderr)
    report = verify_images(data_dir, workers=args.workers)
    if report.ok and downloaded and not args.keep_archive:
        archive.unlink(missing_ok=True)
        print(f"hgbench: deleted {archive}, downloaded by this call (--keep-archive keeps it)", file=sys.stderr)
    elif not downloaded and local is None:
        print(f"hgbench: kept {archive}: it was in {data_dir} before this call", file=sys.stderr)
    return _report(report, data_dir, None if downloaded and not args.keep_archive else archive)


def _mpii_url() -> str:
    from hgbench.data.download import MPII_IMAGES_URL

    return MPII_IMAGES_URL


def _get_archive(args: argparse.Namespace, data_dir: Path, url: str) -> tuple[Path, bool]:
    """The archive in DIR and whether this call downloaded it (False: it was there already)."""
    from hgbench.data.download import MPII_ARCHIVE_BYTES, MPII_ARCHIVE_NAME, Patience, download, partial_path
    from hgbench.data.extract import gzip_problem

    archive = data_dir / MPII_ARCHIVE_NAME
    if archive.is_file():
        return archive, False
    if archive.is_symlink() or archive.exists():  # a folder, a FIFO, a link to nothing: not an archive to read
        raise HGBenchError(f"{archive} is not a regular file; move it away and run the same command again")
    resuming = partial_path(archive).is_file()
    print(f"hgbench: {'resuming' if resuming else 'downloading'} {url}", file=sys.stderr)
    patience = Patience(min_rate=args.min_rate * 1000, window_s=args.rate_window)
    download(
        url,
        archive,
        expected_bytes=MPII_ARCHIVE_BYTES,
        room_to_extract=True,
        check_complete=gzip_problem,
        patience=patience,
    )
    return archive, True


def _extract(archive: Path, data_dir: Path, *, downloaded: bool, given: bool) -> None:
    """`extract_images`, with what to do about a damaged archive: never delete a file this call did not download."""
    from hgbench.data.extract import ArchiveDamaged, extract_images

    try:
        extract_images(archive, data_dir)
    except ArchiveDamaged as exc:
        if downloaded:
            fix = "this call downloaded it: delete it and run the same command to download it anew"
        elif given:
            fix = f"{archive} was left as it is: get a good copy, or run hgbench data mpii {data_dir} to download one"
        else:
            fix = (
                f"{archive} was left as it is: if it is an interrupted download of yours, move it away and run the "
                "same command to download it anew"
            )
        raise HGBenchError(f"{exc}; {fix}") from None
