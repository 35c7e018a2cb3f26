"""How an arm's numbers stay the same from run to run: a fixed CPU thread count, and on
CUDA, when asked for, deterministic kernels.

On the CPU a result depends on how many threads an operation is split over: a reduction
adds per-thread partial sums, and MKL and oneDNN choose their blocking per thread count.
The default count is picked at run time (the CPUs this process may use when it starts;
MKL's own default is the physical cores, and without an explicit count MKL may also
choose fewer threads per call, MKL_DYNAMIC), so the same study gave different numbers
on a busy machine, locally (default threads) and on Ray (one thread per task), in the
7th digit to the 4th. So every executor applies one explicit count per arm, in the
process that runs it (`apply_execution`), `arm.json` records it (`execution_record`),
and an interrupted arm resumes with the count it started with.

On CUDA `deterministic = true` selects deterministic cuDNN and cuBLAS kernels
(`torch.use_deterministic_algorithms`; cuBLAS needs CUBLAS_WORKSPACE_CONFIG set before
its first call). It costs speed; an operation without a deterministic kernel raises.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from leukaug import atomic
from leukaug.errors import ConfigError

if TYPE_CHECKING:
    from leukaug.config import StudyConfig

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


def with_threads(config: StudyConfig) -> StudyConfig:
    """`config` with `executor.threads` filled in (None -> this process's current count),
    so the resolved study file records the count every arm runs with."""
    if config.executor.threads is not None:
        return config
    executor = config.executor.model_copy(update={"threads": torch.get_num_threads()})
    return config.model_copy(update={"executor": executor})


def recorded_threads(arm_dir: Path) -> int | None:
    """The thread count an interrupted arm started with (from its arm.json), else None."""
    record = atomic.read_json(Path(arm_dir) / "arm.json") or {}
    if record.get("status") != "running":
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


def execution_record() -> dict[str, Any]:
    """What `arm.json` records under "execution": the settings the arm runs with."""
    return {
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
