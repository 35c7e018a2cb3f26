"""The folder lock (`leukaug.core.lock`): one holder at a time, the holder named, stale locks
taken over, released however the block ends."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from leukaug.core.lock import HOLDER_FILE, LOCK_FILE, FolderLocked, Holder, folder_lock, read_holder

HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from leukaug.core.lock import folder_lock

    with folder_lock(sys.argv[1], "study folder"):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes stdin
    """
)


@pytest.fixture
def other_process_holds(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A separate Python process holding tmp_path/study's lock until the test ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "study"), "--tag", "holder-under-test"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    yield holder
    if holder.poll() is None:
        holder.communicate("", timeout=30)


def a_dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.slow  # a second Python process importing torch
def test_a_second_process_is_refused_with_the_holder_named(
    tmp_path: Path, other_process_holds: subprocess.Popen[str]
) -> None:
    study = tmp_path / "study"
    with pytest.raises(FolderLocked) as refused, folder_lock(study, "study folder"):
        pytest.fail("two holders at once")
    message = str(refused.value)
    assert f"{study} is in use" in message and "study folder's lock" in message
    assert f"pid {other_process_holds.pid} on host {socket.gethostname()}" in message
    assert "holder-under-test" in message  # the holder's command line
    holder = read_holder(study)
    assert holder is not None and holder.started_at in message
    assert (study / LOCK_FILE).exists()  # the refused run left the holder's files alone

    other_process_holds.communicate("", timeout=30)  # the holder finishes and releases
    assert not (study / LOCK_FILE).exists() and not (study / HOLDER_FILE).exists()
    with folder_lock(study) as me:
        assert me.pid == os.getpid()


@pytest.mark.slow  # a second Python process importing torch
def test_a_killed_holder_leaves_a_stale_lock_that_is_taken_over(
    tmp_path: Path, other_process_holds: subprocess.Popen[str], caplog: pytest.LogCaptureFixture
) -> None:
    study = tmp_path / "study"
    other_process_holds.send_signal(signal.SIGKILL)
    other_process_holds.wait(timeout=30)
    stale = read_holder(study)
    assert stale is not None and stale.pid == other_process_holds.pid  # nobody cleaned up
    with caplog.at_level(logging.WARNING, logger="leukaug.core.lock"), folder_lock(study) as me:
        assert read_holder(study) == me
    assert f"Taking over the stale lock of {study}: process {stale.pid} is gone" in caplog.text


def test_a_record_of_a_dead_pid_on_this_host_is_stale(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = Holder(a_dead_pid(), socket.gethostname(), "2026-01-01T00:00:00+00:00", "leukaug run")
    tmp_path.joinpath(HOLDER_FILE).write_text(json.dumps(dead.__dict__))
    with caplog.at_level(logging.WARNING, logger="leukaug.core.lock"), folder_lock(tmp_path):
        pass
    assert f"process {dead.pid} is gone" in caplog.text


def test_a_live_pid_that_does_not_hold_the_lock_is_stale(tmp_path: Path) -> None:
    reused = Holder(os.getppid(), socket.gethostname(), "2026-01-01T00:00:00+00:00", "x")
    tmp_path.joinpath(HOLDER_FILE).write_text(json.dumps(reused.__dict__))
    with folder_lock(tmp_path) as me:  # the flock is free: the pid was reused
        assert read_holder(tmp_path) == me


def test_a_record_from_another_host_is_refused_with_the_file_to_delete(tmp_path: Path) -> None:
    remote = Holder(4242, "elsewhere.example", "2026-01-01T00:00:00+00:00", "leukaug run s.toml")
    tmp_path.joinpath(HOLDER_FILE).write_text(json.dumps(remote.__dict__))
    expected = r"pid 4242 on host elsewhere\.example"
    with pytest.raises(FolderLocked, match=expected) as refused, folder_lock(tmp_path):
        pytest.fail("took over a lock whose holder may be alive")
    assert f"delete {tmp_path / HOLDER_FILE}" in str(refused.value)
    assert read_holder(tmp_path) == remote  # left as it was


def test_released_when_the_block_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="arm crashed"), folder_lock(tmp_path / "arm"):
        raise RuntimeError("arm crashed")
    assert not (tmp_path / "arm").exists()  # made for the lock, left empty: removed again
    with folder_lock(tmp_path / "arm" / "deeper") as me:
        (tmp_path / "arm" / "deeper" / "result.csv").write_text("x\n")
        assert read_holder(tmp_path / "arm" / "deeper") == me
    assert os.listdir(tmp_path / "arm" / "deeper") == ["result.csv"]  # results stay, lock goes


def test_one_holder_within_a_process_too(tmp_path: Path) -> None:
    held = rf"arm folder's lock \(pid {os.getpid()} on host"
    with (
        folder_lock(tmp_path, "arm folder"),
        pytest.raises(FolderLocked, match=held),
        folder_lock(tmp_path, "arm folder"),
    ):
        pytest.fail("two holders in one process")
    with folder_lock(tmp_path):
        pass


def test_an_unreadable_record_does_not_block(tmp_path: Path) -> None:
    tmp_path.joinpath(HOLDER_FILE).write_text("{not json")
    with folder_lock(tmp_path) as me:
        assert read_holder(tmp_path) == me
