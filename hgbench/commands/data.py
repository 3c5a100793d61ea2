"""`hgbench data mpii DIR`: prepare a real MPII folder that ``--data-dir DIR`` accepts: download, extract, verify.

Without flags: download the official image archive into DIR (resuming a partial download), extract its ``images/``
atomically, verify every image the annotation file names, then delete the downloaded archive (``--keep-archive``
keeps it). ``--from-archive FILE`` extracts an archive you already have (never deleted); ``--verify`` alone checks an
existing folder in full. A folder verified before (its marker matches the annotation file) is reported, not
checked again, unless ``--verify`` asks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlparse

from hgbench.commands._args import at_least
from hgbench.errors import HGBenchError

EPILOG = """examples:
  hgbench data mpii ~/mpii                              download (12.9 GB), extract, verify
  hgbench data mpii ~/mpii --from-archive mpii_human_pose_v1.tar.gz
  hgbench data mpii ~/mpii --verify                     check every image of an existing folder
"""


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
    p.set_defaults(func=cmd_data, _parser=p)


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


def cmd_data(args: argparse.Namespace) -> int:
    from hgbench.data.download import (
        MPII_ARCHIVE_BYTES,
        MPII_ARCHIVE_NAME,
        MPII_IMAGES_URL,
        download,
        extract_images,
        partial_path,
    )
    from hgbench.data.verify import verify_images

    data_dir: Path = args.dir.expanduser()
    images = data_dir / "images"
    if args.verify:
        if not images.is_dir():
            raise HGBenchError(f"no images/ folder in {data_dir}; prepare it with: hgbench data mpii {data_dir}")
        return _report(verify_images(data_dir, workers=args.workers), data_dir, None)
    if images.is_dir():
        report = verify_images(data_dir, use_marker=True, workers=args.workers)
        return _report(report, data_dir, args.from_archive)

    archive: Path
    downloaded = False
    url = args.url or MPII_IMAGES_URL
    local = None if args.from_archive is None else args.from_archive.expanduser()
    if local is None and urlparse(url).scheme in ("", "file"):
        local = Path(urlparse(url).path if urlparse(url).scheme == "file" else url).expanduser()
    if local is not None:
        archive = local
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        archive = data_dir / MPII_ARCHIVE_NAME
        if not archive.is_file():
            resuming = partial_path(archive).is_file()
            print(f"hgbench: {'resuming' if resuming else 'downloading'} {url}", file=sys.stderr)
            download(url, archive, expected_bytes=MPII_ARCHIVE_BYTES, room_to_extract=True)
            downloaded = True
    extract_images(archive, data_dir)
    print(f"hgbench: extracted {archive.name} into {images}", file=sys.stderr)
    report = verify_images(data_dir, workers=args.workers)
    if report.ok and (downloaded or archive.parent == data_dir and local is None) and not args.keep_archive:
        archive.unlink(missing_ok=True)
        print(f"hgbench: deleted {archive} (--keep-archive keeps it)", file=sys.stderr)
    return _report(report, data_dir, None if local is None and not args.keep_archive else archive)
