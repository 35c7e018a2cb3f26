"""Images already checked: each image's file identity (size, modification and change times,
inode) when it last passed the header and full-decode checks, what the checks found (its
mode, its size, a suffix naming another format) and the digest of its bytes (the image
cache's key, data/cache.py).

`read_dataset` checks again only the images whose identity changed, so rerunning a
finished study does not decode the whole data set again, while an edited, replaced,
truncated or re-permissioned file (each changes its change time) is checked as if new.
The record is only a shortcut: a missing, unreadable or stale record means every image is
checked again. It lives in the cache folder, one file per data root and pixel limit, and
is written atomically after a read in which every image passed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from leukaug.core import atomic
from leukaug.core.errors import DataError, StorageError

log = logging.getLogger(__name__)

RECORD_FORMAT = 2
Identity = list[int]


@dataclass(frozen=True)
class ImageFacts:
    """What the full check of one image found."""

    mode: str  # the file's original mode (RGB, L, I;16, ...)
    size: str  # "WxH"
    misnamed: str | None  # the real format when the suffix names another, else None
    digest: str  # BLAKE2b of the file's bytes (`data.cache.file_digest`)


def record_path(cache_dir: Path, root: Path, max_pixels: int) -> Path:
    """The record for images under `root` checked against `max_pixels`."""
    key = hashlib.blake2b(f"{root}\0{max_pixels}".encode(), digest_size=10).hexdigest()
    return cache_dir / "checked" / f"{key}.json"


def identity(path: str) -> Identity | None:
    """(size, mtime_ns, ctime_ns, inode) of `path`, or None when it cannot be read."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return [found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino]


def read_record(
    record: Path, paths: list[str]
) -> tuple[dict[str, ImageFacts], dict[str, Identity | None]]:
    """(facts of the images unchanged since they passed, every image's identity now).

    Identities are taken before any image is checked, so a file changed during the check
    is recorded with the older identity and checked again next time."""
    identities = {path: identity(path) for path in paths}
    try:
        data = atomic.read_json(record)
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            return {}, identities
        images = data["images"]
        facts = {
            path: ImageFacts(entry["mode"], entry["size"], entry["misnamed"], entry["digest"])
            for path in paths
            if (entry := images.get(path)) is not None
            and identities[path] is not None
            and entry["identity"] == identities[path]
        }
    except (DataError, OSError, KeyError, TypeError, AttributeError) as error:
        log.info("ignoring the record of checked images %s (%s)", record, error)
        return {}, identities
    return facts, identities


def write_record(
    record: Path, identities: dict[str, Identity | None], facts: dict[str, ImageFacts]
) -> None:
    """Remember every image that passed; a record that cannot be written is only logged
    (the images are then checked again next time)."""
    images = {
        path: {
            "identity": found,
            "mode": facts[path].mode,
            "size": facts[path].size,
            "misnamed": facts[path].misnamed,
            "digest": facts[path].digest,
        }
        for path, found in identities.items()
        if found is not None and path in facts
    }
    text = json.dumps({"format": RECORD_FORMAT, "images": images}, separators=(",", ":"))
    try:
        atomic.write_text(record, text)
    except (OSError, StorageError) as error:
        log.warning(
            "could not write %s (%s); every image will be checked again next time", record, error
        )
