"""The verdict rule: Holm over exactly the family of primary tests that decide the verdicts.

The family's comparisons first borrow strength for their between-seed variance
(`leukaug.stats.pooling`: by default the arm x seed ANOVA residual variance of the arms
that share the reference and seeds, on K(S - 1) df), so 3 seeds can detect large effects.

An arm "helps" (or "hurts") when its Holm-adjusted p-value is <= alpha, in the metric's
better (worse) direction; otherwise there is "no detectable difference", reported with
what the study could have detected. The printed interval is the one that matches the
adjusted test: the CI at level 1 - alpha * p / p_adjusted (Holm's step level for this arm,
alpha / (m - rank + 1), when the adjusted p-values are not capped or tied), which excludes
zero exactly when the verdict is "helps" or "hurts". The unadjusted interval follows it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from leukaug.core.errors import DataError
from leukaug.stats.classical import holm
from leukaug.stats.compare import Comparison
from leukaug.stats.pooling import DEFAULT_SEED_VARIANCE, pool_seed_variance
from leukaug.stats.primary_metrics import get_metric

VERDICT_COLUMNS = (
    "arm",
    "reference",
    "metric",
    "effect",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "verdict",
    "n_seeds",
    "n_subjects",
    "method",
)
EXTRA_COLUMNS = [
    "ci_level",
    "ci_half_width",
    "ci_low_unadjusted",
    "ci_high_unadjusted",
    "mde",
    "se",
    "df",
    "family_size",
    "higher_is_better",
    "note",
]
HELPS, HURTS, NO_DIFFERENCE = "helps", "hurts", "no detectable difference"
POWER = 0.8  # the minimum detectable effect is the one found with 80% power


def _verdict(comparison: Comparison, p_adjusted: float, alpha: float) -> str:
    if not math.isfinite(p_adjusted) or p_adjusted > alpha or comparison.effect == 0:
        return NO_DIFFERENCE
    better = (comparison.effect > 0) == comparison.higher_is_better
    return HELPS if better else HURTS


def _adjusted_level(p_value: float, p_adjusted: float, alpha: float, family: int) -> float:
    """Two-sided alpha of the interval that inverts the Holm-adjusted test at zero."""
    if p_value > 0 and math.isfinite(p_adjusted):
        return alpha * p_value / p_adjusted
    return alpha / family  # p = 0: the first (strictest) Holm step


def minimum_detectable_effect(se: float, df: float, alpha: float, family: int) -> float:
    """Smallest |effect| found with 80% power at the strictest Holm step (alpha / family)."""
    quantiles = student_t.ppf(1 - alpha / (2 * family), df) + student_t.ppf(POWER, df)
    return float(quantiles * se)


def decide_verdicts(
    rows: Sequence[tuple[str, str, Comparison]],
    metric: str,
    alpha: float = 0.05,
    *,
    seed_variance: str = DEFAULT_SEED_VARIANCE,
) -> pd.DataFrame:
    """The verdicts.csv table: one row per (arm, reference, comparison), Holm over all rows.

    `seed_variance` picks how the between-seed variance borrows strength across the rows
    (see `leukaug.stats.pooling.SEED_VARIANCES`).
    """
    definition = get_metric(metric)
    for arm, _reference, comparison in rows:
        if comparison.metric != metric:
            raise DataError(
                f"arm {arm!r} was compared on {comparison.metric!r}, but the verdicts are on "
                f"{metric!r}; compare every arm on the study's primary metric."
            )
    pooled = pool_seed_variance(rows, seed_variance)
    rows = [(arm, reference, c) for (arm, reference, _), c in zip(rows, pooled, strict=True)]
    p_values = np.array([c.p_value for _, _, c in rows], dtype=float)
    adjusted = holm(p_values)
    family = int(np.isfinite(p_values).sum())
    records = []
    for (arm, reference, comparison), p_adjusted in zip(rows, adjusted, strict=True):
        verdict = _verdict(comparison, float(p_adjusted), alpha)
        record = {
            "arm": arm,
            "reference": reference,
            "metric": metric,
            "effect": comparison.effect,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "p_value": comparison.p_value,
            "p_adjusted": float(p_adjusted),
            "verdict": verdict,
            "n_seeds": comparison.n_seeds,
            "n_subjects": comparison.n_subjects,
            "method": comparison.method,
            "ci_level": math.nan,
            "ci_half_width": math.nan,
            "ci_low_unadjusted": comparison.ci_low,
            "ci_high_unadjusted": comparison.ci_high,
            "mde": math.nan,
            "se": comparison.se,
            "df": comparison.df,
            "family_size": family,
            "higher_is_better": definition.higher_is_better,
            "note": comparison.note,
        }
        if math.isfinite(comparison.p_value):
            level = _adjusted_level(comparison.p_value, float(p_adjusted), alpha, family)
            half = float(student_t.ppf(1 - level / 2, comparison.df) * comparison.se)
            mde = minimum_detectable_effect(comparison.se, comparison.df, alpha, family)
            record.update(
                ci_low=comparison.effect - half,
                ci_high=comparison.effect + half,
                ci_level=1 - level,
                ci_half_width=half,
                mde=mde,
            )
            if verdict == NO_DIFFERENCE:
                detectable = (
                    f"could have detected |effect| >= {mde:.3g} with 80% power "
                    f"(adjusted CI half-width {half:.3g})"
                )
                record["note"] = "; ".join(filter(None, [detectable, comparison.note]))
        records.append(record)
    return pd.DataFrame.from_records(records, columns=list(VERDICT_COLUMNS) + EXTRA_COLUMNS)
