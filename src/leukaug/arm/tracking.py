"""Experiment tracking: TensorBoard event files in the arm folder, and an optional MLflow run.

A tracker gets one plain record per epoch (a `history.csv` row: epoch, train_loss,
train_accuracy, val_loss, val_accuracy, lr, seconds) through `on_epoch`, then the arm's
folder, predictions and spec through `on_end` (final ROC/PR curves, hyperparameters,
final metrics, artefacts). Both are written offline; docs/tracking.md says how to open them.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from leukaug.core.errors import ConfigError, StorageError
from leukaug.stats.metrics import arm_metrics

# history.csv column -> TensorBoard tag (grouped as loss/, accuracy/, optim/ panels).
EPOCH_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_accuracy": "accuracy/train",
    "val_accuracy": "accuracy/val",
    "lr": "optim/lr",
    "seconds": "time/epoch_seconds",
}
# Final metrics per split, logged as `<split>/<key>` (the headline numbers of metrics.json).
FINAL_KEYS = ("accuracy", "balanced_accuracy", "auc", "f1", "mcc", "loss", "brier", "ece")
CURVE_SPLITS = ("val", "test")
ARM_ARTEFACTS = ("arm.json", "history.csv", "predictions.csv", "metrics.json")
log = logging.getLogger(__name__)


class ArmSpec(Protocol):
    """What a tracker reads of an `arm.ArmSpec` (a protocol: `arm` builds the trackers)."""

    epochs: int

    def to_dict(self) -> dict[str, Any]: ...


class Tracker(Protocol):
    """What `run_arm` calls: once per finished epoch, then once when the arm is complete."""

    def on_epoch(self, record: Mapping[str, float]) -> None: ...

    def on_end(self, arm_dir: Path, predictions: pd.DataFrame, spec: ArmSpec) -> None: ...


def flat_params(spec: ArmSpec) -> dict[str, str | int | float | bool]:
    """The spec as flat scalars (TensorBoard hparams and MLflow params take no lists or None)."""
    params: dict[str, str | int | float | bool] = {}
    for key, value in spec.to_dict().items():
        if key == "augmentations":
            value = "+".join(_augmentation_text(a) for a in value) or "none"
        params[key] = "none" if value is None else value
    return params


def _augmentation_text(augmentation: Mapping[str, Any]) -> str:
    params = augmentation.get("params") or {}
    options = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"{augmentation['name']}:{options}" if options else str(augmentation["name"])


def final_metrics(predictions: pd.DataFrame) -> dict[str, float]:
    """`<split>/<metric>` -> value for FINAL_KEYS, plus the operating threshold; finite only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one-class splits warn in the report already
        metrics = arm_metrics(predictions)
    values: dict[str, float] = {}
    for split, split_values in metrics["splits"].items():
        for key in FINAL_KEYS:
            values[f"{split}/{key}"] = split_values.get(key)
    values["operating_threshold"] = metrics.get("operating_threshold")
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}


