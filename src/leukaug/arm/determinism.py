"""How an arm's numbers stay the same from run to run: a fixed CPU thread count, and on
CUDA, when asked for, deterministic kernels.

On the CPU a result depends on how many threads an operation is split over: a reduction
adds per-thread partial sums, and MKL and oneDNN choose their blocking per thread count.
The default count is picked at run time (the CPUs this process may use when it starts;
MKL's own default is the physical cores, and without an explicit count MKL may also
choose fewer threads per call, MKL_DYNAMIC). So one study gave other numbers locally
(default threads) and on Ray (one thread per task), and on the 2-core development
machine the same arm started under `taskset -c 0` (as a busy machine's scheduler, a
container or a batch system may start it) ran on 1 thread and its predictions moved in
the 6th digit; busy loops on both cores alone did not change a byte. So every executor
applies one explicit count per arm, in the process that runs it (`apply_execution`),
`arm.json` records it (`execution_record`), and an interrupted arm resumes with the
count it started with.

On CUDA `deterministic = true` selects deterministic cuDNN and cuBLAS kernels
(`torch.use_deterministic_algorithms`; cuBLAS needs CUBLAS_WORKSPACE_CONFIG set before
its first call). It costs speed; an operation without a deterministic kernel raises.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from leukaug.core import atomic
from leukaug.core.errors import ConfigError
from leukaug.core.layout import RESUMABLE_STATUSES

# cuBLAS's documented setting for reproducible results (8 workspaces of 4096 KiB):
# https://docs.nvidia.com/cuda/cublas/index.html#results-reproducibility
CUBLAS_WORKSPACE = ":4096:8"
CUBLAS_WORKSPACE_SETTINGS = (":4096:8", ":16:8")


def configure_threads(threads: int) -> int:
    """Use `threads` intra-op threads from now on in this thread (torch, OpenMP and MKL,
    MKL_DYNAMIC off); torch gives threads started later the same count."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"executor.threads must be an integer >= 1, got {threads!r}.")
    torch.set_num_threads(threads)
    return threads


def configure_deterministic(enabled: bool) -> None:
    """Deterministic CUDA kernels on (cuDNN, cuBLAS workspace, torch's deterministic
    algorithms) or off (torch's defaults). The CPU is deterministic either way."""
    if enabled:
        workspace = os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        if workspace not in CUBLAS_WORKSPACE_SETTINGS:
            raise ConfigError(
                f"deterministic = true needs CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE} "
                f"(or :16:8), but the environment sets {workspace!r}; unset it."
            )
        torch.backends.cudnn.benchmark = False  # autotuning picks kernels by their timing
    torch.backends.cudnn.deterministic = enabled
    torch.use_deterministic_algorithms(enabled)


def resolve_threads(threads: int | None, study_toml: Path | None = None) -> int:
    """A study's thread count, for its resolved study file: the study file's own, else the
    count recorded in the study folder's resolved `study_toml` (a resumed study keeps its
    count), else this process's count."""
    if threads is not None:
        return threads
    return _folder_threads(study_toml) or torch.get_num_threads()


def _folder_threads(study_toml: Path | None) -> int | None:
    try:
        resolved = tomllib.loads(Path(study_toml).read_text(encoding="utf-8")) if study_toml else {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None  # no readable resolved file: a new study (the study checks the folder)
    executor = resolved.get("executor")
    threads = executor.get("threads") if isinstance(executor, dict) else None
    return threads if isinstance(threads, int) and threads >= 1 else None


def recorded_threads(arm_dir: Path) -> int | None:
    """The thread count an interrupted arm started with (from its arm.json), else None."""
    record = atomic.read_json(Path(arm_dir) / "arm.json") or {}
    if record.get("status") not in RESUMABLE_STATUSES:
        return None
    threads = (record.get("execution") or {}).get("threads")
    return threads if isinstance(threads, int) and threads >= 1 else None


def apply_execution(arm_dir: Path, threads: int | None, deterministic: bool) -> None:
    """Apply an arm's execution settings in the process that runs it; an interrupted arm
    resumes with its recorded thread count, so the resumed run ends bit-identical.
    `threads=None` keeps the process's count."""
    threads = recorded_threads(arm_dir) or threads
    if threads is not None:
        configure_threads(threads)
    configure_deterministic(deterministic)


@contextlib.contextmanager
def arm_execution(arm_dir: Path, threads: int | None, deterministic: bool) -> Iterator[None]:
    """`apply_execution` for the duration of one arm, then this process's own settings
    again: running a study in-process (the local executor, a notebook) leaves torch's
    thread count and deterministic switches as it found them."""
    before = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    try:
        apply_execution(arm_dir, threads, deterministic)
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2:]


def execution_record() -> dict[str, Any]:
    """What `arm.json` records under "execution": the settings the arm runs with, and the
    CPU kernels' instruction set ("AVX512", "AVX2", ...): another one rounds differently, so
    the same study and thread count give other numbers on a CPU that reports another."""
    return {
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
