"""One writer per folder: a lock on a study folder (`leukaug run`) or an arm folder (a Ray
worker, `leukaug train`), so two runs never write into the same results.

The lock is `fcntl.flock` on `<folder>/.lock`, which the kernel releases when its holder
exits, however it exits (SIGKILL included). Beside it, `<folder>/.lock.json` records who
holds it (pid, host, start time, command; written atomically), so a refused run can say
whom it waits for. A record left by a process that died without cleaning up (same host,
its pid gone, or the lock free although the pid was reused) is stale and is taken over. A
record from another host whose lock is free (storage whose locks do not reach across
machines) cannot be judged from here: it is refused, with the file to delete.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shlex
import shutil
import socket
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from leukaug.core import atomic
from leukaug.core.errors import DataError, LeukaugError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
HOLDER_FILE = ".lock.json"


class FolderLocked(LeukaugError):
    """Another run holds the folder's lock."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock (the JSON record beside the lock file)."""

    pid: int
    host: str
    started_at: str
    command: str

    @classmethod
    def this_process(cls) -> Holder:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            command=shlex.join(sys.argv),
        )

    @classmethod
    def from_dict(cls, record: Any) -> Holder | None:
        """The holder in a record, or None when the record is not one (hand-edited, foreign)."""
        try:
            return cls(int(record["pid"]), str(record["host"]), str(record["started_at"]),
                       str(record["command"]))  # fmt: skip
        except (TypeError, KeyError, ValueError):
            return None

    def describe(self) -> str:
        return (
            f"pid {self.pid} on host {self.host}, started {self.started_at}, "
            f"command: {self.command}"
        )

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self) -> bool:
        """The pid runs on this host (only meaningful when `on_this_host()`)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process
            return True
        return True


def lock_path(folder: Path) -> Path:
    return Path(folder) / LOCK_FILE


def holder_path(folder: Path) -> Path:
    return Path(folder) / HOLDER_FILE


def read_holder(folder: Path) -> Holder | None:
    """The recorded holder of `folder`'s lock, or None when there is no readable record."""
    try:
        record = atomic.read_json(holder_path(folder))
    except (DataError, ValueError, OSError):  # not JSON, not UTF-8, unreadable
        return None
    return Holder.from_dict(record) if record is not None else None


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], what: str = "folder") -> Iterator[Holder]:
    """Hold `folder`'s lock for the block (the folder is created, and removed again if the
    block left it empty); released on exit and on exceptions. Raises `FolderLocked`,
    naming the holder, when another run holds it. `what` names the folder in messages
    ("study folder", "arm folder")."""
    folder = Path(folder).resolve()
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    handle = _acquire(folder, what)
    me = Holder.this_process()
    try:
        _check_record(folder, what, me)
        atomic.write_json(holder_path(folder), asdict(me))
        try:
            yield me
        finally:
            holder_path(folder).unlink(missing_ok=True)
            lock_path(folder).unlink(missing_ok=True)  # new lockers reopen the path (see _acquire)
    finally:
        os.close(handle)
        _remove_if_empty(created)


def clear_locked_folder(folder: str | os.PathLike[str]) -> None:
    """Delete everything in `folder`, whose lock this process holds, except the lock."""
    for path in Path(folder).iterdir():
        if path.name in (LOCK_FILE, HOLDER_FILE):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _remove_if_empty(created: list[Path]) -> None:
    """The folders the lock created, when the locked run left nothing in them."""
    for path in created:
        try:
            path.rmdir()
        except OSError:  # not empty (results), or gone
            return


def _acquire(folder: Path, what: str) -> int:
    """A descriptor of `<folder>/.lock` holding its exclusive flock."""
    path = lock_path(folder)
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise FolderLocked(_held_message(folder, what, read_holder(folder))) from None
        except OSError as error:
            os.close(handle)
            if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise DataError(
                    f"cannot lock {path}: the file system does not support locks ({error}); "
                    "put the study folder on a local disk or a file system with locking."
                ) from None
            raise
        # The holder before us may have deleted the file between our open and our flock;
        # then we locked a file nobody else will see: open the path again.
        try:
            if os.stat(path).st_ino == os.fstat(handle).st_ino:
                return handle
        except FileNotFoundError:
            pass
        os.close(handle)


def _check_record(folder: Path, what: str, me: Holder) -> None:
    """With the flock held: refuse a live holder on another host; take over a stale record."""
    previous = read_holder(folder)
    if previous is None or (previous.pid == me.pid and previous.on_this_host()):
        return
    if not previous.on_this_host():
        raise FolderLocked(
            _held_message(folder, what, previous)
            + f" If that run is over (its machine stopped), delete {holder_path(folder)}."
        )
    state = "is gone" if not previous.alive() else "no longer holds the lock"
    log.warning(
        "Taking over the stale lock of %s: process %d %s (%s).",
        folder,
        previous.pid,
        state,
        previous.describe(),
    )


def _held_message(folder: Path, what: str, holder: Holder | None) -> str:
    who = holder.describe() if holder is not None else "a process that has not yet said who"
    return (
        f"{folder} is in use: another leukaug run holds this {what}'s lock ({who}). "
        "Wait for it to finish, or stop it, then run again; or choose another folder."
    )
