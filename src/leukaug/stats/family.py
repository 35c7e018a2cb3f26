"""The primary analysis's family: the study's primary metric, and every matched pair of the
reference plan compared on it (`compare_arm`: paired by seed, joined by image_id, inference
over seeds and test subjects), decided together by `decide_verdicts` (moderated run
variances, step-down max-t over exactly these comparisons). The report writes its headline
and verdict table from this table alone.

Accuracy, balanced accuracy and F1 are decided at each run's own operating threshold, chosen
on its validation split (Youden's J, as the report's operating point) unless the study says
`[study] threshold = 0.5` (or another fixed value). Each row also carries the arm's
seed-paired effect on AUC and log loss (unadjusted 95% CIs; they decide nothing), so the
report can say when the verdict and discrimination or calibration point different ways.
"""

from __future__ import annotations

import math

import pandas as pd

from leukaug.core.errors import DataError
from leukaug.stats.analysis import COMPARISON_SPLIT
from leukaug.stats.compare import Comparison, compare_arm
from leukaug.stats.metrics import operating_threshold
from leukaug.stats.pairs import ReferencePlan
from leukaug.stats.primary_metrics import PRIMARY_METRICS, VALIDATION_THRESHOLD, get_metric
from leukaug.stats.study_results import Study
from leukaug.stats.verdicts import VERDICT_COLUMNS, decide_verdicts

ALPHA = 0.05
SECONDARY = ("auc", "log_loss")  # discrimination and calibration beside every verdict


def primary_metric(study: Study) -> str:
    """The study's declared primary metric (default AUC); an unknown one is a DataError naming the file."""
    metric = (study.config.get("study") or {}).get("primary_metric", "auc")
    if metric not in PRIMARY_METRICS:
        raise DataError(
            f"{study.directory / 'study.toml'}: study.primary_metric = {metric!r} is not one of "
            f"{', '.join(PRIMARY_METRICS)}."
        )
    return str(metric)


def study_threshold(study: Study) -> str | float:
    """`[study] threshold`: "validation" (default: each run's own) or a fixed value in (0, 1)."""
    value = (study.config.get("study") or {}).get("threshold", VALIDATION_THRESHOLD)
    if value == VALIDATION_THRESHOLD:
        return VALIDATION_THRESHOLD
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1:
        return float(value)
    raise DataError(
        f"{study.directory / 'study.toml'}: study.threshold = {value!r}; expected "
        f'"{VALIDATION_THRESHOLD}" (each run\'s operating threshold chosen on its validation '
        "split) or a number between 0 and 1 such as 0.5."
    )


def seed_predictions(
    study: Study, name: str, threshold: str | float | None = None
) -> dict[int, pd.DataFrame]:
    """Each seed's test predictions; with a `threshold` ("validation" or a value), the run's
    operating threshold as a column."""
    columns = ["image_id", "subject", "label", "prob"]
    out = {}
    for arm in study.arms_named(name):
        test = arm.predictions.loc[arm.predictions["split"] == COMPARISON_SPLIT, columns]
        if threshold is None:
            out[arm.seed] = test
            continue
        chosen = (
            operating_threshold(arm.predictions) if threshold == VALIDATION_THRESHOLD else threshold
        )
        if chosen is None:
            raise DataError(
                f"arm {arm.arm_id!r} has no validation predictions to choose its operating "
                "threshold; set `threshold = 0.5` in [study] to use a fixed one."
            )
        out[arm.seed] = test.assign(threshold=min(max(float(chosen), 1e-9), 1.0))
    return out


def _secondary(
    arm: dict[int, pd.DataFrame], reference: dict[int, pd.DataFrame], alpha: float
) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in SECONDARY:
        comparison = compare_arm(arm, reference, name, alpha=alpha)
        out |= {
            f"{name}_effect": comparison.effect,
            f"{name}_ci_low": comparison.ci_low,
            f"{name}_ci_high": comparison.ci_high,
        }
    return out


def primary_verdicts(
    study: Study, plan: ReferencePlan, metric: str, *, alpha: float = ALPHA, rng_seed: int = 0
) -> pd.DataFrame:
    """verdicts.csv: every pair of the plan that can be compared; the others join `plan.untested`.

    A seed that one arm of a pair has and the other lacks is an error for that pair (it is not
    tested, and the report says why), never a silent fallback to another seed.
    """
    rows: list[tuple[str, str, Comparison]] = []
    secondary: list[dict[str, float]] = []
    threshold = study_threshold(study) if get_metric(metric).thresholded else None
    for pair in plan.pairs:
        try:
            arm = seed_predictions(study, pair.arm, threshold)
            reference = seed_predictions(study, pair.reference, threshold)
        except DataError as error:
            plan.untested[pair.arm] = str(error)
            continue
        if any(frame.empty for frame in (*arm.values(), *reference.values())):
            plan.untested[pair.arm] = (
                f"it or its reference {pair.reference!r} lacks test predictions"
            )
            continue
        try:
            comparison = compare_arm(arm, reference, metric, alpha=alpha, rng_seed=rng_seed)
            extra = _secondary(arm, reference, alpha)
        except DataError as error:
            plan.untested[pair.arm] = f"against {pair.reference!r}: {error}"
            continue
        rows.append((pair.arm, pair.reference, comparison))
        secondary.append(extra)
    if not rows:
        return pd.DataFrame(columns=list(VERDICT_COLUMNS))
    table = decide_verdicts(rows, metric, alpha)
    table["threshold"] = math.nan if threshold is None else threshold
    return pd.concat([table, pd.DataFrame(secondary, index=table.index)], axis=1)
