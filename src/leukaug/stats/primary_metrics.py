"""Primary metrics for inference: each knows its direction, its value under case weights
(the bootstrap) and its influence function (the clustered variance).

The influence of image i is d metric / d w_i at unit weights, so that
metric(weights) ~ metric + sum_i (w_i - 1) * influence_i. Summed over a subject's images it
is that subject's contribution; the stratified variance of those sums is the subject-level
(cluster) variance. For AUC this is Obuchowski's (1997) clustered DeLong variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from leukaug.core.errors import ConfigError, unknown_name_message
from leukaug.stats.metrics import DEFAULT_THRESHOLD, predicted_all

# sklearn's log_loss clips probabilities to the float64 machine epsilon.
_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class MetricDef:
    """One primary metric: name, direction, weighted value (rows of weights) and influence."""

    name: str
    label: str
    higher_is_better: bool
    weighted: Callable[..., np.ndarray]  # (y, prob, weights, threshold=0.5)
    influence: Callable[..., tuple[float, np.ndarray]]  # (y, prob, threshold=0.5)
    thresholded: bool = False  # decided at an operating threshold (predicted ALL: prob >= it)

    def value(self, y: np.ndarray, prob: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> float:
        """The metric at unit weights (equals scikit-learn's)."""
        return float(self.weighted(y, prob, np.ones((1, len(y))), threshold)[0])


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan
        )


# --- AUC (Mann-Whitney, ties count one half) ---------------------------------------------


