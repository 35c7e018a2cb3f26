"""Attacks through the storage (issue 22): a full disk, a quota, a read-only folder. Every
write goes through `leukaug.core.atomic.atomic_path`, which turns ENOSPC, EDQUOT, EROFS
and EACCES into a `StorageError` naming the folder and the space needed; the old file
stays, no temporary file is left."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from leukaug.core import atomic
from leukaug.core.errors import LeukaugError, StorageError


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root only; skipped where mounting is not permitted)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
        capture_output=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_is_a_storage_error_naming_the_folder_and_the_space(tiny_disk: Path) -> None:
    atomic.write_text(tiny_disk / "results.json", "old\n")
    with pytest.raises(StorageError) as caught:
        atomic.write_bytes(tiny_disk / "results.json", b"x" * 200_000)
    message = str(caught.value)
    assert isinstance(caught.value, LeukaugError)  # the CLI: message, exit status 2
    assert f"{tiny_disk} has" in message and "needs at least 195.3 KiB" in message
    assert "free space there" in message and "rerun the same command" in message
    assert (tiny_disk / "results.json").read_text() == "old\n"  # nothing half-written
    assert [p.name for p in tiny_disk.iterdir()] == ["results.json"]  # no temporary file


def test_a_full_disk_during_a_torch_save_is_a_storage_error(tiny_disk: Path) -> None:
    """torch's own writer reports a full disk as "unexpected pos"; the checkpoint writer
    writes through a Python file, so it is an ENOSPC like any other write."""
    import torch

    from leukaug.arm.checkpoints import torch_save

    with pytest.raises(StorageError, match=r"checkpoint.pt: No space left on device"):
        torch_save(tiny_disk / "checkpoint.pt", {"model": {"w": torch.zeros(100_000)}})
    assert list(tiny_disk.iterdir()) == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENOSPC, "No space left on device"),
        (errno.EDQUOT, "quota"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "not writable"),
    ],
)
@pytest.mark.parametrize("point", ["mkstemp", "fsync", "replace"])
def test_each_storage_errno_at_each_point_of_a_write_is_a_storage_error(
    code: int, expected: str, point: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out" / "metrics.json"
    atomic.write_json(target, {"old": True})
    failing = {"mkstemp": (atomic.tempfile, "mkstemp"), "fsync": (os, "fsync"),
               "replace": (os, "replace")}[point]  # fmt: skip

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(*failing, refuse)
    with pytest.raises(StorageError, match=expected) as caught:
        atomic.write_json(target, {"new": True})
    monkeypatch.undo()
    assert str(target.parent) in str(caught.value)
    assert atomic.read_json(target) == {"old": True}
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_other_os_errors_are_not_storage_errors(tmp_path: Path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="Input/output") as caught:
        atomic.write_text(tmp_path / "a.txt", "a")
    assert not isinstance(caught.value, StorageError)
