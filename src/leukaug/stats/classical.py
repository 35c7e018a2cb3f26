"""Paired statistics for comparing two classifiers on the same images.

- DeLong's test for two correlated ROC AUCs and DeLong's CI for one AUC, computed with the
  fast midrank algorithm of Sun & Xu (2014, IEEE Signal Processing Letters 21(11):1389).
- McNemar's exact test on per-image correctness (statsmodels).
- A paired bootstrap that resamples subjects, not images: cells of one patient are
  correlated, so resampling images would understate the uncertainty.
- Holm's step-down correction (checked against statsmodels ``multipletests`` in the tests).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm, rankdata
from statsmodels.stats.contingency_tables import mcnemar

from leukaug.core.errors import DataError


class DegenerateDataWarning(UserWarning):
    """A statistic is undefined for these data (e.g. only one class present); it is NaN."""


@dataclass(frozen=True)
class AucCI:
    """One AUC with its DeLong standard error and confidence interval."""

    auc: float
    se: float
    low: float
    high: float
    level: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class DelongResult:
    """DeLong's test of AUC(a) - AUC(b) on the same cases."""

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    level: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's exact test; `only_a` / `only_b` count images only that model got right."""

    only_a: int
    only_b: int
    statistic: float
    p_value: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class BootstrapResult:
    """Paired subject-bootstrap of a metric difference (a - b): percentile CI and p-value."""

    metric: str
    estimate: float
    low: float
    high: float
    p_value: float
    n_resamples: int
    n_valid: int
    level: float

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _labels(y: Sequence[int] | np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"labels must be one-dimensional, got shape {y.shape}.")
    if not np.isin(y, (0, 1)).all():
        raise DataError("labels must be 0 (HEM) or 1 (ALL); found other values.")
    return y.astype(np.int8)


