"""The report of a cross-validated study: the per-fold table and the method in words.

The numbers come from `leukaug.stats.cross_validation` (per fold, and on the pooled
out-of-fold predictions that decide the verdicts); this module only formats them.
"""

from __future__ import annotations

import pandas as pd

from leukaug.report.tables import Table, number
from leukaug.stats.cross_validation import POOLED
from leukaug.stats.primary_metrics import get_metric

METHOD = (
    "Cross-validation ({k} folds, subject-level, stratified by class, fixed by split_seed; "
    "dataset.json lists each fold's subjects): every arm x seed was trained once per fold and "
    "predicted that fold's held-out images, so each image has exactly one out-of-fold "
    "prediction per arm and seed (out_of_fold.csv). The fold contrasts are not independent "
    "(overlapping training sets, one data set), so they are not tested as replicates; the "
    "verdicts compare the pooled out-of-fold predictions, per seed, with the seed-paired, "
    "subject-clustered test of the hold-out rule (docs/statistics.md, Cross-validation). "
    "Per-fold values (fold_metrics.csv) are descriptive."
)


def _mean_sd(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return number(float("nan"), 3)
    if len(values) == 1:
        return number(values.iloc[0], 3)
    return f"{number(values.mean(), 3)} ± {number(values.std(ddof=1), 3)}"


def fold_table(fold_metrics: pd.DataFrame, metric: str) -> Table | None:
    """Per arm name: the primary metric on each fold's test images and on the pooled
    out-of-fold predictions, mean ± SD over seeds."""
    if fold_metrics.empty:
        return None
    label = get_metric(metric).label
    folds = sorted(f for f in fold_metrics["fold"].unique() if f != POOLED)
    rows = []
    for name, part in fold_metrics.groupby("name", sort=False):
        cells = [_mean_sd(part.loc[part["fold"] == fold, "value"]) for fold in folds]
        pooled = part[part["fold"] == POOLED]
        rows.append([str(name), str(pooled["seed"].nunique()), *cells, _mean_sd(pooled["value"])])
    sizes = fold_metrics[fold_metrics["fold"] != POOLED].drop_duplicates("fold")
    images = ", ".join(f"fold {int(r.fold)}: {int(r.n_images)}" for r in sizes.itertuples())
    return Table(
        "folds",
        f"Table 9. Primary metric ({label}) per cross-validation fold and pooled out of fold, "
        "mean ± SD over seeds.",
        ["Arm", "Seeds", *[f"Fold {fold}" for fold in folds], "Pooled (out of fold)"],
        rows,
        [
            f"Test images per fold: {images}. Each fold's value uses only its own held-out "
            "images; the pooled value uses every image once and is the one the verdicts test.",
        ],
    )
