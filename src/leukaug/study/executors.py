"""Executors: run a study's arms here (`local`) or as Ray tasks (`ray`).

Both keep dependency order (an arm starts only after the arm it is initialised from has
finished; if that one failed, the dependent arm is recorded as failed too), write every
result into the study folder, and apply the same resume rules (they call the same
`jobs.ArmJob.run` -> `arm.run_arm`).

On Ray each arm is one task with the declared `num_cpus` / `num_gpus`. Results go straight
into the study folder, so on a multi-node cluster the study folder, the data and the image
cache must be on storage every node sees at the same path. An exception that is not a
`LeukaugError` (out of memory, a lost worker) is retried up to `max_retries` times, and
the retry resumes from the arm's `last.pt`; a `LeukaugError` (NaN loss, missing weights,
bad config) is deterministic and is recorded at once. Ray workers cannot call back into
this process, so on Ray `callbacks.on_epoch` receives the epochs read from each running
arm's `history.csv` (no per-batch updates).
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from leukaug.arm.batches import resolve_device
from leukaug.arm.callbacks import EpochRecord, TrainingCallbacks
from leukaug.core.errors import ConfigError, LeukaugError, unknown_name_message
from leukaug.core.layout import StudyFolder
from leukaug.data.cache import ImageCache
from leukaug.study.jobs import (
    ArmJob,
    ArmOutcome,
    StudyArm,
    dependency_failed,
    read_error,
    write_error,
)
from leukaug.study.study_file import EXECUTORS, ExecutorSection

# Arms the local executor runs at once on one device when `[executor] arms_per_device` is
# unset. CPU: 1 (two at once on the 2-core CPU were measured, BENCHMARKS.md). CUDA: 2, NOT
# MEASURED: one arm kept an H100 only 20-41% busy (issue 9, launch-bound), so a second arm
# should fill the gaps; benchmarks/gpu_paper.py --arms-per-device measures it.
DEFAULT_ARMS_PER_DEVICE = {"cpu": 1, "cuda": 2}
RAY_POLL_SECONDS = 1.0

OnArmDone = Callable[[ArmOutcome], None]


def run_arms(
    kind: str,
    arms: Sequence[StudyArm],
    job: ArmJob,
    *,
    caches: dict[int, ImageCache],
    settings: ExecutorSection,
    address: str | None = None,
    on_arm_done: OnArmDone | None = None,
    callbacks: TrainingCallbacks | None = None,
) -> list[ArmOutcome]:
    """Run `arms` (already in dependency order) with the named executor; an arm whose
    source arm is not among them starts from that arm's folder as it is."""
    if kind == "local":
        parallel = arms_per_device(settings, job.device)
        if parallel > 1 and len(arms) > 1:
            return run_local_parallel(
                arms, job, parallel, on_arm_done=on_arm_done, callbacks=callbacks
            )
        return run_local(arms, job, caches=caches, on_arm_done=on_arm_done, callbacks=callbacks)
    if kind == "ray":
        return run_ray(
            arms,
            job,
            address=address if address is not None else settings.address,
            num_cpus=settings.num_cpus,
            num_gpus=settings.num_gpus,
            max_retries=settings.max_retries,
            on_arm_done=on_arm_done,
            callbacks=callbacks,
        )
    raise ConfigError(unknown_name_message("executor", kind, EXECUTORS))


def arms_per_device(settings: ExecutorSection, device: str) -> int:
    """Arms the local executor runs at once: the study's setting, else by device type."""
    if settings.arms_per_device is not None:
        return settings.arms_per_device
    kind = resolve_device(device).type if device == "auto" else torch.device(device).type
    return DEFAULT_ARMS_PER_DEVICE.get(kind, 1)


def require(kind: str) -> None:
    """Fail early, before any data work, for an unknown executor or a missing Ray."""
    if kind not in EXECUTORS:
        raise ConfigError(unknown_name_message("executor", kind, EXECUTORS))
    if kind == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError(
            "executor 'ray' needs Ray: pip install 'leukaug[ray]' (or use --executor local)."
        )


def _blocked(arm: StudyArm, outcomes: dict[str, ArmOutcome]) -> bool:
    """The arm this one starts from failed in this run (one not run now was complete)."""
    source = outcomes.get(arm.depends_on) if arm.depends_on is not None else None
    return source is not None and source.failed