def _auc_weighted(
    y: np.ndarray, prob: np.ndarray, weights: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> np.ndarray:
    order = np.argsort(prob, kind="stable")
    sorted_prob = prob[order]
    starts = np.flatnonzero(np.r_[True, sorted_prob[1:] != sorted_prob[:-1]])
    positive = y[order] == 1
    w = weights[:, order]
    pos = np.add.reduceat(w * positive, starts, axis=1)
    neg = np.add.reduceat(w * ~positive, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    return _ratio((pos * (below + 0.5 * neg)).sum(axis=1), pos.sum(axis=1) * neg.sum(axis=1))


def _auc_influence(
    y: np.ndarray, prob: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> tuple[float, np.ndarray]:
    positive = y == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        return np.nan, np.full(len(y), np.nan)
    t_z = rankdata(prob)
    t_x, t_y = rankdata(prob[positive]), rankdata(prob[~positive])
    auc = float((t_z[positive].sum() / m - (m + 1) / 2.0) / n)
    influence = np.empty(len(y))
    influence[positive] = ((t_z[positive] - t_x) / n - auc) / m  # DeLong's V10 - AUC
    influence[~positive] = ((1.0 - (t_z[~positive] - t_y) / m) - auc) / n  # V01 - AUC
    return auc, influence


# --- accuracy-type metrics at a threshold (predicted ALL: prob >= threshold, 0.5 unless given;
# the study's verdicts pass each run's own validation-chosen threshold) ---------------------


def _correct(y: np.ndarray, prob: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    return (predicted_all(prob, threshold) == (y == 1)).astype(float)


def _accuracy_weighted(
    y: np.ndarray, prob: np.ndarray, weights: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> np.ndarray:
    return _ratio(weights @ _correct(y, prob, threshold), weights.sum(axis=1))


def _accuracy_influence(
    y: np.ndarray, prob: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> tuple[float, np.ndarray]:
    correct = _correct(y, prob, threshold)
    accuracy = float(correct.mean())
    return accuracy, (correct - accuracy) / len(y)


def _balanced_weighted(
    y: np.ndarray, prob: np.ndarray, weights: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> np.ndarray:
    correct, positive = _correct(y, prob, threshold), (y == 1).astype(float)
    sensitivity = _ratio(weights @ (correct * positive), weights @ positive)
    specificity = _ratio(weights @ (correct * (1 - positive)), weights @ (1 - positive))
    return (sensitivity + specificity) / 2


def _balanced_influence(
    y: np.ndarray, prob: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> tuple[float, np.ndarray]:
    correct, positive = _correct(y, prob, threshold), y == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        return np.nan, np.full(len(y), np.nan)
    sensitivity, specificity = correct[positive].mean(), correct[~positive].mean()
    influence = np.where(
        positive, (correct - sensitivity) / (2 * m), (correct - specificity) / (2 * n)
    )
    return float((sensitivity + specificity) / 2), influence


def _f1_parts(
    y: np.ndarray, prob: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> tuple[np.ndarray, ...]:
    """Per-image terms of weighted F1 = sum_c support_c F1_c, F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)."""
    truth, predicted = (y == 1).astype(float), predicted_all(prob, threshold).astype(float)
    return (
        truth,
        2 * truth * predicted,  # 2 TP_ALL
        truth + predicted,  # 2 TP + FP + FN for ALL
        2 * (1 - truth) * (1 - predicted),  # 2 TP_HEM
        2 - truth - predicted,  # 2 TP + FP + FN for HEM
    )


def _f1_weighted(
    y: np.ndarray, prob: np.ndarray, weights: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> np.ndarray:
    truth, a1, b1, a0, b0 = (weights @ part for part in _f1_parts(y, prob, threshold))
    total = weights.sum(axis=1)
    f1_all, f1_hem = np.nan_to_num(_ratio(a1, b1)), np.nan_to_num(_ratio(a0, b0))
    return _ratio(truth * f1_all + (total - truth) * f1_hem, total)


def _f1_influence(
    y: np.ndarray, prob: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> tuple[float, np.ndarray]:
    truth, a1, b1, a0, b0 = _f1_parts(y, prob, threshold)
    n = len(y)
    share = truth.mean()
    f1_all = a1.sum() / b1.sum() if b1.sum() > 0 else 0.0
    f1_hem = a0.sum() / b0.sum() if b0.sum() > 0 else 0.0
    d_all = (a1 - f1_all * b1) / b1.mean() if b1.sum() > 0 else np.zeros(n)
    d_hem = (a0 - f1_hem * b0) / b0.mean() if b0.sum() > 0 else np.zeros(n)
    influence = ((truth - share) * (f1_all - f1_hem) + share * d_all + (1 - share) * d_hem) / n
    return float(share * f1_all + (1 - share) * f1_hem), influence


def _cell_loss(y: np.ndarray, prob: np.ndarray) -> np.ndarray:
    clipped = np.clip(prob, _EPS, 1 - _EPS)
    return -np.where(y == 1, np.log(clipped), np.log1p(-clipped))


def _log_loss_weighted(
    y: np.ndarray, prob: np.ndarray, weights: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> np.ndarray:
    return _ratio(weights @ _cell_loss(y, prob), weights.sum(axis=1))


def _log_loss_influence(
    y: np.ndarray, prob: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> tuple[float, np.ndarray]:
    loss = _cell_loss(y, prob)
    mean = float(loss.mean())
    return mean, (loss - mean) / len(y)


PRIMARY_METRICS: dict[str, MetricDef] = {
    definition.name: definition
    for definition in (
        MetricDef("auc", "AUC", True, _auc_weighted, _auc_influence),
        MetricDef("accuracy", "accuracy", True, _accuracy_weighted, _accuracy_influence, True),
        MetricDef(
            "balanced_accuracy",
            "balanced accuracy",
            True,
            _balanced_weighted,
            _balanced_influence,
            True,
        ),
        MetricDef("f1_weighted", "weighted F1", True, _f1_weighted, _f1_influence, True),
        MetricDef("log_loss", "log loss", False, _log_loss_weighted, _log_loss_influence),
    )
}
DEFAULT_METRIC = "auc"
VALIDATION_THRESHOLD = "validation"  # each run's own operating threshold, chosen on validation


def metric_label(name: str, threshold: str | float | None = None) -> str:
    """How reports name a primary metric, with its threshold where it has one: "balanced
    accuracy (each run's validation threshold)", "accuracy (threshold 0.5)", "AUC"."""
    definition = PRIMARY_METRICS.get(name)
    if definition is None:
        return name
    if not definition.thresholded:
        return definition.label + (" (lower is better)" if not definition.higher_is_better else "")
    if (
        threshold is None
        or threshold == VALIDATION_THRESHOLD
        or (isinstance(threshold, float) and math.isnan(threshold))
    ):
        return f"{definition.label} (each run's validation threshold)"
    return f"{definition.label} (threshold {float(threshold):g})"


def get_metric(name: str) -> MetricDef:
    """The primary metric called `name`; an unknown name raises ConfigError with suggestions."""
    try:
        return PRIMARY_METRICS[name]
    except KeyError:
        raise ConfigError(unknown_name_message("primary metric", name, PRIMARY_METRICS)) from None
