"""Executors: run a study's arms here (`local`) or as Ray tasks (`ray`).

Both keep dependency order (an arm starts only after the arm it is initialised from has
finished; if that one failed, the dependent arm is recorded as failed too), write every
result into the study folder, and apply the same resume rules (they call the same
`ArmJob.run` -> `arm.run_arm`).

On Ray each arm is one task with the declared `num_cpus` / `num_gpus`. Results go straight
into the study folder, so on a multi-node cluster the study folder, the data and the image
cache must be on storage every node sees at the same path. An exception that is not a
`LeukaugError` (out of memory, a lost worker) is retried up to `max_retries` times, and
the retry resumes from the arm's `last.pt`; a `LeukaugError` (NaN loss, missing weights,
bad config) is deterministic and is recorded at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leukaug.errors import ConfigError, LeukaugError, unknown_name_message
from leukaug.study import Arm, ArmJob, ArmOutcome, dependency_failed, write_error

if TYPE_CHECKING:
    from rich.progress import Progress

    from leukaug.config import ExecutorSection
    from leukaug.data.cache import ImageCache

EXECUTORS = ("local", "ray")
RAY_POLL_SECONDS = 1.0

OnArmDone = Callable[[ArmOutcome], None]


def run_arms(
    kind: str,
    arms: Sequence[Arm],
    job: ArmJob,
    *,
    caches: dict[int, ImageCache],
    settings: ExecutorSection,
    address: str | None = None,
    progress: Progress | None = None,
    on_arm_done: OnArmDone | None = None,
) -> list[ArmOutcome]:
    """Run `arms` (already in dependency order) with the named executor."""
    if kind == "local":
        return run_local(arms, job, caches=caches, progress=progress, on_arm_done=on_arm_done)
    if kind == "ray":
        return run_ray(
            arms,
            job,
            address=address if address is not None else settings.address,
            num_cpus=settings.num_cpus,
            num_gpus=settings.num_gpus,
            max_retries=settings.max_retries,
            progress=progress,
            on_arm_done=on_arm_done,
        )
    raise ConfigError(unknown_name_message("executor", kind, EXECUTORS))


def require(kind: str) -> None:
    """Fail early, before any data work, for an unknown executor or a missing Ray."""
    import importlib.util

    if kind not in EXECUTORS:
        raise ConfigError(unknown_name_message("executor", kind, EXECUTORS))
    if kind == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError(
            "executor 'ray' needs Ray: pip install 'leukaug[ray]' (or use --executor local)."
        )


def _blocked(arm: Arm, outcomes: dict[str, ArmOutcome]) -> bool:
    return arm.depends_on is not None and outcomes[arm.depends_on].failed


def run_local(
    arms: Sequence[Arm],
    job: ArmJob,
    *,
    caches: dict[int, ImageCache],
    progress: Progress | None = None,
    on_arm_done: OnArmDone | None = None,
) -> list[ArmOutcome]:
    """One arm after another in this process."""
    outcomes: dict[str, ArmOutcome] = {}
    for arm in arms:
        if _blocked(arm, outcomes):
            outcome = dependency_failed(arm, job.out_dir)
        else:
            outcome = job.run(arm, progress=progress, cache=caches.get(arm.image_size))
        outcomes[arm.arm_id] = outcome
        if on_arm_done is not None:
            on_arm_done(outcome)
    return [outcomes[arm.arm_id] for arm in arms]


class RetryableArmError(RuntimeError):
    """Raised in a Ray worker for a failure worth retrying (not a LeukaugError)."""


def _ray_task(job: ArmJob, arm: Arm, threads: int) -> ArmOutcome:
    """Body of one Ray task: run the arm; raise RetryableArmError so Ray retries."""
    import torch

    torch.set_num_threads(threads)
    try:
        return job.run(arm, reraise=lambda error: not isinstance(error, LeukaugError))
    except Exception as error:
        raise RetryableArmError(f"{type(error).__name__}: {error}") from error


def run_ray(
    arms: Sequence[Arm],
    job: ArmJob,
    *,
    address: str | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    max_retries: int = 2,
    progress: Progress | None = None,
    on_arm_done: OnArmDone | None = None,
) -> list[ArmOutcome]:
    """Each arm a Ray task; an arm is submitted once the arm it starts from has finished.

    Uses the running Ray session if there is one, else connects to `address`, else starts
    a local Ray instance (shut down again at the end).
    """
    require("ray")
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address or None, include_dashboard=False, logging_level="WARNING")
    try:
        task = ray.remote(_ray_task).options(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            max_retries=max_retries,
            retry_exceptions=[RetryableArmError],
        )
        job_ref = ray.put(job)
        threads = max(1, int(num_cpus))
        waiting = list(arms)
        running: dict[Any, Arm] = {}
        outcomes: dict[str, ArmOutcome] = {}
        n_train = int((job.manifest["split"] == "train").sum())
        watch = _EpochWatch(progress, job.out_dir, n_train)

        def finish(outcome: ArmOutcome) -> None:
            outcomes[outcome.arm_id] = outcome
            watch.stop(outcome.arm_id)
            if on_arm_done is not None:
                on_arm_done(outcome)

        while waiting or running:
            for arm in list(waiting):
                if arm.depends_on is not None and arm.depends_on not in outcomes:
                    continue
                waiting.remove(arm)
                if _blocked(arm, outcomes):
                    finish(dependency_failed(arm, job.out_dir))
                else:
                    running[task.remote(job_ref, arm, threads)] = arm
                    watch.start(arm)
            if not running:
                if waiting:  # cannot happen for arms in dependency order; never spin
                    raise ConfigError(
                        f"arm {waiting[0].arm_id!r} waits for an arm not in the study."
                    )
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=RAY_POLL_SECONDS)
            watch.poll()
            for ref in ready:
                arm = running.pop(ref)
                try:
                    finish(ray.get(ref))
                except Exception as error:  # retries exhausted, or the worker died
                    finish(_ray_failure(arm, error, job.out_dir))
        return [outcomes[arm.arm_id] for arm in arms]
    finally:
        if started_here:
            ray.shutdown()


def _ray_failure(arm: Arm, error: Exception, out_dir: Path) -> ArmOutcome:
    """The outcome of a Ray task that raised: keep the worker's error.json if it wrote one."""
    import json

    from leukaug.study import ERROR_FILE

    path = out_dir / "arms" / arm.arm_id / ERROR_FILE
    if path.is_file():
        record = json.loads(path.read_text(encoding="utf-8"))
        return ArmOutcome(
            arm.arm_id,
            arm.name,
            "failed",
            error_type=record.get("error_type"),
            message=record.get("message"),
        )
    return write_error(out_dir / "arms" / arm.arm_id, arm, error)


class _EpochWatch:
    """Shows the epochs done by arms running in other processes (read from history.csv)."""

    def __init__(self, progress: Progress | None, out_dir: Path, n_train: int) -> None:
        self.progress = progress
        self.out_dir = out_dir
        self.n_train = n_train
        self.tasks: dict[str, Any] = {}

    def start(self, arm: Arm) -> None:
        if self.progress is not None:
            self.tasks[arm.arm_id] = self.progress.add_task(
                arm.arm_id, total=arm.spec.epochs, batch="-", ips=0.0, loss=float("nan")
            )

    def poll(self) -> None:
        if self.progress is None:
            return
        import pandas as pd

        for arm_id, task in self.tasks.items():
            path = self.out_dir / "arms" / arm_id / "history.csv"
            try:
                history = pd.read_csv(path)
            except (OSError, ValueError):
                continue
            if len(history):
                last = history.iloc[-1]
                self.progress.update(
                    task,
                    completed=len(history),
                    loss=float(last["train_loss"]),
                    ips=self.n_train / max(float(last["seconds"]), 1e-9),
                )

    def stop(self, arm_id: str) -> None:
        task = self.tasks.pop(arm_id, None)
        if task is not None and self.progress is not None:
            self.progress.remove_task(task)
