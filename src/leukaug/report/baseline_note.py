"""The answer box's check on the CNNs: is the best CNN arm better than the `features` arm
(cell features + gradient boosting, no CNN; added by `[study] sanity_baseline` on user
data)? A sentence with the numbers, the mean over seeds on the test split, descriptive
(the verdicts are the tests)."""

from __future__ import annotations

import math

import pandas as pd

from leukaug.arm.kinds import ARM_KINDS
from leukaug.stats.analysis import COMPARISON_SPLIT
from leukaug.stats.primary_metrics import PRIMARY_METRICS, metric_label
from leukaug.stats.study_results import Study

LOWER_IS_BETTER = {name for name, m in PRIMARY_METRICS.items() if not m.higher_is_better}


def _kind(study: Study, name: str) -> str:
    return str(study.arms_named(name)[0].spec.get("kind", "single"))


def _best(rows: pd.DataFrame, column: str, metric: str) -> pd.Series | None:
    rows = rows[rows[column].notna()]
    if rows.empty:
        return None
    index = rows[column].idxmin() if metric in LOWER_IS_BETTER else rows[column].idxmax()
    return rows.loc[index]


def _numbers(row: pd.Series, metric: str) -> str:
    label = metric_label(metric).split(" (")[0]
    text = f"test {label} {row[f'{metric}_mean']:.3f}"
    if metric != "accuracy" and math.isfinite(row.get("accuracy_mean", math.nan)):
        text += f", accuracy {row['accuracy_mean']:.3f}"
    seeds = int(row["n_seeds"])
    return f"{text}; mean of {seeds} seed{'s' if seeds != 1 else ''}"


def baseline_sentence(study: Study, summary: pd.DataFrame, metric: str) -> str | None:
    """One sentence comparing the best CNN arm with the best `features` arm on the primary
    `metric` (`summary`: `stats.analysis.seed_summary`); None without both kinds of arm."""
    column = f"{metric}_mean"
    test = summary[summary["split"] == COMPARISON_SPLIT]
    if column not in test.columns or test.empty:
        return None
    kinds = test["name"].map(lambda name: _kind(study, name))
    cnn = _best(test[kinds.map(lambda kind: ARM_KINDS.get(kind).cnn)], column, metric)
    features = _best(test[kinds == "features"], column, metric)
    if cnn is None or features is None:
        return None
    cnn_value, features_value = float(cnn[column]), float(features[column])
    below = cnn_value > features_value if metric in LOWER_IS_BETTER else cnn_value < features_value
    comparison = (
        f"The best CNN arm, {cnn['name']} ({_numbers(cnn, metric)}), is below the features "
        f"baseline {features['name']} (cell morphology, colour and texture + gradient boosting, "
        f"no CNN: {_numbers(features, metric)})"
    )
    if below:
        return (
            comparison + ": on these data no CNN arm beats a classifier of measured cell "
            "features; read every augmentation verdict against this baseline."
        )
    return (
        f"The best CNN arm, {cnn['name']} ({_numbers(cnn, metric)}), is at or above the "
        f"features baseline {features['name']} (cell features + gradient boosting, no CNN: "
        f"{_numbers(features, metric)}); descriptive means, not a test."
    )
