"""What `leukaug train` and `leukaug run` show while arms train.

On a terminal: rich progress bars (arms done with the study's ETA; the current epoch of
each running arm with batch, img/s, ETA and loss). Elsewhere (a log file, CI): plain
timestamped lines, one per epoch (arm, epoch, losses, img/s, ETA) and one per arm.
Both are fed by the library's callbacks (`TrainingCallbacks`, `on_start`, `on_arm_done`),
and both route the library's `logging` messages to the same console.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:  # at run time imported where used: they import torch, `leukaug -h` need not
    from leukaug.arm.callbacks import BatchProgress, EpochRecord
    from leukaug.study.jobs import ArmOutcome

_LOG_LEVEL = {"leukaug": logging.INFO}  # set once per command by `leukaug -v / -q`


def set_log_level(level: int) -> None:
    """The level of `leukaug.*` messages shown while a command runs (-v: DEBUG, -q: WARNING)."""
    _LOG_LEVEL["leukaug"] = level


def library_log_level() -> int:
    return _LOG_LEVEL["leukaug"]


def training_progress(console: Console | None = None, *, transient: bool = False) -> Progress:
    """A rich Progress whose tasks carry the fields `batch`, `ips` and `loss`."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("batch {task.fields[batch]}"),
        TextColumn("{task.fields[ips]:.1f} img/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        console=console,
        transient=transient,
    )


class ProgressBars:
    """Feeds rich progress bars from the library's callbacks (one bar per running arm)."""

    def __init__(self, console: Console, training: Progress, arms: Progress | None = None):
        from leukaug.arm.callbacks import TrainingCallbacks

        self.console = console
        self.training = training
        self.arms = arms
        self.arms_task: TaskID | None = None
        self.tasks: dict[str, TaskID] = {}
        self.batched: set[str] = set()  # arms whose batches reach us (trained in-process)
        self.callbacks = TrainingCallbacks(on_epoch=self.epoch_done, on_batch=self.batch_done)
        if arms is not None:
            self.arms_task = arms.add_task("arms", total=None)

    def _task(self, label: str, total: int) -> TaskID:
        if label not in self.tasks:
            self.tasks[label] = self.training.add_task(
                escape(label), total=total, batch="-", ips=0.0, loss=float("nan")
            )
        return self.tasks[label]

    def batch_done(self, record: BatchProgress) -> None:
        self.batched.add(record.label)
        task = self._task(record.label, record.images_total)
        self.training.update(
            task,
            description=f"{escape(record.label)} epoch {record.epoch}/{record.epochs}".strip(),
            total=record.images_total,
            completed=record.images_done,
            batch=record.batch,
            loss=record.loss,
            ips=record.images_per_second,
        )

    def epoch_done(self, record: EpochRecord) -> None:
        if record.label in self.batched:
            return  # the batches already move this arm's bar
        task = self._task(record.label, record.epochs)
        self.training.update(
            task,
            description=f"{escape(record.label)} epochs".strip(),
            total=record.epochs,
            completed=record.epoch,
            loss=record.train_loss,
            ips=record.images_per_second,
        )

    def on_start(self, n_arms: int) -> None:
        if self.arms is not None and self.arms_task is not None:
            self.arms.update(self.arms_task, total=n_arms)

    def on_arm_done(self, outcome: ArmOutcome) -> None:
        self.batched.discard(outcome.arm_id)
        task = self.tasks.pop(outcome.arm_id, None)
        if task is not None:
            self.training.remove_task(task)
        if self.arms is not None and self.arms_task is not None:
            self.arms.advance(self.arms_task)
        self.console.print(arm_summary(outcome, markup=True), highlight=False)


class Quiet:
    """`-q`: no bars and no per-epoch or per-arm lines (the command prints its results)."""

    callbacks = None

    def on_start(self, n_arms: int) -> None:
        return None

    def on_arm_done(self, outcome: ArmOutcome) -> None:
        return None


class LogLines:
    """Plain timestamped lines for output that is not a terminal: one per epoch and arm."""

    def __init__(self, write: Callable[[str], None]):
        from leukaug.arm.callbacks import TrainingCallbacks

        self.write = write
        self.callbacks = TrainingCallbacks(on_epoch=self.epoch_done)

    def line(self, text: str) -> None:
        self.write(f"{datetime.now().isoformat(timespec='seconds')} {text}")

    def epoch_done(self, record: EpochRecord) -> None:
        self.line(epoch_line(record))

    def on_start(self, n_arms: int) -> None:
        self.line(f"{n_arms} arm(s) to run")

    def on_arm_done(self, outcome: ArmOutcome) -> None:
        self.line(arm_summary(outcome, markup=False))


def epoch_line(record: EpochRecord) -> str:
    """arm, epoch, losses, accuracies, img/s and the arm's ETA, on one line."""
    eta = round(record.eta_seconds)
    return (
        f"{record.label} epoch {record.epoch}/{record.epochs} "
        f"train_loss {record.train_loss:.4f} val_loss {record.val_loss:.4f} "
        f"val_acc {record.val_accuracy:.3f} {record.images_per_second:.1f} img/s "
        f"ETA {eta // 3600:d}:{eta // 60 % 60:02d}:{eta % 60:02d}"
    )


def arm_summary(outcome: ArmOutcome, *, markup: bool = True) -> str:
    """One line per finished arm: test accuracy with its interval, AUC, and time."""
    from leukaug.study.jobs import STATUS_SKIPPED

    if outcome.failed:
        text = f"{outcome.arm_id}: {outcome.error_type}: {outcome.message}"
        return f"[red]FAILED[/] {escape(text)}" if markup else f"FAILED {text}"
    test = (outcome.metrics.get("splits") or {}).get("test") or {}
    skipped = outcome.status == STATUS_SKIPPED
    parts = [f"{'skipped (done)' if skipped else 'done'} {outcome.arm_id}"]
    if test.get("accuracy") is not None:
        interval = ""
        if test.get("accuracy_ci_low") is not None:
            interval = f" [{test['accuracy_ci_low']:.3f}, {test['accuracy_ci_high']:.3f}]"
        parts.append(f"test acc {test['accuracy']:.3f}{interval}")
    if test.get("auc") is not None:
        parts.append(f"AUC {test['auc']:.3f}")
    if not skipped:
        parts.append(f"{outcome.seconds:.0f} s")
    line = "  ".join(parts)
    return escape(line) if markup else line


@contextlib.contextmanager
def arm_display(console: Console, *, study: bool) -> Iterator[ProgressBars | LogLines | Quiet]:
    """Progress bars on a terminal, else plain log lines, nothing under `-q`; the library's
    log messages go to the same console meanwhile. `study`: also show the arms-done bar with
    the study's ETA."""
    with _library_logging(console):
        if library_log_level() > logging.INFO:
            yield Quiet()
            return
        if not console.is_terminal:
            yield LogLines(
                lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True)
            )
            return
        training = training_progress(console)
        arms = _arms_progress(console) if study else None
        parts = [arms, training] if arms is not None else [training]
        with Live(Group(*parts), console=console, refresh_per_second=4, transient=True):
            yield ProgressBars(console, training, arms)


def _arms_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


@contextlib.contextmanager
def _library_logging(console: Console) -> Iterator[None]:
    """`leukaug.*` messages at the command's level (`set_log_level`) printed on `console`."""
    logger = logging.getLogger("leukaug")
    if console.is_terminal:
        handler: logging.Handler = RichHandler(
            console=console, show_path=False, show_time=False, markup=False
        )
    else:
        handler = logging.StreamHandler(console.file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(library_log_level())
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