def _scores(score: Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    score = np.asarray(score, dtype=float)
    if score.shape != (n,):
        raise DataError(f"scores must have one value per label ({n}), got shape {score.shape}.")
    if not np.isfinite(score).all():
        raise DataError("scores contain NaN or infinite values.")
    return score


def delong_components(
    y: Sequence[int] | np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and DeLong covariance matrix of k score vectors (k x n) on labels y (Sun & Xu, Alg. 2).

    Midranks of the positives among themselves (T_X), the negatives among themselves (T_Y)
    and all cases together (T_Z) give the placement values without any pairwise
    comparison: V10_i = (T_Z_i - T_X_i) / n, V01_j = 1 - (T_Z_j - T_Y_j) / m.
    """
    y = _labels(y)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    positive, negative = scores[:, y == 1], scores[:, y == 0]
    m, n = positive.shape[1], negative.shape[1]
    if m == 0 or n == 0:
        raise DataError("DeLong needs both classes; one class is absent.")
    t_x = rankdata(positive, axis=1)
    t_y = rankdata(negative, axis=1)
    t_z = rankdata(np.concatenate([positive, negative], axis=1), axis=1)
    aucs = (t_z[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (t_z[:, :m] - t_x) / n
    v01 = 1.0 - (t_z[:, m:] - t_y) / m
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(scores), len(scores)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(scores), len(scores)))
    return aucs, s10 / m + s01 / n


def _one_class(y: np.ndarray) -> bool:
    return len(np.unique(y)) < 2


def delong_ci(
    y: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray, level: float = 0.95
) -> AucCI:
    """AUC with DeLong's standard error and a normal-theory CI clipped to [0, 1] (as pROC)."""
    y = _labels(y)
    score = _scores(score, len(y))
    if _one_class(y):
        warnings.warn(
            "AUC is undefined with one class only; returning NaN.",
            DegenerateDataWarning,
            stacklevel=2,
        )
        return AucCI(math.nan, math.nan, math.nan, math.nan, level)
    aucs, cov = delong_components(y, score[None, :])
    auc, se = float(aucs[0]), math.sqrt(max(float(cov[0, 0]), 0.0))
    half = float(norm.ppf(0.5 + level / 2)) * se
    return AucCI(auc, se, max(0.0, auc - half), min(1.0, auc + half), level)


def delong_test(
    y: Sequence[int] | np.ndarray,
    score_a: Sequence[float] | np.ndarray,
    score_b: Sequence[float] | np.ndarray,
    level: float = 0.95,
) -> DelongResult:
    """DeLong's test for two correlated AUCs on the same cases (two-sided)."""
    y = _labels(y)
    score_a, score_b = _scores(score_a, len(y)), _scores(score_b, len(y))
    if _one_class(y):
        warnings.warn(
            "DeLong's test is undefined with one class only; returning NaN.",
            DegenerateDataWarning,
            stacklevel=2,
        )
        nan = math.nan
        return DelongResult(nan, nan, nan, nan, nan, nan, nan, nan, level)
    aucs, cov = delong_components(y, np.vstack([score_a, score_b]))
    difference = float(aucs[0] - aucs[1])
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(variance, 0.0))
    if se > 1e-12:
        z = difference / se
        p_value = float(2 * norm.sf(abs(z)))
    elif abs(difference) <= 1e-12:  # identical rankings: no evidence of a difference
        z, p_value = 0.0, 1.0
    else:  # no variance yet different AUCs (e.g. perfect vs constant scores)
        z, p_value = math.copysign(math.inf, difference), 0.0
    half = float(norm.ppf(0.5 + level / 2)) * se
    return DelongResult(
        float(aucs[0]),
        float(aucs[1]),
        difference,
        se,
        z,
        p_value,
        difference - half,
        difference + half,
        level,
    )


def mcnemar_exact(
    correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray
) -> McNemarResult:
    """McNemar's exact (binomial) test on paired correctness of two classifiers."""
    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape:
        raise DataError(
            f"paired correctness vectors differ in length: {correct_a.shape} vs {correct_b.shape}."
        )
    table = np.array(
        [
            [np.sum(correct_a & correct_b), np.sum(correct_a & ~correct_b)],
            [np.sum(~correct_a & correct_b), np.sum(~correct_a & ~correct_b)],
        ]
    )
    result = mcnemar(table, exact=True)
    return McNemarResult(
        int(table[0, 1]), int(table[1, 0]), float(result.statistic), float(result.pvalue)
    )


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values; NaN entries stay NaN and do not count toward the family.

    Step-down: the k-th smallest of m p-values is multiplied by m - k + 1, then made
    monotone (running maximum) and capped at 1 (Holm 1979).
    """
    p_values = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p_values, np.nan)
    finite = np.flatnonzero(np.isfinite(p_values))
    order = finite[np.argsort(p_values[finite], kind="stable")]
    steps = len(order) - np.arange(len(order))
    adjusted[order] = np.minimum(np.maximum.accumulate(steps * p_values[order]), 1.0)
    return adjusted


def fast_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count one half); NaN when a class is absent."""
    positive = y == 1
    m = int(positive.sum())
    n = len(y) - m
    if m == 0 or n == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[positive].sum() - m * (m + 1) / 2) / (m * n))


def _accuracy(y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    return float(np.mean((score >= threshold) == (y == 1)))


def _balanced_accuracy(y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    predicted = score >= threshold
    positive = y == 1
    if positive.all() or not positive.any():
        return math.nan
    return float((predicted[positive].mean() + (~predicted[~positive]).mean()) / 2)


_BOOTSTRAP_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, float], float]] = {
    "accuracy": _accuracy,
    "balanced_accuracy": _balanced_accuracy,
    "auc": lambda y, score, threshold: fast_auc(y, score),
}
BOOTSTRAP_METRICS = tuple(_BOOTSTRAP_METRICS)


