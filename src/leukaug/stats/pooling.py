"""Borrowing strength across the family for the between-seed variance.

With 3 seeds an arm's own between-seed variance of Delta_s rests on 2 degrees of freedom,
and a t(2) test at Holm's strictest step over 9 arms needs |t| > 13: no power. The arms of
a family that share a reference and seeds are one arm x seed table of metric values, and
the training-run noise of every cell is estimated together from the two-way (arm + seed)
ANOVA residual: sigma^2 on K(S - 1) degrees of freedom for K arms and S seeds. The table
is rebuilt from the per-seed differences alone: the reference is a row of zeros, because
adding the reference's per-seed value back to every row is a seed effect, which the ANOVA
removes. The residuals are exactly chi-square on K(S - 1) df under a homoscedastic normal
model, although the Delta_s of different arms share the reference's seed effects (a pooled
mean of the arms' own variances would not be: it has about K(S - 1) / (1 + (K - 1) / 4)
effective df). The seed part of var(mean Delta) is then 2 sigma^2 / S.

Each comparison's var_subjects already holds the seed-specific test-sampling noise of the
seed-averaged difference (var_overlap, estimated from the seeds' own subject variances),
which the between-seed variance counts again; the "_net" rules count it once.

Rules (`SEED_VARIANCES`), compared on the same simulated families in
benchmarks/calibration.py, all calibrated there; the rule in use had the best power:

- "pooled_net" (in use): max(2 sigma^2 / S - var_overlap, 0) on K(S - 1) df;
- "pooled": 2 sigma^2 / S on K(S - 1) df;
- "max", "max_net": max(own, pooled) (then net), safe when one arm is less stable than the rest;
- "own": each arm's own between-seed variance on S - 1 df (Hsu's conservative t; no power
  with 3 seeds and 9 arms).

The subject-level variance of each comparison is kept; df = min(seed df, subject df). A
group of one arm has nothing to pool (df S - 1); one seed stays subject-level only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from leukaug.core.errors import ConfigError, unknown_name_message
from leukaug.stats.compare import Comparison, t_test

SEED_VARIANCES = ("max", "pooled", "max_net", "pooled_net", "own")
DEFAULT_SEED_VARIANCE = "pooled_net"
_METHODS = {
    "pooled": "seed-paired t, seed variance pooled over {k} arms (df {df}) + subjects",
    "max": "seed-paired t, seed variance max(own, pooled over {k} arms) (df {df}) + subjects",
}
_NET = ", seed-specific test noise counted once"
ALONE_NOTE = (
    "only arm against this reference with these seeds: seed variance from its own "
    "{s} seeds (df {df}), nothing to pool"
)


def residual_variance(deltas: np.ndarray) -> tuple[float, int]:
    """Arm x seed ANOVA residual variance from (K arms, S seeds) differences to one reference."""
    deltas = np.asarray(deltas, dtype=float)
    n_arms, n_seeds = deltas.shape
    table = np.vstack([np.zeros(n_seeds), deltas])
    residuals = (
        table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + table.mean()
    )
    df = n_arms * (n_seeds - 1)
    return float(np.sum(residuals**2)) / df, df


def retest(comparison: Comparison, var_seeds: float, df: float, **fields: str) -> Comparison:
    se = math.sqrt(var_seeds + comparison.var_subjects)
    p_value, half_width = t_test(comparison.effect, se, df, comparison.alpha)
    return dataclasses.replace(
        comparison,
        var_seeds=var_seeds,
        se=se,
        df=df,
        p_value=p_value,
        ci_low=comparison.effect - half_width,
        ci_high=comparison.effect + half_width,
        ci_half_width=half_width,
        **fields,
    )


def pool_seed_variance(
    rows: Sequence[tuple[str, str, Comparison]], seed_variance: str = DEFAULT_SEED_VARIANCE
) -> list[Comparison]:
    """The family's comparisons with their seed variance (and test) per `seed_variance`.

    Rows sharing a reference name and the same seeds form one pooling group; one-seed
    rows and rows with an undefined metric are returned unchanged.
    """
    if seed_variance not in SEED_VARIANCES:
        raise ConfigError(unknown_name_message("seed variance rule", seed_variance, SEED_VARIANCES))
    comparisons = [comparison for _, _, comparison in rows]
    if seed_variance == "own":
        return comparisons
    groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    for index, (_, reference, comparison) in enumerate(rows):
        if comparison.n_seeds > 1 and math.isfinite(comparison.effect):
            groups.setdefault((reference, comparison.seeds), []).append(index)
    pooled = list(comparisons)
    for (_, seeds), members in groups.items():
        n_seeds = len(seeds)
        if len(members) == 1:
            own = comparisons[members[0]]
            note = ALONE_NOTE.format(s=n_seeds, df=n_seeds - 1)
            pooled[members[0]] = dataclasses.replace(
                own, note="; ".join(filter(None, [own.note, note]))
            )
            continue
        sigma2, df_seeds = residual_variance([comparisons[i].seed_effects for i in members])
        for i in members:
            own = comparisons[i]
            var_seeds = 2 * sigma2 / n_seeds
            base, _, net = seed_variance.partition("_")
            if base == "max":
                var_seeds = max(var_seeds, own.var_seeds)
            if net:  # the seed-specific test noise is already in var_subjects
                var_seeds = max(var_seeds - own.var_overlap, 0.0)
            df = float(min(df_seeds, own.df_subjects)) if own.df_subjects > 0 else float(df_seeds)
            method = _METHODS[base].format(k=len(members), df=f"{df:g}") + (_NET if net else "")
            pooled[i] = retest(own, var_seeds, df, method=method)
    return pooled
