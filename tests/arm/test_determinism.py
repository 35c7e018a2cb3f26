"""Same numbers whatever the machine is doing: explicit thread counts (recorded per arm,
applied by every executor), CUDA's deterministic switch, and a study run next to a CPU hog."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from leukaug.arm import determinism
from leukaug.arm.batches import SplitImages, make_pipeline, training_batches
from leukaug.core import atomic
from leukaug.core.errors import ConfigError
from leukaug.study.run import run_study
from leukaug.study.study_file import read_study_file
from study_fixtures import TINY_ARMS, write_tiny_study


@pytest.fixture
def restore_torch_settings() -> Iterator[None]:
    """Whatever a test sets, the next test starts from this process's settings."""
    threads = torch.get_num_threads()
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    algorithms = torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags
    torch.use_deterministic_algorithms(algorithms)


def tiny_study(tmp_path: Path, executor: str = "", **settings) -> Path:
    """The shared tiny study, with extra lines appended to its [executor] table."""
    study = write_tiny_study(
        tmp_path, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", **settings
    )
    study.write_text(study.read_text(encoding="utf-8") + executor, encoding="utf-8")
    return study


# --------------------------------------------------------------------------- threads


@pytest.mark.usefixtures("restore_torch_settings")
def test_configure_threads_applies_the_count_and_refuses_a_bad_one() -> None:
    assert determinism.configure_threads(1) == 1
    assert torch.get_num_threads() == 1
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ConfigError, match=r"executor\.threads"):
            determinism.configure_threads(bad)  # type: ignore[arg-type]


