"""What `fit` reports while it trains: one finished epoch (`EpochRecord`, a `history.csv`
row), the progress of the current epoch (`BatchProgress`) and the callables that receive
them (`TrainingCallbacks`). Light on purpose (no torch, no scikit-learn): the study, its
executors and the CLI's progress display use these types without loading the training
stack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
]


@dataclass(frozen=True)
class BatchProgress:
    """Where one arm's current epoch stands (passed to `TrainingCallbacks.on_batch`)."""

    label: str  # the arm id in a study
    epoch: int
    epochs: int
    batch: int
    images_done: int
    images_total: int
    loss: float  # training loss of the latest batch
    images_per_second: float


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch of one arm: a `history.csv` row plus who and how fast.

    Passed to `TrainingCallbacks.on_epoch`; the losses are class-weighted (see `fit`).
    """

    label: str  # the arm id in a study
    epoch: int
    epochs: int  # planned epochs (early stopping may end sooner)
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float
    images_per_second: float  # training images per second over the epoch

    @property
    def eta_seconds(self) -> float:
        """Time left for the remaining planned epochs at this epoch's pace."""
        return max(self.epochs - self.epoch, 0) * self.seconds

    def history_row(self) -> dict[str, float]:
        """The `history.csv` row of this epoch (HISTORY_COLUMNS), e.g. for metric trackers."""
        return {key: getattr(self, key) for key in HISTORY_COLUMNS}

    @classmethod
    def from_history_row(
        cls, row: Mapping[str, Any], label: str, epochs: int, n_train: int
    ) -> EpochRecord:
        """The record of one `history.csv` row (`n_train`: training images per epoch)."""
        values = {key: float(row[key]) for key in HISTORY_COLUMNS if key != "epoch"}
        rate = n_train / max(values["seconds"], 1e-9)
        return cls(label, int(row["epoch"]), epochs, images_per_second=rate, **values)


@dataclass(frozen=True)
class TrainingCallbacks:
    """Plain callables `fit` calls; either may be None. Compose several trackers in one."""

    on_epoch: Callable[[EpochRecord], None] | None = None
    on_batch: Callable[[BatchProgress], None] | None = None