def _subject_strata(subjects: np.ndarray, y: np.ndarray) -> list[list[np.ndarray]]:
    """Image indices grouped by subject, subjects grouped by their majority label."""
    codes, inverse = np.unique(subjects, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(codes)))[:-1]
    groups = np.split(order, bounds)
    strata: dict[int, list[np.ndarray]] = {}
    for group in groups:
        strata.setdefault(round(float(y[group].mean())), []).append(group)
    return [strata[key] for key in sorted(strata)]


class _ResampledAuc:
    """AUC of a resample given as a multiplicity per original image.

    The scores are sorted and their ties grouped once; each resample then costs two
    weighted bincounts instead of a new ranking (Mann-Whitney with ties counted one half).
    """

    def __init__(self, y: np.ndarray, score: np.ndarray) -> None:
        self.order = np.argsort(score, kind="stable")
        sorted_score = score[self.order]
        self.groups = np.concatenate([[0], np.cumsum(sorted_score[1:] != sorted_score[:-1])])
        self.positive = (y[self.order] == 1).astype(float)

    def __call__(self, multiplicity: np.ndarray) -> float:
        weight = multiplicity[self.order].astype(float)
        pos = np.bincount(self.groups, weights=weight * self.positive)
        neg = np.bincount(self.groups, weights=weight * (1.0 - self.positive))
        n_pos, n_neg = pos.sum(), neg.sum()
        if n_pos == 0 or n_neg == 0:
            return math.nan
        below = np.cumsum(neg) - neg
        return float((pos * (below + 0.5 * neg)).sum() / (n_pos * n_neg))


def paired_bootstrap(
    y: Sequence[int] | np.ndarray,
    score_a: Sequence[float] | np.ndarray,
    score_b: Sequence[float] | np.ndarray,
    subjects: Sequence[str] | np.ndarray,
    *,
    threshold_a: float = 0.5,
    threshold_b: float = 0.5,
    metrics: Sequence[str] = BOOTSTRAP_METRICS,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, BootstrapResult]:
    """Bootstrap CIs of metric(a) - metric(b), resampling subjects with replacement.

    Subjects are resampled within strata of their (majority) label so every resample keeps
    both classes, as C-NMC subjects are single-class. CIs are percentile intervals; the
    p-value is the two-sided bootstrap p, 2 * min(P(d <= 0), P(d >= 0)), with +1 smoothing.
    """
    y = _labels(y)
    score_a, score_b = _scores(score_a, len(y)), _scores(score_b, len(y))
    subjects = np.asarray(subjects).astype(str)
    if subjects.shape != y.shape:
        raise DataError(f"need one subject per image: {subjects.shape} vs {y.shape}.")
    unknown = sorted(set(metrics) - set(_BOOTSTRAP_METRICS))
    if unknown:
        raise DataError(
            f"unknown bootstrap metric(s) {unknown}; valid: {list(_BOOTSTRAP_METRICS)}."
        )
    if n_resamples < 1:
        raise DataError(f"n_resamples must be positive, got {n_resamples}.")
    strata = _subject_strata(subjects, y)
    rng = np.random.default_rng(seed)
    draws = np.full((n_resamples, len(metrics)), np.nan)
    auc_a, auc_b = _ResampledAuc(y, score_a), _ResampledAuc(y, score_b)
    for r in range(n_resamples):
        picked = [
            stratum[i] for stratum in strata for i in rng.integers(0, len(stratum), len(stratum))
        ]
        index = np.concatenate(picked)
        ys, sa, sb = y[index], score_a[index], score_b[index]
        for k, name in enumerate(metrics):
            if name == "auc":  # same value as fast_auc on the resample, without re-ranking it
                multiplicity = np.bincount(index, minlength=len(y))
                draws[r, k] = auc_a(multiplicity) - auc_b(multiplicity)
                continue
            function = _BOOTSTRAP_METRICS[name]
            draws[r, k] = function(ys, sa, threshold_a) - function(ys, sb, threshold_b)
    results = {}
    alpha = 1 - level
    for k, name in enumerate(metrics):
        function = _BOOTSTRAP_METRICS[name]
        estimate = function(y, score_a, threshold_a) - function(y, score_b, threshold_b)
        valid = draws[:, k][np.isfinite(draws[:, k])]
        if len(valid) == 0 or not np.isfinite(estimate):
            warnings.warn(
                f"bootstrap of {name} is undefined for these data; returning NaN.",
                DegenerateDataWarning,
                stacklevel=2,
            )
            results[name] = BootstrapResult(
                name, math.nan, math.nan, math.nan, math.nan, n_resamples, 0, level
            )
            continue
        low, high = np.quantile(valid, [alpha / 2, 1 - alpha / 2])
        tail = min(np.sum(valid <= 0), np.sum(valid >= 0))
        p_value = min(1.0, 2 * (tail + 1) / (len(valid) + 1))
        results[name] = BootstrapResult(
            name,
            float(estimate),
            float(low),
            float(high),
            float(p_value),
            n_resamples,
            len(valid),
            level,
        )
    return results