def _curve_splits(predictions: pd.DataFrame) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(split, labels, P(ALL)) of the splits that hold both classes (curves need both)."""
    out = []
    for split in CURVE_SPLITS:
        frame = predictions[predictions["split"] == split]
        labels = frame["label"].to_numpy(dtype=int)
        if len(np.unique(labels)) == 2:
            out.append((split, labels, frame["prob"].to_numpy(dtype=float)))
    return out


def curves_figure(predictions: pd.DataFrame) -> Figure:
    """ROC (left) and precision-recall (right) curves of the val and test splits."""
    figure = Figure(figsize=(8.0, 3.8))
    roc_ax, pr_ax = figure.subplots(1, 2)
    roc_ax.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, linestyle=":")
    for split, labels, prob in _curve_splits(predictions):
        fpr, tpr, _ = roc_curve(labels, prob)
        precision, recall, _ = precision_recall_curve(labels, prob)
        roc_ax.plot(fpr, tpr, label=split)
        pr_ax.plot(recall, precision, label=split)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate (ALL)", title="ROC")
    pr_ax.set(xlabel="recall (ALL)", ylabel="precision (ALL)", title="precision-recall")
    for ax in (roc_ax, pr_ax):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower left" if ax is pr_ax else "lower right", frameon=False)
    figure.tight_layout()
    return figure


class TensorBoardTracker:
    """Event files in `log_dir` (the arm folder): per-epoch scalars, PR curves, a ROC/PR
    figure and the hyperparameters with the final metrics (the HPARAMS tab)."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer: Any = None
        self._last_epoch: int | None = None

    def _open(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        return self._writer

    def on_epoch(self, record: Mapping[str, float]) -> None:
        writer = self._open()
        step = self._last_epoch = int(record["epoch"])
        for key, tag in EPOCH_TAGS.items():
            value = record.get(key)
            if value is not None and math.isfinite(float(value)):
                writer.add_scalar(tag, float(value), global_step=step)
        writer.flush()

    def on_end(self, arm_dir: Path, predictions: pd.DataFrame, spec: ArmSpec) -> None:
        writer = self._open()
        step = self._last_epoch or spec.epochs  # early stopping may end before spec.epochs
        for split, labels, prob in _curve_splits(predictions):
            writer.add_pr_curve(f"pr_curve/{split}", labels, prob, global_step=step)
        writer.add_figure("curves/roc_pr", curves_figure(predictions), global_step=step)
        # run_name ".": the hparams summary lands in the arm folder itself, not a subfolder.
        writer.add_hparams(flat_params(spec), final_metrics(predictions), run_name=".")
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _require_mlflow() -> None:
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(
            "tracking.mlflow_uri is set but MLflow is not installed. "
            "Fix: pip install 'leukaug[mlflow]' (mlflow-skinny), or remove mlflow_uri."
        )


class MLflowTracker:
    """One MLflow run per arm at `tracking_uri` (e.g. "file:/path/mlruns", works offline):
    per-epoch metrics, then params, final metrics, the arm's files and the ROC/PR figure."""

    def __init__(self, tracking_uri: str, *, run_name: str, experiment: str = "leukaug") -> None:
        _require_mlflow()
        from mlflow.tracking import MlflowClient

        if tracking_uri.startswith("file:"):
            # MLflow >= 3.7 refuses the file store unless asked; a `file:` URI in the study
            # is that request (the offline, serverless store this tracker is meant for).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

        self.tracking_uri = tracking_uri
        self.run_name = run_name
        self.experiment = experiment
        self._client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id: str | None = None
        self._last_epoch: int | None = None

    def _run(self) -> str:
        """The run id, created on first use (an arm that is already complete logs nothing)."""
        if self.run_id is None:
            found = self._client.get_experiment_by_name(self.experiment)
            experiment_id = (
                found.experiment_id if found else self._client.create_experiment(self.experiment)
            )
            run = self._client.create_run(experiment_id, run_name=self.run_name)
            self.run_id = run.info.run_id
        return self.run_id

    def _log_metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(v), now, step) for key, v in values.items()]
        self._client.log_batch(self._run(), metrics=metrics)

    def on_epoch(self, record: Mapping[str, float]) -> None:
        values = {
            key: float(record[key])
            for key in EPOCH_TAGS
            if record.get(key) is not None and math.isfinite(float(record[key]))
        }
        self._last_epoch = int(record["epoch"])
        self._log_metrics(values, self._last_epoch)

    def on_end(self, arm_dir: Path, predictions: pd.DataFrame, spec: ArmSpec) -> None:
        from mlflow.entities import Param

        run_id = self._run()
        params = [Param(key, str(value)) for key, value in flat_params(spec).items()]
        self._client.log_batch(run_id, params=params)
        self._log_metrics(final_metrics(predictions), self._last_epoch or spec.epochs)
        for name in ARM_ARTEFACTS:
            if (Path(arm_dir) / name).is_file():
                self._client.log_artifact(run_id, str(Path(arm_dir) / name))
        self._client.log_figure(run_id, curves_figure(predictions), "curves_roc_pr.png")
        self._client.set_terminated(run_id, "FINISHED")


class GuardedTracker:
    """A tracker whose failure is kept (`error`), not raised: tracking is an extra, and a
    broken MLflow server or event file must never fail a trained arm. After its first
    failure the tracker is called no more; `run_arm` records it in arm.json."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.step = (
            f"tracking ({'TensorBoard' if isinstance(tracker, TensorBoardTracker) else 'MLflow'})"
        )
        self.error: Exception | None = None

    def on_epoch(self, record: Mapping[str, float]) -> None:
        self._call(self.tracker.on_epoch, record)

    def on_end(self, arm_dir: Path, predictions: pd.DataFrame, spec: ArmSpec) -> None:
        self._call(self.tracker.on_end, arm_dir, predictions, spec)

    def _call(self, method: Any, *args: Any) -> None:
        if self.error is not None:
            return
        try:
            method(*args)
        except StorageError:
            raise  # a full disk stops the arm (resumable), whoever writes
        except Exception as error:
            self.error = error
            log.warning("%s failed (%s: %s); the arm goes on without it.", self.step,
                        type(error).__name__, error)  # fmt: skip


def build_trackers(
    arm_dir: str | Path,
    *,
    arm_id: str,
    tensorboard: bool = True,
    mlflow_uri: str | None = None,
    mlflow_experiment: str = "leukaug",
) -> list[Tracker]:
    """The trackers a study's `[tracking]` settings ask for, for one arm."""
    trackers: list[Tracker] = []
    if tensorboard:
        trackers.append(TensorBoardTracker(arm_dir))
    if mlflow_uri:
        trackers.append(MLflowTracker(mlflow_uri, run_name=arm_id, experiment=mlflow_experiment))
    return trackers