def run_local(
    arms: Sequence[StudyArm],
    job: ArmJob,
    *,
    caches: dict[int, ImageCache],
    on_arm_done: OnArmDone | None = None,
    callbacks: TrainingCallbacks | None = None,
) -> list[ArmOutcome]:
    """One arm after another in this process."""
    outcomes: dict[str, ArmOutcome] = {}
    for arm in arms:
        if _blocked(arm, outcomes):
            outcome = dependency_failed(arm, job.out_dir)
        else:
            outcome = job.run(arm, cache=caches.get(arm.image_size), callbacks=callbacks)
        outcomes[arm.arm_id] = outcome
        if on_arm_done is not None:
            on_arm_done(outcome)
    return [outcomes[arm.arm_id] for arm in arms]


def _local_task(job: ArmJob, arm: StudyArm) -> ArmOutcome:
    """Body of one arm in a worker process of `run_local_parallel`."""
    return job.run(arm)


def run_local_parallel(
    arms: Sequence[StudyArm],
    job: ArmJob,
    arms_per_device: int,
    *,
    on_arm_done: OnArmDone | None = None,
    callbacks: TrainingCallbacks | None = None,
) -> list[ArmOutcome]:
    """Up to `arms_per_device` arms at once on this machine's device, each in its own
    process (an arm seeds torch's global generators, so arms cannot share a process).

    Every arm runs with the study's thread count (`job.settings.threads`), so its numbers are the
    ones it gets run alone; `callbacks.on_epoch` receives epochs read from `history.csv`.
    """
    job = job.with_threads(torch.get_num_threads())
    context = multiprocessing.get_context("spawn")  # no forked copy of torch's thread pools
    with ProcessPoolExecutor(arms_per_device, mp_context=context) as pool:

        def ready(running: list[Future[ArmOutcome]]) -> set[Future[ArmOutcome]]:
            done, _ = wait(running, timeout=RAY_POLL_SECONDS, return_when=FIRST_COMPLETED)
            return done

        try:
            return dispatch(
                arms,
                job,
                submit=lambda arm: pool.submit(_local_task, job, arm),
                ready=ready,
                result=lambda future: future.result(),
                capacity=arms_per_device,
                on_arm_done=on_arm_done,
                callbacks=callbacks,
            )
        except BaseException:  # interrupted (SIGINT, SIGTERM): stop the arms, do not wait
            stop_workers(pool)
            raise


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool's worker processes now; an arm stopped mid-epoch resumes from its
    `last.pt` (every file it writes is replaced atomically, so none is left half-written).
    The executor has no public call for this: its `_processes` are the workers."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        process.terminate()
    for process in workers:
        process.join()


class RetryableArmError(RuntimeError):
    """Raised in a Ray worker for a failure worth retrying (not a LeukaugError)."""


def _ray_task(job: ArmJob, arm: StudyArm) -> ArmOutcome:
    """Body of one Ray task: run the arm; raise RetryableArmError so Ray retries."""
    try:
        return job.run(arm, reraise=lambda error: not isinstance(error, LeukaugError))
    except Exception as error:
        raise RetryableArmError(f"{type(error).__name__}: {error}") from error


def run_ray(
    arms: Sequence[StudyArm],
    job: ArmJob,
    *,
    address: str | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    max_retries: int = 2,
    on_arm_done: OnArmDone | None = None,
    callbacks: TrainingCallbacks | None = None,
) -> list[ArmOutcome]:
    """Each arm a Ray task; an arm is submitted once the arm it starts from has finished.

    Uses the running Ray session if there is one, else connects to `address`, else starts
    a local Ray instance (shut down again at the end).
    """
    require("ray")
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        # Ray's own logs and the workers' output reach the user only when leukaug's log
        # level is DEBUG (`leukaug -v`); the arms report through history.csv and outcomes.
        verbose = logging.getLogger("leukaug").isEnabledFor(logging.DEBUG)
        ray.init(
            address=address or None,
            include_dashboard=False,
            logging_level=logging.INFO if verbose else logging.ERROR,
            log_to_driver=verbose,
        )
    try:
        return _run_on_ray(ray, arms, job, num_cpus, num_gpus, max_retries, on_arm_done, callbacks)
    finally:
        if started_here:
            ray.shutdown()


def _run_on_ray(
    ray: Any,  # the imported ray module (an optional dependency)
    arms: Sequence[StudyArm],
    job: ArmJob,
    num_cpus: float,
    num_gpus: float,
    max_retries: int,
    on_arm_done: OnArmDone | None,
    callbacks: TrainingCallbacks | None,
) -> list[ArmOutcome]:
    task = ray.remote(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        max_retries=max_retries,
        retry_exceptions=[RetryableArmError],
    )(_ray_task)
    # the study's count (same numbers as local), else one thread per reserved CPU
    job_ref = ray.put(job.with_threads(max(1, int(num_cpus))))

    def ready(running: list[Any]) -> list[Any]:
        done, _ = ray.wait(running, num_returns=1, timeout=RAY_POLL_SECONDS)
        return done

    return dispatch(
        arms,
        job,
        submit=lambda arm: task.options(name=arm.arm_id).remote(job_ref, arm),
        ready=ready,
        result=ray.get,
        capacity=None,  # Ray's scheduler holds tasks until their resources are free
        on_arm_done=on_arm_done,
        callbacks=callbacks,
    )


