"""The primary analysis's family: the study's primary metric, and every matched pair of the
reference plan compared on it (`compare_arm`: paired by seed, joined by image_id, inference
over seeds and test subjects), decided together by `decide_verdicts` (Holm over exactly
these comparisons). The report writes its headline and verdict table from this table alone.
"""

from __future__ import annotations

import pandas as pd

from leukaug.core.errors import DataError
from leukaug.stats.analysis import COMPARISON_SPLIT
from leukaug.stats.compare import Comparison, compare_arm
from leukaug.stats.pairs import ReferencePlan
from leukaug.stats.primary_metrics import PRIMARY_METRICS
from leukaug.stats.study_results import Study
from leukaug.stats.verdicts import VERDICT_COLUMNS, decide_verdicts

ALPHA = 0.05


def primary_metric(study: Study) -> str:
    """The study's declared primary metric (default AUC); an unknown one is a DataError naming the file."""
    metric = (study.config.get("study") or {}).get("primary_metric", "auc")
    if metric not in PRIMARY_METRICS:
        raise DataError(
            f"{study.directory / 'study.toml'}: study.primary_metric = {metric!r} is not one of "
            f"{', '.join(PRIMARY_METRICS)}."
        )
    return str(metric)


def _test_by_seed(study: Study, name: str) -> dict[int, pd.DataFrame]:
    columns = ["image_id", "subject", "label", "prob"]
    return {
        arm.seed: arm.predictions.loc[arm.predictions["split"] == COMPARISON_SPLIT, columns]
        for arm in study.arms_named(name)
    }


def primary_verdicts(
    study: Study, plan: ReferencePlan, metric: str, *, alpha: float = ALPHA, rng_seed: int = 0
) -> pd.DataFrame:
    """verdicts.csv: every pair of the plan that can be compared; the others join `plan.untested`.

    A seed that one arm of a pair has and the other lacks is an error for that pair (it is not
    tested, and the report says why), never a silent fallback to another seed.
    """
    rows: list[tuple[str, str, Comparison]] = []
    for pair in plan.pairs:
        arm, reference = _test_by_seed(study, pair.arm), _test_by_seed(study, pair.reference)
        if any(frame.empty for frame in (*arm.values(), *reference.values())):
            plan.untested[pair.arm] = (
                f"it or its reference {pair.reference!r} lacks test predictions"
            )
            continue
        try:
            comparison = compare_arm(arm, reference, metric, alpha=alpha, rng_seed=rng_seed)
        except DataError as error:
            plan.untested[pair.arm] = f"against {pair.reference!r}: {error}"
            continue
        rows.append((pair.arm, pair.reference, comparison))
    if not rows:
        return pd.DataFrame(columns=list(VERDICT_COLUMNS))
    return decide_verdicts(rows, metric, alpha)
