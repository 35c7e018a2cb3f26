"""Metrics of one arm from its predictions (labels + P(ALL)), per split.

scikit-learn / statsmodels compute everything they have; this module adds what they lack
(specificity by name, ECE, the threshold sweep, Youden's operating threshold, subject-level
results) and turns degenerate cases into NaN plus a warning instead of a crash.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_curve,
)
from statsmodels.stats.proportion import proportion_confint

from leukaug import LABEL_ALL, LABEL_HEM
from leukaug.core.errors import DataError
from leukaug.stats.classical import DegenerateDataWarning, delong_ci

PREDICTION_COLUMNS = ("split", "image_id", "subject", "label", "prob")
SPLIT_ORDER = ("train", "val", "test")
DEFAULT_THRESHOLD = 0.5
SWEEP_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)
CI_METHODS = {"wilson": "wilson", "wald": "normal"}


def predicted_all(
    prob: np.ndarray | pd.Series | float, threshold: float = DEFAULT_THRESHOLD
) -> np.ndarray:
    """The one rule for "predicted ALL" used everywhere: P(ALL) >= threshold (0.5 unless stated)."""
    return np.asarray(prob, dtype=float) >= threshold


def validate_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """Check a predictions table (ARCHITECTURE.md contract); return a typed copy sorted by split, image_id."""
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise DataError(
            f"predictions lack column(s) {missing}; expected {list(PREDICTION_COLUMNS)}, got {list(predictions.columns)}."
        )
    frame = predictions.loc[:, list(PREDICTION_COLUMNS)].copy()
    frame["split"] = frame["split"].astype(str)
    frame["image_id"] = frame["image_id"].astype(str)
    frame["subject"] = frame["subject"].astype(str)
    if not frame["label"].isin((LABEL_HEM, LABEL_ALL)).all():
        raise DataError("predictions: `label` must be 0 (HEM) or 1 (ALL).")
    frame["label"] = frame["label"].astype(int)
    frame["prob"] = pd.to_numeric(frame["prob"], errors="coerce")
    if not (frame["prob"].between(0.0, 1.0)).all():
        raise DataError(
            "predictions: `prob` must be a probability in [0, 1] with no missing values."
        )
    duplicated = frame.duplicated(["split", "image_id"])
    if duplicated.any():
        example = frame.loc[duplicated, "image_id"].iloc[0]
        raise DataError(f"predictions: image_id {example!r} appears twice in one split.")
    # A canonical row order makes every result independent of the file's row order.
    return frame.sort_values(["split", "image_id"], ignore_index=True)


def accuracy_ci(
    correct: int, n: int, level: float = 0.95, method: str = "wilson"
) -> tuple[float, float]:
    """CI of a proportion: Wilson (default) or Wald ("wald", the seed paper's acc +/- z*SE)."""
    if method not in CI_METHODS:
        raise DataError(f"unknown CI method {method!r}; valid: {sorted(CI_METHODS)}.")
    if n <= 0:
        return math.nan, math.nan
    low, high = proportion_confint(correct, n, alpha=1 - level, method=CI_METHODS[method])
    return float(low), float(high)


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> float:
    """ECE: sum over equal-width probability bins of |mean prob - fraction ALL| x bin share."""
    y, prob = np.asarray(y, dtype=float), np.asarray(prob, dtype=float)
    if len(y) == 0:
        return math.nan
    bins = np.minimum((prob * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        total += in_bin.mean() * abs(prob[in_bin].mean() - y[in_bin].mean())
    return float(total)


def reliability_table(y: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Per equal-width bin: mean predicted P(ALL), observed fraction ALL, count."""
    y, prob = np.asarray(y, dtype=float), np.asarray(prob, dtype=float)
    bins = np.minimum((prob * n_bins).astype(int), n_bins - 1)
    frame = pd.DataFrame({"bin": bins, "prob": prob, "label": y})
    table = frame.groupby("bin").agg(
        mean_prob=("prob", "mean"), fraction_all=("label", "mean"), n=("label", "size")
    )
    return table.reset_index()


def _confusion(y: np.ndarray, predicted: np.ndarray) -> tuple[int, int, int, int]:
    tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[LABEL_HEM, LABEL_ALL]).ravel()
    return int(tn), int(fp), int(fn), int(tp)


def binary_metrics(
    y: np.ndarray,
    prob: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    ci_method: str = "wilson",
    level: float = 0.95,
) -> dict[str, Any]:
    """Every scalar metric at one threshold (predict ALL when prob >= threshold).

    Undefined values are NaN: precision when nothing is predicted ALL (flagged by
    `precision_undefined`, shown as a dash), AUC when the split holds one class (warned).
    """
    y = np.asarray(y, dtype=int)
    prob = np.asarray(prob, dtype=float)
    predicted = predicted_all(prob, threshold).astype(int)
    n = len(y)
    tn, fp, fn, tp = _confusion(y, predicted)
    correct = tn + tp
    low, high = accuracy_ci(correct, n, level, ci_method)
    one_class = len(np.unique(y)) < 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's zero-division chatter; NaN says it all
        result: dict[str, Any] = {
            "n": n,
            "n_all": int((y == LABEL_ALL).sum()),
            "n_hem": int((y == LABEL_HEM).sum()),
            "threshold": float(threshold),
            "loss": float(log_loss(y, prob, labels=[LABEL_HEM, LABEL_ALL])) if n else math.nan,
            "accuracy": float(accuracy_score(y, predicted)) if n else math.nan,
            "accuracy_ci_low": low,
            "accuracy_ci_high": high,
            "accuracy_ci_method": ci_method,
            "precision": float(precision_score(y, predicted, zero_division=np.nan)),
            "recall": float(recall_score(y, predicted, zero_division=np.nan)),
            "specificity": float(
                recall_score(y, predicted, pos_label=LABEL_HEM, zero_division=np.nan)
            ),
            "f1": float(f1_score(y, predicted, zero_division=np.nan)),
            "weighted_f1": float(f1_score(y, predicted, average="weighted", zero_division=np.nan)),
            "balanced_accuracy": math.nan
            if one_class
            else float(balanced_accuracy_score(y, predicted)),
            "mcc": float(matthews_corrcoef(y, predicted)) if n else math.nan,
            "brier": float(brier_score_loss(y, prob, pos_label=LABEL_ALL)) if n else math.nan,
        }
    if one_class:
        warnings.warn(
            f"split holds one class only ({n} images); AUC and balanced accuracy are undefined (NaN).",
            DegenerateDataWarning,
            stacklevel=2,
        )
        auc = {"auc": math.nan, "auc_se": math.nan, "auc_ci_low": math.nan, "auc_ci_high": math.nan}
    else:
        ci = delong_ci(y, prob, level)
        auc = {"auc": ci.auc, "auc_se": ci.se, "auc_ci_low": ci.low, "auc_ci_high": ci.high}
    result.update(auc)
    result["ece"] = expected_calibration_error(y, prob)
    result.update({"tn": tn, "fp": fp, "fn": fn, "tp": tp})
    result["precision_undefined"] = tp + fp == 0
    result["predicts_one_class"] = bool(n) and len(np.unique(predicted)) == 1
    return result


def threshold_sweep(
    y: np.ndarray, prob: np.ndarray, thresholds: np.ndarray = SWEEP_THRESHOLDS
) -> pd.DataFrame:
    """Accuracy, precision, recall, specificity, F1 at each threshold (0 to 1 by 0.01)."""
    y = np.asarray(y, dtype=int) == LABEL_ALL
    prob = np.asarray(prob, dtype=float)
    predicted = predicted_all(prob[None, :], np.asarray(thresholds)[:, None])
    tp = (predicted & y).sum(axis=1).astype(float)
    fp = (predicted & ~y).sum(axis=1).astype(float)
    fn = (~predicted & y).sum(axis=1).astype(float)
    tn = (~predicted & ~y).sum(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "accuracy": (tp + tn) / max(len(y), 1),
            "precision": precision,
            "recall": recall,
            "specificity": specificity,
            "f1": f1,
        }
    )


def youden_threshold(y: np.ndarray, prob: np.ndarray) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 (choose on validation only).

    Falls back to 0.5 with a warning when the data hold one class.
    """
    y = np.asarray(y, dtype=int)
    if len(np.unique(y)) < 2:
        warnings.warn(
            "Youden's threshold needs both classes; using 0.5.", DegenerateDataWarning, stacklevel=2
        )
        return DEFAULT_THRESHOLD
    fpr, tpr, thresholds = roc_curve(y, prob, pos_label=LABEL_ALL)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def operating_threshold(predictions: pd.DataFrame) -> float | None:
    """Youden's J threshold chosen on the validation split (None without one)."""
    val = predictions[predictions["split"] == "val"]
    if val.empty:
        return None
    return youden_threshold(val["label"].to_numpy(), val["prob"].to_numpy())


def subject_table(frame: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Per subject: label, images, image accuracy, mean P(ALL) and the subject-level diagnosis."""
    correct = predicted_all(frame["prob"], threshold).astype(int) == frame["label"].to_numpy()
    grouped = frame.assign(correct=correct).groupby("subject", sort=True)
    table = grouped.agg(
        label=("label", lambda s: round(s.mean())),
        n_images=("label", "size"),
        accuracy=("correct", "mean"),
        mean_prob=("prob", "mean"),
    ).reset_index()
    table["diagnosis"] = predicted_all(table["mean_prob"], threshold).astype(int)
    table["diagnosis_correct"] = table["diagnosis"] == table["label"]
    return table


def subject_metrics(frame: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Subject-level diagnosis (mean probability per subject) summarised."""
    table = subject_table(frame, threshold)
    return {
        "n_subjects": len(table),
        "subject_diagnosis_accuracy": float(table["diagnosis_correct"].mean())
        if len(table)
        else math.nan,
        "subject_mean_accuracy": float(table["accuracy"].mean()) if len(table) else math.nan,
        "subject_min_accuracy": float(table["accuracy"].min()) if len(table) else math.nan,
    }


OPERATING_KEYS = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "weighted_f1",
    "mcc",
)


def split_metrics(
    frame: pd.DataFrame,
    threshold: float = DEFAULT_THRESHOLD,
    operating_threshold: float | None = None,
    *,
    ci_method: str = "wilson",
    level: float = 0.95,
) -> dict[str, Any]:
    """All metrics of one split: at `threshold`, subject-level, and at the operating threshold."""
    y, prob = frame["label"].to_numpy(), frame["prob"].to_numpy()
    result = binary_metrics(y, prob, threshold, ci_method=ci_method, level=level)
    result.update(subject_metrics(frame, threshold))
    if operating_threshold is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateDataWarning)  # already warned above
            operating = binary_metrics(
                y, prob, operating_threshold, ci_method=ci_method, level=level
            )
        result["operating_threshold"] = operating_threshold
        result.update({f"op_{key}": operating[key] for key in OPERATING_KEYS})
    return result


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def arm_metrics(
    predictions: pd.DataFrame,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    ci_method: str = "wilson",
    level: float = 0.95,
) -> dict[str, Any]:
    """Metrics of one arm per split, JSON-serialisable (NaN becomes null).

    The operating threshold is chosen on the `val` split by Youden's J and then applied to
    every split (never chosen on test); without a `val` split there is none.
    """
    frame = validate_predictions(predictions)
    splits = [s for s in SPLIT_ORDER if s in set(frame["split"])] + sorted(
        set(frame["split"]) - set(SPLIT_ORDER)
    )
    operating = None
    if "val" in splits:
        val = frame[frame["split"] == "val"]
        operating = youden_threshold(val["label"].to_numpy(), val["prob"].to_numpy())
    result = {
        "threshold": threshold,
        "operating_threshold": operating,
        "operating_threshold_source": "val (Youden's J)" if operating is not None else None,
        "splits": {
            split: split_metrics(
                frame[frame["split"] == split],
                threshold,
                operating,
                ci_method=ci_method,
                level=level,
            )
            for split in splits
        },
    }
    return _json_safe(result)
