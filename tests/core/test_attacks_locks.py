"""Attacks on leukaug through concurrent runs on one folder,
as a hostile or careless user would make them (issue 13).

Every test here is one attack, named after it, on tiny data; each must end in a
`LeukaugError` naming the culprit (exit status 2 through the CLI), never a traceback,
a silent acceptance or a hang. The fixtures at the top build the attack material and are
meant to be reused by new tests.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from cli_tools import attack_study, output, run_cli, squeeze, train_args

HOLD_LOCKS = """
import contextlib, sys
from leukaug.core.lock import folder_lock

with contextlib.ExitStack() as stack:
    for folder in sys.argv[1:]:
        stack.enter_context(folder_lock(folder))
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture(scope="module")
def held_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(pid, root): another process holds the locks of root/study, root/arm, root/study/arms/a-s0."""
    root = tmp_path_factory.mktemp("held")
    folders = [root / "study", root / "arm", root / "study" / "arms" / "a-s0"]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCKS, *map(str, folders)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    yield holder.pid, root
    holder.communicate("", timeout=60)


@pytest.mark.slow
def test_a_second_run_on_a_locked_study_folder_is_refused(
    held_folders: tuple[int, Path],
    tmp_path: Path,
    attack_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    pid, root = held_folders
    study = attack_study(tmp_path, attack_data)
    assert run_cli(monkeypatch, "run", str(study), "--out", str(root / "study")) == 2
    _, err = output(capsys)
    assert f"{squeeze(root / 'study')}isinuse" in err
    assert f"pid{pid}onhost{socket.gethostname()}" in err and "command:" in err
    assert not (tmp_path / "cache").exists() and not (root / "study" / "study.toml").exists()


@pytest.mark.slow
def test_train_into_a_locked_arm_folder_is_refused(
    held_folders: tuple[int, Path],
    tiny_cnmc: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    pid, root = held_folders
    assert run_cli(monkeypatch, *train_args(tiny_cnmc, root / "arm", tmp_path / "cache")) == 2
    _, err = output(capsys)
    assert f"pid{pid}onhost" in err and not (root / "arm" / "arm.json").exists()


@pytest.mark.slow
def test_an_arm_worker_leaves_a_locked_arm_folder_alone(
    held_folders: tuple[int, Path], tiny_manifest: pd.DataFrame, tmp_path: Path
) -> None:
    from leukaug.arm.context import RunSettings
    from leukaug.arm.spec import ArmSpec
    from leukaug.study.jobs import ArmJob, StudyArm

    pid, root = held_folders
    arm_dir = root / "study" / "arms" / "a-s0"
    (arm_dir / ".arm.json.x.tmp").write_text("the holder's write in progress")
    job = ArmJob(root / "study", tiny_manifest, tmp_path / "cache", RunSettings("cpu", threads=1))
    outcome = job.run(StudyArm("a-s0", "a", ArmSpec(model="resnet18", image_size=32), 32))
    assert (
        outcome.failed and outcome.error_type == "FolderLocked" and f"pid {pid}" in outcome.message
    )
    assert (arm_dir / ".arm.json.x.tmp").exists() and not (arm_dir / "error.json").exists()
