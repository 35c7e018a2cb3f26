"""The verdict rule: a multiplicity adjustment over exactly the family of primary tests that
decide the verdicts.

The family's comparisons first get their between-seed variance from the family: by default
each row's own training-run variance moderated toward the family (`leukaug.stats.moderation`,
"moderated"), so an unstable reference or arm is not hidden by the stable ones and 3 seeds
can still detect large effects; the pooled rules of `leukaug.stats.pooling` stay available.
The family is then adjusted by the step-down max-t that uses the correlation the shared
reference induces (`leukaug.stats.maxt`, "maxt", the default) or by Holm ("holm"); Holm
also where a reference has more seeds than its arms (`effective_multiplicity`).

An arm "helps" (or "hurts") when its adjusted p-value is <= alpha, in the metric's better
(worse) direction; otherwise there is "no detectable difference", reported with what the
study could have detected. The printed interval is the one that matches the adjusted test:
the CI at level 1 - alpha * p / p_adjusted (for Holm, its step level alpha / (m - rank + 1)
when the adjusted p-values are not capped or tied), which excludes zero exactly when the
verdict is "helps" or "hurts". The unadjusted interval follows it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm
from scipy.stats import t as student_t

from leukaug.core.errors import ConfigError, DataError, unknown_name_message
from leukaug.stats.classical import holm
from leukaug.stats.compare import Comparison
from leukaug.stats.maxt import (
    DEFAULT_MULTIPLICITY,
    HOLM,
    MAXT,
    MULTIPLICITY,
    family_correlation,
    maxt_critical,
    stepdown_maxt,
)
from leukaug.stats.moderation import DIAGNOSTIC_COLUMNS, MODERATED, moderate_family
from leukaug.stats.pooling import SEED_VARIANCES, pool_seed_variance
from leukaug.stats.primary_metrics import get_metric

SEED_VARIANCE_RULES = (MODERATED, *SEED_VARIANCES)
DEFAULT_SEED_VARIANCE_RULE = MODERATED

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
    "multiplicity",
    "seed_variance",
    *DIAGNOSTIC_COLUMNS,
]
HELPS, HURTS, NO_DIFFERENCE = "helps", "hurts", "no detectable difference"
POWER = 0.8  # the minimum detectable effect is the one found with 80% power


def _verdict(comparison: Comparison, p_adjusted: float, alpha: float) -> str:
    if not math.isfinite(p_adjusted) or p_adjusted > alpha or comparison.effect == 0:
        return NO_DIFFERENCE
    better = (comparison.effect > 0) == comparison.higher_is_better
    return HELPS if better else HURTS


def _adjusted_level(p_value: float, p_adjusted: float, alpha: float, family: int) -> float:
    """Two-sided alpha of the interval that inverts the adjusted test at zero."""
    if p_value > 0 and math.isfinite(p_adjusted):
        return alpha * p_value / p_adjusted
    return alpha / family  # p = 0: the strictest (Bonferroni) level


def minimum_detectable_effect(
    se: float, df: float, alpha: float, family: int, critical: float | None = None
) -> float:
    """Smallest |effect| found with 80% power at the strictest step: the max-t's critical |z|
    (`critical`, mapped to this row's t), or Holm's alpha / family when it is None."""
    level = 2 * norm.sf(critical) if critical is not None else alpha / family
    first = student_t.isf(level / 2, df)
    return float((first + student_t.ppf(POWER, df)) * se)


def _normal_scores(p_values: np.ndarray) -> np.ndarray:
    """|z| with the same two-sided p-value as each row's own t (its own df); NaN stays NaN."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(p_values), norm.isf(p_values / 2), np.nan)


def effective_multiplicity(rows: Sequence[tuple[str, str, Comparison]], multiplicity: str) -> str:
    """The rule actually applied: Holm in place of max-t when a reference has more seeds than
    its arms (there the max-t's assumed correlation made it anti-conservative in calibration:
    0.075 [0.043, 0.121] against Holm's 0.045 with a 9-seed unstable reference)."""
    unequal = any(len(c.reference_seeds) > c.n_seeds > 1 for _, _, c in rows)
    return HOLM if multiplicity == MAXT and unequal else multiplicity


def _adjust(
    rows: Sequence[tuple[str, str, Comparison]],
    diagnostics: Sequence[dict[str, float]],
    multiplicity: str,
    alpha: float,
    detectable: bool,
) -> tuple[np.ndarray, float | None]:
    """Adjusted p-values and, for max-t, the first step's critical |t| (None for Holm)."""
    p_values = np.array([c.p_value for _, _, c in rows], dtype=float)
    if multiplicity == HOLM:
        return holm(p_values), None
    finite = np.isfinite(p_values)
    if not finite.any():
        return p_values, None
    corr = family_correlation(rows, diagnostics)
    adjusted = np.fmax(stepdown_maxt(_normal_scores(p_values), corr, math.inf), p_values)
    critical = maxt_critical(corr[np.ix_(finite, finite)], math.inf, alpha) if detectable else None
    return adjusted, critical


def decide_verdicts(
    rows: Sequence[tuple[str, str, Comparison]],
    metric: str,
    alpha: float = 0.05,
    *,
    seed_variance: str = DEFAULT_SEED_VARIANCE_RULE,
    multiplicity: str = DEFAULT_MULTIPLICITY,
    detectable: bool = True,
) -> pd.DataFrame:
    """The verdicts.csv table: one row per (arm, reference, comparison), adjusted over all rows.

    `seed_variance` picks how the between-seed variance borrows strength across the rows
    (`SEED_VARIANCE_RULES`: "moderated", or a rule of `leukaug.stats.pooling`);
    `multiplicity` is "maxt" (step-down max-t) or "holm". `detectable=False` skips the
    minimum detectable effect (simulations).
    """
    definition = get_metric(metric)
    if seed_variance not in SEED_VARIANCE_RULES:
        raise ConfigError(
            unknown_name_message("seed variance rule", seed_variance, SEED_VARIANCE_RULES)
        )
    if multiplicity not in MULTIPLICITY:
        raise ConfigError(unknown_name_message("multiplicity rule", multiplicity, MULTIPLICITY))
    for arm, _reference, comparison in rows:
        if comparison.metric != metric:
            raise DataError(
                f"arm {arm!r} was compared on {comparison.metric!r}, but the verdicts are on "
                f"{metric!r}; compare every arm on the study's primary metric."
            )
    if seed_variance == MODERATED:
        moderated, diagnostics = moderate_family(rows)
    else:
        moderated = pool_seed_variance(rows, seed_variance)
        diagnostics = [dict.fromkeys(DIAGNOSTIC_COLUMNS, math.nan) for _ in rows]
    rows = [(arm, reference, c) for (arm, reference, _), c in zip(rows, moderated, strict=True)]
    p_values = np.array([c.p_value for _, _, c in rows], dtype=float)
    multiplicity = effective_multiplicity(rows, multiplicity)
    adjusted, critical = _adjust(rows, diagnostics, multiplicity, alpha, detectable)
    family = int(np.isfinite(p_values).sum())
    records = []
    for (arm, reference, comparison), p_adjusted, extra in zip(
        rows, adjusted, diagnostics, strict=True
    ):
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
            "multiplicity": multiplicity,
            "seed_variance": seed_variance,
            **extra,
        }
        if math.isfinite(comparison.p_value):
            level = _adjusted_level(comparison.p_value, float(p_adjusted), alpha, family)
            half = float(student_t.ppf(1 - level / 2, comparison.df) * comparison.se)
            record.update(
                ci_low=comparison.effect - half,
                ci_high=comparison.effect + half,
                ci_level=1 - level,
                ci_half_width=half,
            )
            if detectable:
                mde = minimum_detectable_effect(
                    comparison.se, comparison.df, alpha, family, critical
                )
                record["mde"] = mde
                if verdict == NO_DIFFERENCE:
                    detectable_note = (
                        f"could have detected |effect| >= {mde:.3g} with 80% power "
                        f"(adjusted CI half-width {half:.3g})"
                    )
                    record["note"] = "; ".join(filter(None, [detectable_note, comparison.note]))
        records.append(record)
    return pd.DataFrame.from_records(records, columns=list(VERDICT_COLUMNS) + EXTRA_COLUMNS)
