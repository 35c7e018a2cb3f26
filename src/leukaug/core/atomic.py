"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A crash at any point leaves either the old file or the new one, never a half-written file.
Torch files go through `atomic_path` where they are written (`leukaug.arm.checkpoints`), so
this module imports no torch.

Every write of the package goes through `atomic_path`, which turns a full disk, a quota, a
read-only file system or a refused permission (ENOSPC, EDQUOT, EROFS, EACCES) into a
`StorageError` naming the folder, its free space and the space the write needed; the
temporary file is removed, so the target is still the old file (or absent).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from leukaug.core.errors import DataError, StorageError

# OS errors a user fixes by freeing space or choosing another folder (not a bug, not the data).
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def human_bytes(size: float) -> str:
    """1536 -> '1.5 KiB' (free space and sizes in messages)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover


def free_bytes(folder: str | os.PathLike[str]) -> int | None:
    """Free space (bytes) for an unprivileged user on the file system holding `folder`
    (or the nearest folder above it that exists); None when it cannot be read."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return None


def storage_error(path: Path, error: OSError, needed: int | None) -> StorageError:
    """The `StorageError` for a write of `path` that failed with `error` (a STORAGE_ERRNOS)."""
    folder = path.parent
    reason = error.strerror or os.strerror(error.errno or 0)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(folder)
        have = "unknown free space" if free is None else f"{human_bytes(free)} free"
        need = f"at least {human_bytes(needed)}" if needed else "more space"
        fix = (
            f"the write needs {need} (a study also needs room for its image cache and "
            "checkpoints). Fix: free space there (or raise the quota, or choose another "
            "folder), then rerun the same command: it resumes where it stopped."
        )
        return StorageError(f"cannot write {path}: {reason}; {folder} has {have}, {fix}")
    return StorageError(
        f"cannot write {path}: {reason} ({folder} is read-only or not writable for this "
        "user). Fix: make it writable or choose another folder, then rerun the same command."
    )


def _written(tmp: Path) -> int:
    try:
        return tmp.stat().st_size
    except OSError:
        return 0


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], size_hint: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path`.

    ENOSPC, EDQUOT, EROFS, EACCES (and EPERM) raised here or in the block become a
    `StorageError` naming the folder; `size_hint` (bytes, when known) is the space it needs.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp: 0600; results are meant to be shared
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        if error.errno not in STORAGE_ERRNOS:
            raise
        needed = size_hint or (_written(tmp) if tmp is not None else None)
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()  # frees the space the partial write took
        raise storage_error(path, error, needed) from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def os_errors_unwrapped() -> Iterator[None]:
    """A C++ writer (torch.save, torch.jit.save) writing to a Python file wraps the file's
    OSError (ENOSPC) in its own RuntimeError ("unexpected pos"); take the OSError out again,
    so `atomic_path` names it."""
    try:
        yield
    except RuntimeError as error:
        if isinstance(error.__context__, OSError):
            raise error.__context__ from None
        raise


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str], mode: str = "w", size_hint: int | None = None, **kwargs: Any
) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces `path` only if the block succeeds."""
    with atomic_path(path, size_hint) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def write_text(path: str | os.PathLike[str], text: str) -> None:
    data = text.encode("utf-8")
    write_bytes(path, data)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb", size_hint=len(data)) as handle:
        handle.write(data)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """The JSON in `path`, or None when the file does not exist (the reading side of `write_json`)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:  # cannot happen with atomic writes; say so if it does
        raise DataError(f"{path} is not valid JSON ({error}); delete it to start over.") from None


def write_csv(path: str | os.PathLike[str], frame: Any, **kwargs: Any) -> None:
    """Write a pandas DataFrame as CSV atomically (index off unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        frame.to_csv(handle, **kwargs)


def save_figure(path: str | os.PathLike[str], figure: Any, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically; the format follows the file suffix."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip("."))
    with atomic_path(path) as tmp:
        figure.savefig(tmp, **kwargs)