def dispatch(
    arms: Sequence[StudyArm],
    job: ArmJob,
    *,
    submit: Callable[[StudyArm], Any],
    ready: Callable[[list[Any]], Iterable[Any]],
    result: Callable[[Any], ArmOutcome],
    capacity: int | None,
    on_arm_done: OnArmDone | None,
    callbacks: TrainingCallbacks | None,
) -> list[ArmOutcome]:
    """Run arms in other processes, each once the arm it starts from has finished (an arm
    whose source failed is not run). `submit(arm)` starts one and returns a handle,
    `ready(handles)` waits up to RAY_POLL_SECONDS for finished ones, `result(handle)` is its
    outcome (raising if the worker failed); at most `capacity` run at once (None: all)."""
    waiting = list(arms)
    ids = {arm.arm_id for arm in arms}  # a source not among them was complete already
    running: dict[Any, StudyArm] = {}
    outcomes: dict[str, ArmOutcome] = {}
    n_train = int((job.manifest["split"] == "train").sum())
    watch = EpochWatch(callbacks, StudyFolder(job.out_dir), n_train)

    def finish(outcome: ArmOutcome) -> None:
        outcomes[outcome.arm_id] = outcome
        watch.poll()
        watch.stop(outcome.arm_id)
        if on_arm_done is not None:
            on_arm_done(outcome)

    while waiting or running:
        for arm in list(waiting):
            if capacity is not None and len(running) >= capacity:
                break
            if arm.depends_on in ids and arm.depends_on not in outcomes:
                continue
            waiting.remove(arm)
            if _blocked(arm, outcomes):
                finish(dependency_failed(arm, job.out_dir))
            else:
                running[submit(arm)] = arm
                watch.start(arm)
        if not running:
            if waiting:  # cannot happen for arms in dependency order; never spin
                raise ConfigError(f"arm {waiting[0].arm_id!r} waits for an arm not in the study.")
            continue
        done = ready(list(running))
        watch.poll()
        for handle in done:
            arm = running.pop(handle)
            try:
                finish(result(handle))
            except Exception as error:  # retries exhausted, or the worker died
                finish(_worker_failure(arm, error, job.out_dir))
    return [outcomes[arm.arm_id] for arm in arms]


def _worker_failure(arm: StudyArm, error: Exception, out_dir: Path) -> ArmOutcome:
    """The outcome of a worker (Ray task or process) that raised: keep the worker's
    error.json if it wrote one."""
    folder = StudyFolder(out_dir).arm(arm.arm_id).path
    return read_error(folder, arm) or write_error(folder, arm, error)


class EpochWatch:
    """Passes on the epochs finished by arms running in other processes (read from their
    history.csv) as `EpochRecord`s to `callbacks.on_epoch`."""

    def __init__(
        self, callbacks: TrainingCallbacks | None, folder: StudyFolder, n_train: int
    ) -> None:
        self.on_epoch = callbacks.on_epoch if callbacks is not None else None
        self.folder = folder
        self.n_train = n_train
        self.arms: dict[str, tuple[StudyArm, int]] = {}  # arm_id -> (arm, epochs reported)

    def start(self, arm: StudyArm) -> None:
        """Watch `arm` from now on: a resumed arm's earlier epochs are not passed on again."""
        if self.on_epoch is not None:
            self.arms[arm.arm_id] = (arm, len(self._history(arm.arm_id)))

    def _history(self, arm_id: str) -> pd.DataFrame:
        try:
            return pd.read_csv(self.folder.arm(arm_id).history)
        except (OSError, ValueError):
            return pd.DataFrame()

    def poll(self) -> None:
        if self.on_epoch is None:
            return
        for arm_id, (arm, reported) in list(self.arms.items()):
            history = self._history(arm_id)
            for row in history.iloc[reported:].itertuples(index=False):
                self.on_epoch(
                    EpochRecord.from_history_row(
                        row._asdict(), arm_id, arm.spec.epochs, self.n_train
                    )
                )
            self.arms[arm_id] = (arm, max(reported, len(history)))

    def stop(self, arm_id: str) -> None:
        self.arms.pop(arm_id, None)
