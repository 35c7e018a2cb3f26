"""Single-arm interval over test subjects: a cluster bootstrap within class strata.

Whole subjects are resampled with replacement within strata of their (majority) label, so
every resample keeps both classes (C-NMC subjects are single-class) and the interval
reflects sampling new patients, not new cells of the same patients (Field & Welsh 2007).
Each resample is a vector of case weights, so one matrix product evaluates many of them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from leukaug.core.errors import DataError
from leukaug.stats.compare import REQUIRED_COLUMNS
from leukaug.stats.primary_metrics import get_metric

_CHUNK = 256  # resamples evaluated per matrix product (bounds memory to chunk x images)


def subject_weights(
    subjects: np.ndarray, labels: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_resamples, images) case weights: each subject's multiplicity in a stratified resample."""
    codes, index = np.unique(subjects, return_inverse=True)
    share_all = np.bincount(index, weights=labels, minlength=len(codes)) / np.bincount(index)
    strata = np.round(share_all)
    multiplicity = np.zeros((n_resamples, len(codes)))
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        uniform = np.full(len(members), 1.0 / len(members))
        multiplicity[:, members] = rng.multinomial(len(members), uniform, size=n_resamples)
    return multiplicity[:, index]


def subject_bootstrap_ci(
    predictions: pd.DataFrame,
    metric: str,
    *,
    alpha: float = 0.05,
    n_resamples: int = 2000,
    rng_seed: int = 0,
) -> tuple[float, float]:
    """Percentile (1 - alpha) interval of one arm's metric over resampled test subjects."""
    definition = get_metric(metric)
    missing = [c for c in REQUIRED_COLUMNS if c not in predictions.columns]
    if missing:
        raise DataError(f"predictions lack column(s) {missing}; expected {list(REQUIRED_COLUMNS)}.")
    if n_resamples < 1 or not 0 < alpha < 1:
        raise DataError(
            f"need n_resamples >= 1 and alpha in (0, 1); got {n_resamples} and {alpha}."
        )
    y = predictions["label"].to_numpy(dtype=int)
    prob = predictions["prob"].to_numpy(dtype=float)
    subjects = predictions["subject"].astype(str).to_numpy()
    if len(y) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(rng_seed)
    draws = np.concatenate(
        [
            definition.weighted(y, prob, subject_weights(subjects, y, size, rng))
            for size in np.diff(np.r_[0:n_resamples:_CHUNK, n_resamples])
        ]
    )
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return math.nan, math.nan
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
