"""Each row's own training-run variance, moderated toward the family (the rule in use).

The arms that share a reference and seeds, with the reference, form an (arm x seed) table
of metric values y_is = mu_i + b_s + e_is: b_s is what seed s does to every row (same
initialisation stream, data order), e_is the row's own training-run luck with variance
sigma_i^2, which may differ between rows (an unstable reference or arm). A contrast
arm - reference paired by seed cancels b_s; its training-run variance is
sigma_a^2 / S_a + sigma_0^2 / S_0 + sigma_b^2 (1 / S_a - 1 / S_0), the last term being the
price of the reference's unpaired extra seeds (S_0 >= S_a; zero with equal allocation).

1. Own row variances (stability variances in the sense of Shukla 1972): each row's residual
   about its mean and the seed effects estimated from the *other* rows,
   s_i^2 = sum_s (y_is - ybar_i. - bhat_s^(-i))^2 / (S - 1), on d_i = S - 1 df. It is never
   negative (Shukla's unbiased form is, with 3 seeds, half of the time), and its expectation
   is sigma_i^2 + sum_{j != i} sigma_j^2 / (t - 1)^2 for t rows: the second term is
   subtracted after moderation (never below half the moderated value). A reference with
   extra seeds uses its variance over all of them less the seed-effect variance, on
   S_0 - 1 df.
2. A prior from the family (Smyth 2004, limma's `fitFDist`): sigma_i^2 ~ s0^2 d0 /
   chi^2_d0, with d0 and s0^2 from the mean and variance of log s_i^2 (digamma/trigamma
   moments). d0 is capped at (t - 2)(S - 1), the residual df the rest of the table holds.
3. Robustness (in the spirit of Phipson et al. 2016): a row whose own variance is in the
   upper 20% of what the *other* rows' prior predicts, p_i = P(F(d_i, d0) > s_i^2 / s0^2)
   < 0.2, gets the prior df d0 * (p_i / 0.2)^2: an unstable reference or arm keeps its own
   variance instead of borrowing the stable rows'. With equal variances most rows keep the
   full prior and the power stays near the pooled rule's (0.2 balanced the two in
   simulation: 0.5 overstated equal variances by ~15-35%, 0.1 let a 3x reference through
   more often).
4. The moderated variance (d0_i s0^2 + d_i s_i^2) / (d0_i + d_i) on d0_i + d_i df.
5. The reference is released sooner: its prior df is d0 * (p_0 / 0.5)^2, so it borrows in
   full only when its own variance is in the lower half of what the other rows predict. It
   sits in every contrast, so an underestimate of it makes every arm's test too liberal at
   once; with 3 seeds its own variance rests on 2 df and a 9x-variance reference fell
   inside the 0.2 cut of step 3 in about one family in six, which failed the
   unstable-reference calibration (BENCHMARKS.md, "reference robustness"). Measured
   against never shrinking it (max(own, moderated)) and no borrowing at all (own variance
   on S - 1 df): those cost power with equal variances (+0.15 AUC, 3 seeds: 0.23 of
   families instead of 0.41), or did not meet the goal (0.062 worst arm).

The contrast's df is the Welch-Satterthwaite df of its arm and reference parts, at most the
subject df. As in "pooled_net", the seed-specific test noise already in var_subjects is
counted once (var_overlap is subtracted). sigma_b^2 comes from the seed means of the table:
var_s(ybar_.s) - sum_i s_i^2 / t^2, at least 0; the pairing correlation of a seed's arm and
reference values is sigma_b^2 / sqrt((sigma_a^2 + sigma_b^2)(sigma_0^2 + sigma_b^2)).
Assumptions: the rows' run effects are independent and roughly normal, the seed effect is
additive and shared, and rows with a variance in the lower half of the family are
exchangeable with it. See docs/statistics.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import chdtrc, digamma, fdtrc, polygamma, zeta

from leukaug.stats.compare import Comparison
from leukaug.stats.pooling import ALONE_NOTE, retest

MODERATED = "moderated"
ROBUST_TAIL = 0.2  # rows with a prior-predictive upper tail below this borrow less
ROBUST_TAIL_REFERENCE = 0.5  # the reference, in every contrast, borrows less sooner
METHOD = (
    "seed-paired t, each row's own run variance moderated over {k} arms + reference "
    "(df {df}) + subjects, seed-specific test noise counted once"
)
DIAGNOSTIC_COLUMNS = (
    "var_run_arm",
    "var_run_reference",
    "var_run_arm_own",
    "var_run_reference_own",
    "prior_df",
    "prior_var",
    "var_seed_effect",
    "pairing_correlation",
    "n_reference_seeds",
    "se_equal_allocation",
    "df_run_arm",
    "df_run_reference",
)


@dataclass(frozen=True)
class RowVariances:
    """Per row of the table (reference first): own and moderated run variances, and the prior."""

    own: np.ndarray
    df: np.ndarray
    moderated: np.ndarray
    moderated_df: np.ndarray
    prior_df: float
    prior_var: float
    seed_var: float


def _trigamma(x: np.ndarray | float) -> np.ndarray | float:
    return zeta(2, x)  # Hurwitz zeta: the trigamma function, as a fast ufunc


def _trigamma_inverse(value: float) -> float:
    """x with trigamma(x) = value (limma's Newton iteration from 0.5 + 1 / value)."""
    if value > 1e7:
        return 1 / math.sqrt(value)
    if value < 1e-6:
        return 1 / value
    x = 0.5 + 1 / value
    for _ in range(50):
        trigamma = float(_trigamma(x))
        step = trigamma * (1 - trigamma / value) / float(polygamma(2, x))
        x += step
        if -step / x < 1e-8:
            break
    return x


def fit_prior(variances: np.ndarray, df: np.ndarray) -> tuple[float, float]:
    """limma's fitFDist by moments: prior df d0 (inf: no spread beyond chance) and scale s0^2."""
    variances = np.asarray(variances, dtype=float)
    df = np.asarray(df, dtype=float)
    positive = variances[variances > 0]
    if len(positive) == 0:
        return math.inf, 0.0
    floor = 1e-6 * float(np.mean(positive))
    z = np.log(np.maximum(variances, floor)) - digamma(df / 2) + np.log(df / 2)
    mean = float(np.mean(z))
    spread = float(np.var(z, ddof=1)) - float(np.mean(_trigamma(df / 2))) if len(z) > 1 else 0
    if spread <= 0:
        return math.inf, math.exp(mean)
    d0 = 2 * _trigamma_inverse(spread)
    return d0, math.exp(mean + digamma(d0 / 2) - math.log(d0 / 2))


def _tail(own: float, d: float, d0: float, s02: float) -> float:
    """P(a row drawn from the prior has a variance above `own`): F(d, d0), chi2 if d0 = inf."""
    if s02 <= 0:
        return 0.0 if own > 0 else 1.0
    if math.isinf(d0):
        return float(chdtrc(d, own * d / s02))
    return float(fdtrc(d, d0, own / s02))


def row_variances(table: np.ndarray, reference_values: np.ndarray | None = None) -> RowVariances:
    """Own and moderated run variances of each row of a (rows x seeds) table, reference first.

    `reference_values`: the reference's values over all its seeds when it has more seeds than
    the table's columns (the paired ones); None with equal allocation.
    """
    table = np.asarray(table, dtype=float)
    t, n_seeds = table.shape
    centred = table - table.mean(axis=1, keepdims=True)
    others = (centred.sum(axis=0, keepdims=True) - centred) / max(t - 1, 1)
    own = np.sum((centred - others) ** 2, axis=1) / (n_seeds - 1)
    df = np.full(t, n_seeds - 1.0)
    corrected = np.ones(t, bool)
    seed_var = max(float(np.var(table.mean(axis=0), ddof=1)) - float(own.sum()) / t**2, 0.0)
    if reference_values is not None and len(reference_values) > n_seeds:
        total = float(np.var(reference_values, ddof=1))
        own[0], df[0], corrected[0] = (
            max(total - seed_var, total / 2),
            len(reference_values) - 1,
            False,
        )
    d0, s02 = fit_prior(own, df)
    d0 = min(d0, max(t - 2, 0) * (n_seeds - 1.0))
    prior_df = np.empty(t)
    for i in range(t):
        rest = np.arange(t) != i
        d0_rest, s02_rest = fit_prior(own[rest], df[rest]) if t > 2 else (math.inf, own[i])
        tail = _tail(float(own[i]), float(df[i]), d0_rest, s02_rest)
        cut = ROBUST_TAIL_REFERENCE if i == 0 else ROBUST_TAIL  # step 5: the reference
        prior_df[i] = d0 * min(1.0, tail / cut) ** 2
    moderated = (prior_df * s02 + df * own) / (prior_df + df)
    excess = (moderated.sum() - moderated) / max(t - 1, 1) ** 2
    moderated = np.where(corrected, np.maximum(moderated - excess, moderated / 2), moderated)
    return RowVariances(own, df, moderated, prior_df + df, float(d0), float(s02), seed_var)


def satterthwaite(parts: Sequence[tuple[float, float]]) -> float:
    total = sum(v for v, _ in parts)
    denominator = sum(v**2 / d for v, d in parts if v > 0)
    return total**2 / denominator if denominator > 0 else math.inf


def moderate_family(
    rows: Sequence[tuple[str, str, Comparison]],
) -> tuple[list[Comparison], list[dict[str, float]]]:
    """The family's comparisons retested with moderated row variances, and per row the
    diagnostics of `DIAGNOSTIC_COLUMNS` (NaN where a row was not moderated).

    Rows sharing a reference name, the same arm seeds and the same reference seeds form one
    table; a table of one arm has nothing to borrow (its own t on S - 1 df, as before).
    """
    comparisons = [comparison for _, _, comparison in rows]
    diagnostics = [dict.fromkeys(DIAGNOSTIC_COLUMNS, math.nan) for _ in rows]
    groups: dict[tuple, list[int]] = {}
    for index, (_, reference, comparison) in enumerate(rows):
        if comparison.n_seeds > 1 and math.isfinite(comparison.effect):
            key = (reference, comparison.seeds, comparison.reference_seeds)
            groups.setdefault(key, []).append(index)
    result = list(comparisons)
    for (_, seeds, reference_seeds), members in groups.items():
        first = comparisons[members[0]]
        if len(members) == 1:
            note = ALONE_NOTE.format(s=len(seeds), df=len(seeds) - 1)
            result[members[0]] = dataclasses.replace(
                first, note="; ".join(filter(None, [first.note, note]))
            )
            continue
        n_arm, n_ref = len(seeds), len(reference_seeds)
        paired_reference = np.array(first.reference_seed_values[:n_arm])
        table = np.vstack([paired_reference, *[comparisons[i].arm_seed_values for i in members]])
        extra = np.array(first.reference_seed_values) if n_ref > n_arm else None
        rows_var = row_variances(table, extra)
        v_ref, df_ref = rows_var.moderated[0], rows_var.moderated_df[0]
        unpaired = rows_var.seed_var * (1 / n_arm - 1 / n_ref)
        for position, i in enumerate(members, start=1):
            own = comparisons[i]
            v_arm, df_arm = rows_var.moderated[position], rows_var.moderated_df[position]
            var_seeds = max(v_arm / n_arm + v_ref / n_ref + unpaired - own.var_overlap, 0.0)
            df = satterthwaite([(v_arm / n_arm, df_arm), (v_ref / n_ref, df_ref)])
            if own.df_subjects > 0:
                df = min(df, own.df_subjects)
            df = float(df if math.isfinite(df) else own.df_subjects or rows_var.moderated_df[0])
            method = METHOD.format(k=len(members), df=f"{df:.3g}")
            result[i] = retest(own, var_seeds, df, method=method)
            equal = max((v_arm + v_ref) / n_arm - own.var_overlap, 0.0)
            b = rows_var.seed_var
            diagnostics[i] = {
                "var_run_arm": float(v_arm),
                "var_run_reference": float(v_ref),
                "var_run_arm_own": float(rows_var.own[position]),
                "var_run_reference_own": float(rows_var.own[0]),
                "prior_df": rows_var.prior_df,
                "prior_var": rows_var.prior_var,
                "var_seed_effect": b,
                "pairing_correlation": b / math.sqrt((v_arm + b) * (v_ref + b))
                if (v_arm + b) * (v_ref + b) > 0
                else math.nan,
                "n_reference_seeds": float(n_ref),
                "se_equal_allocation": math.sqrt(equal + own.var_subjects),
                "df_run_arm": float(df_arm),  # the moderated variances' df: own + prior
                "df_run_reference": float(df_ref),
            }
    return result, diagnostics
