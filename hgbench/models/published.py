"""Published weights by name (``anibali:hg1|hg2|hg8``): where they live, fetched once into torch.hub's cache, checked.

The names are anibali/pytorch-stacked-hourglass's release files (its package's ``model_urls``). Their file names end
in the first 8 hex digits of the file's SHA-256, torch.hub's convention, so a download is checked against it
(`torch.hub.download_url_to_file` with ``hash_prefix``: a file that does not match is removed, never left in the
cache). The cache is torch.hub's (``$TORCH_HOME/hub/checkpoints``), so a file anibali's package or torchvision
already fetched is reused, and a cached file is never fetched again. The file is *not* unpickled here: the caller
reads it with the project's weights reader (`hgbench.models.weights.read_weights`), which loads weights only.

Offline: anything that is not a known name is a path; no network gives one line naming the URL and the file to put
in the cache by hand.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from hgbench.errors import HGBenchError, one_line

RELEASE_URL = "https://github.com/anibali/pytorch-stacked-hourglass/releases/download/v0.0.0/"


@dataclass(frozen=True)
class PublishedWeights:
    """One published weights file and the network (registry case) it fills."""

    name: str  # "anibali:hg2"
    case: str  # the registry case whose network the file fits: "hg2"
    url: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str:
        """The SHA-256 prefix the file name carries (``bearpaw_hg2-15e342d9.pth`` -> ``15e342d9``)."""
        return self.filename.rsplit("-", 1)[-1].split(".", 1)[0]


PUBLISHED: dict[str, PublishedWeights] = {
    f"anibali:{case}": PublishedWeights(f"anibali:{case}", case, RELEASE_URL + f"bearpaw_{case}-{digest}.pth")
    for case, digest in (("hg1", "ce125879"), ("hg2", "15e342d9"), ("hg8", "90e5d470"))
}

# anibali's README, "Evaluation on the MPII validation set": hg2 with its own evaluation script (flip test).
PUBLISHED_PCKH: dict[str, dict[str, float]] = {
    "anibali:hg2": {
        "Head": 96.15,
        "Shoulder": 94.89,
        "Elbow": 88.14,
        "Wrist": 83.78,
        "Hip": 87.43,
        "Knee": 82.19,
        "Ankle": 77.87,
        "Mean": 87.33,
    },
}


def is_published_name(ref: str | Path) -> bool:
    """True for a ``publisher:name`` reference (a known one or not); a path never has a colon before a slash
    except a Windows drive letter, which is one character."""
    text = str(ref)
    head, sep, _ = text.partition(":")
    return bool(sep) and len(head) > 1 and "/" not in head and "\\" not in head


def lookup(name: str) -> PublishedWeights:
    """The published entry of `name`.

    Raises:
        HGBenchError: an unknown name (the message lists the known ones).
    """
    try:
        return PUBLISHED[name]
    except KeyError:
        raise HGBenchError(f"unknown published weights {name!r}; known: {', '.join(PUBLISHED)}") from None


def cache_dir() -> Path:
    """torch.hub's checkpoint cache: ``$TORCH_HOME/hub/checkpoints`` (read now, so TORCH_HOME set later counts)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_path(entry: PublishedWeights) -> Path:
    return cache_dir() / entry.filename


def sha256_prefix_matches(path: Path, prefix: str) -> bool:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest().startswith(prefix)


def fetch(entry: PublishedWeights, *, progress: bool | None = None) -> Path:
    """The local file of a published entry: the cached copy, else downloaded into the cache and hash-checked.

    Args:
        progress: show torch.hub's download bar; default: when stderr is a terminal.

    Raises:
        HGBenchError: no network or the server refused (one line: the URL and where to put the file), a download
            that does not match its SHA-256 prefix (removed), or a cached file that does not match (left for the
            user to delete: hgbench never deletes a file it did not write in this call).
    """
    import torch.hub

    path = cached_path(entry)
    if path.is_file():
        if not sha256_prefix_matches(path, entry.hash_prefix):
            raise HGBenchError(
                f"cached weights {path} do not match their SHA-256 prefix {entry.hash_prefix} (a damaged or "
                "different file); delete it and run again"
            )
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if progress is None else progress
    if show:
        print(f"hgbench: downloading {entry.name} from {entry.url} to {path}", file=sys.stderr)
    try:
        torch.hub.download_url_to_file(entry.url, os.fspath(path), hash_prefix=entry.hash_prefix, progress=show)
    except RuntimeError as exc:  # torch.hub's hash check; it has already removed its temporary file
        if "invalid hash value" in str(exc):
            raise HGBenchError(
                f"{entry.url} did not match its SHA-256 prefix {entry.hash_prefix}; the file was not kept"
            ) from None
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:  # offline, refused, DNS, HTTP errors, disk
        raise HGBenchError(
            f"cannot download {entry.name} from {entry.url} ({one_line(exc)}); without network, fetch that file "
            f"elsewhere and put it at {path}, or pass its path instead of the name"
        ) from None
    return path


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights reference made local: the file, and the case a published name fills (None for a plain path)."""

    path: Path
    case: str | None
    name: str | None  # the published name, when one was given


def resolve(ref: str | Path, *, progress: bool | None = None) -> ResolvedWeights:
    """A ``--weights`` / ``--init-from`` / ``checkpoint=`` value made local: a published name is fetched (or found in
    the cache), anything else is a path, returned as it is (its reader reports a missing file).

    Raises:
        HGBenchError: an unknown published name, or a failed fetch (see `fetch`).
    """
    if isinstance(ref, str) and is_published_name(ref) and not Path(ref).exists():
        entry = lookup(ref)
        return ResolvedWeights(fetch(entry, progress=progress), entry.case, entry.name)
    return ResolvedWeights(Path(ref), None, None)


def identify(path: str | Path) -> str | None:
    """The published name of a local file, told by its SHA-256 prefix (a copy of ``bearpaw_hg2-15e342d9.pth`` under
    any name is ``anibali:hg2``); None for any other file."""
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    hexdigest = digest.hexdigest()
    return next((e.name for e in PUBLISHED.values() if hexdigest.startswith(e.hash_prefix)), None)