def obuchowski_components(
    y: Sequence[int] | np.ndarray, scores: np.ndarray, clusters: Sequence[str] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their covariance matrix under clustering (Obuchowski 1997, Biometrics 53:567).

    DeLong's placement values are summed per cluster (subject): V10_c over the cluster's
    positives (m_c of them), V01_c over its negatives (n_c). With I10 / I01 clusters holding
    positives / negatives, I clusters in all, M positives and N negatives:
    S10 = I10 / ((I10 - 1) M) sum_c (V10_c - m_c AUC)^2, S01 likewise,
    S11 = I / (I - 1) sum_c (V10_c - m_c AUC)(V01_c - n_c AUC), and
    Cov = S10 / M + S01 / N + (S11 + S11') / (M N). One image per cluster gives DeLong's.
    """
    y = _labels(y)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    clusters = np.asarray(clusters).astype(str)
    if clusters.shape != y.shape:
        raise DataError(f"need one cluster (subject) per image: {clusters.shape} vs {y.shape}.")
    positive = y == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        raise DataError("the clustered AUC needs both classes; one class is absent.")
    t_x = rankdata(scores[:, positive], axis=1)
    t_y = rankdata(scores[:, ~positive], axis=1)
    t_z = rankdata(scores, axis=1)
    aucs = (t_z[:, positive].sum(axis=1) / m - (m + 1) / 2.0) / n
    placement = np.zeros_like(scores)
    placement[:, positive] = (t_z[:, positive] - t_x) / n
    placement[:, ~positive] = 1.0 - (t_z[:, ~positive] - t_y) / m
    _codes, index = np.unique(clusters, return_inverse=True)
    n_clusters = int(index.max()) + 1
    m_c = np.bincount(index, weights=positive, minlength=n_clusters)
    n_c = np.bincount(index, weights=~positive, minlength=n_clusters)
    v10 = np.stack([np.bincount(index, w * positive, n_clusters) for w in placement])
    v01 = np.stack([np.bincount(index, w * ~positive, n_clusters) for w in placement])
    d10 = v10 - m_c[None, :] * aucs[:, None]
    d01 = v01 - n_c[None, :] * aucs[:, None]
    i10, i01 = int((m_c > 0).sum()), int((n_c > 0).sum())
    s10 = d10 @ d10.T * (i10 / ((i10 - 1) * m)) if i10 > 1 else np.zeros((len(aucs),) * 2)
    s01 = d01 @ d01.T * (i01 / ((i01 - 1) * n)) if i01 > 1 else np.zeros((len(aucs),) * 2)
    s11 = d10 @ d01.T * (n_clusters / (n_clusters - 1)) if n_clusters > 1 else 0.0 * s10
    return aucs, s10 / m + s01 / n + (s11 + s11.T) / (m * n)