@pytest.mark.usefixtures("restore_torch_settings")
def test_batch_preparation_thread_runs_with_the_callers_count() -> None:
    seen: list[int] = []

    def record_threads(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return x

    split = SplitImages(np.zeros((4, 8, 8, 3), np.uint8), np.arange(4), np.array([0, 1, 0, 1]))
    pipeline = make_pipeline(torch.device("cpu"), (0.0,) * 3, (1.0,) * 3)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    batches = training_batches(split, np.arange(4), 2, pipeline, record_threads, generator)
    assert len(list(batches)) == 2
    assert seen == [1, 1]


@pytest.mark.usefixtures("restore_torch_settings")
def test_an_interrupted_arm_resumes_with_the_thread_count_it_started_with(
    tmp_path: Path,
) -> None:
    record = {"status": "running", "execution": {"threads": 1, "deterministic": False}}
    atomic.write_json(tmp_path / "arm.json", record)
    torch.set_num_threads(2)
    determinism.apply_execution(tmp_path, 2, False)
    assert torch.get_num_threads() == 1
    atomic.write_json(tmp_path / "arm.json", record | {"status": "complete"})
    determinism.apply_execution(tmp_path, 2, False)
    assert torch.get_num_threads() == 2
    determinism.apply_execution(tmp_path / "absent", None, False)
    assert torch.get_num_threads() == 2


@pytest.mark.slow
@pytest.mark.usefixtures("restore_torch_settings")
def test_study_threads_are_applied_and_recorded_in_every_arm(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    study = tiny_study(tmp_path, "threads = 1\n")
    result = run_study(read_study_file(study), tmp_path / "out")
    assert not result.failed
    for name in TINY_ARMS:
        arm = json.loads((tmp_path / "out" / "arms" / f"{name}-s0" / "arm.json").read_text())
        assert arm["execution"] == {
            "threads": 1,
            "deterministic": False,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }
    resolved = tomllib.loads((tmp_path / "out" / "study.toml").read_text(encoding="utf-8"))
    assert resolved["executor"]["threads"] == 1
    # the arm's count applied only while it ran: the calling process keeps its own
    assert torch.get_num_threads() == 2


def test_a_study_without_threads_records_this_machines_count(tmp_path: Path) -> None:
    config = read_study_file(tiny_study(tmp_path))
    assert config.executor.threads is None
    assert determinism.resolve_threads(config.executor.threads) == torch.get_num_threads()
    pinned = read_study_file(tiny_study(tmp_path, "threads = 3\n"))
    assert determinism.resolve_threads(pinned.executor.threads) == 3
    with pytest.raises(ConfigError, match="threads"):
        read_study_file(tiny_study(tmp_path, "threads = 0\n"))


def test_a_resumed_study_keeps_the_count_its_folder_recorded(tmp_path: Path) -> None:
    resolved = tmp_path / "study.toml"
    resolved.write_text("[executor]\nthreads = 7\n", encoding="utf-8")
    assert determinism.resolve_threads(None, resolved) == 7
    assert determinism.resolve_threads(3, resolved) == 3
    resolved.write_text("not toml [", encoding="utf-8")
    assert determinism.resolve_threads(None, resolved) == torch.get_num_threads()
    assert determinism.resolve_threads(None, tmp_path / "absent.toml") == torch.get_num_threads()


# --------------------------------------------------------------------------- CUDA


@pytest.mark.usefixtures("restore_torch_settings")
def test_deterministic_switch_sets_and_clears_the_cuda_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    torch.backends.cudnn.benchmark = True
    determinism.configure_deterministic(True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == determinism.CUBLAS_WORKSPACE
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert torch.are_deterministic_algorithms_enabled()
    assert determinism.execution_record()["deterministic"] is True
    determinism.configure_deterministic(False)
    assert not torch.backends.cudnn.deterministic
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.usefixtures("restore_torch_settings")
def test_deterministic_switch_refuses_a_conflicting_cublas_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    with pytest.raises(ConfigError, match="CUBLAS_WORKSPACE_CONFIG"):
        determinism.configure_deterministic(True)
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_is_a_study_setting(tmp_path: Path) -> None:
    assert not read_study_file(tiny_study(tmp_path)).executor.deterministic
    config = read_study_file(tiny_study(tmp_path, "deterministic = true\n"))
    assert config.executor.deterministic


# --------------------------------------------------------------------------- under load


def leukaug_run(study: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "leukaug", "run", str(study), "--out", str(out)]


HOG = """
import multiprocessing, os
def spin():
    while True:
        pass
for _ in range(os.cpu_count()):
    multiprocessing.Process(target=spin).start()
"""


@pytest.fixture
def cpu_hog() -> Iterator[None]:
    """Busy loops on every CPU in a process group of their own, stopped after the test."""
    hog = subprocess.Popen([sys.executable, "-c", HOG], start_new_session=True)
    yield
    os.killpg(hog.pid, signal.SIGKILL)
    hog.wait(timeout=30)


def results(out: Path, name: str) -> tuple[bytes, bytes]:
    arm = out / "arms" / f"{name}-s0"
    return (arm / "predictions.csv").read_bytes(), (arm / "metrics.json").read_bytes()


def one_cpu() -> None:
    """Runs in the child before leukaug starts: only CPU 0 (as taskset, a cgroup or a batch
    scheduler may allow), so a count chosen at run time would be 1."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


@pytest.mark.slow
def test_a_study_next_to_a_cpu_hog_gives_byte_identical_predictions(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Quiet, then with every CPU busy: plain, on one allowed CPU, and killed mid-arm then
    resumed. The study pins its thread count, so all four give the same bytes."""
    study = tiny_study(tmp_path, "threads = 2\n", epochs=3, cells=10)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    runs = {name: tmp_path / name for name in ("quiet", "busy", "one_cpu", "killed")}
    subprocess.run(leukaug_run(study, runs["quiet"]), check=True, env=env, capture_output=True)

    request.getfixturevalue("cpu_hog")
    subprocess.run(leukaug_run(study, runs["busy"]), check=True, env=env, capture_output=True)
    subprocess.run(
        leukaug_run(study, runs["one_cpu"]),
        check=True, env=env, capture_output=True, preexec_fn=one_cpu,
    )  # fmt: skip
    log = (tmp_path / "killed.log").open("wb")
    process = subprocess.Popen(leukaug_run(study, runs["killed"]), env=env, stdout=log, stderr=log)
    history = runs["killed"] / "arms" / f"{TINY_ARMS[1]}-s0" / "history.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if history.is_file() and len(pd.read_csv(history)) >= 1:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait(timeout=60)
    log.close()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
    subprocess.run(leukaug_run(study, runs["killed"]), check=True, env=env, capture_output=True)

    for name in TINY_ARMS:
        expected = results(runs["quiet"], name)
        for run in ("busy", "one_cpu", "killed"):
            assert results(runs[run], name) == expected, f"{name}: {run} differs from quiet"
