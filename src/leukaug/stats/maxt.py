"""Step-down max-t over the family (Dunnett-type), with the correlation the shared reference
and the shared test patients induce.

Every arm is compared with the same reference runs on the same test patients, so the
family's t statistics are positively correlated; Holm ignores that and is conservative.
The covariance of two contrasts a, b is

- training runs: the reference row's moderated variance / S_0 plus the unpaired seed
  term sigma_b^2 (1 / S_a - 1 / S_0) when they share the reference and seeds
  (`stats.moderation`); for the pooled rules half the smaller seed variance;
- test patients: the stratified covariance of the two comparisons' per-subject
  contributions (the same cluster formula as the subject variance).

The rows' t statistics have different df (each contrast's own moderated df), so each is
first put on the normal scale through its own p-value, z_i = Phi^-1(1 - p_i / 2) (exact
margins; the joint law is the Gaussian copula with the correlation above). The adjusted
p-value of the k-th largest |z| is P(max over the rows not yet rejected of |Z| >= |z_k|),
made monotone (Westfall & Young 1993's step-down; Dunnett & Tamhane 1991). scipy's
`multivariate_t.cdf` integrates it (df 1e5 for the normal) (randomised quasi-Monte Carlo
with a fixed random state, so the same input gives the same p-values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import brentq
from scipy.stats import multivariate_t
from scipy.stats import t as student_t

from leukaug.stats.compare import Comparison

HOLM, MAXT = "holm", "maxt"
MULTIPLICITY = (MAXT, HOLM)
DEFAULT_MULTIPLICITY = MAXT
_RANDOM_STATE = 20260518
_NORMAL_DF = 1e5  # the normal, to 1e-5: scipy's multivariate t integrates faster


def _subject_covariance(a: Comparison, b: Comparison) -> float:
    if not a.subject_ids or a.subject_ids != b.subject_ids:
        return 0.0
    strata = np.asarray(a.subject_strata)
    za, zb = np.asarray(a.subject_effects), np.asarray(b.subject_effects)
    total = 0.0
    for stratum in np.unique(strata):
        mask = strata == stratum
        n = int(mask.sum())
        if n > 1:
            total += (
                n
                / (n - 1)
                * float(np.sum((za[mask] - za[mask].mean()) * (zb[mask] - zb[mask].mean())))
            )
    return total


def _seed_covariance(
    a: Comparison, b: Comparison, reference_a: str, reference_b: str, da: Mapping, db: Mapping
) -> float:
    if reference_a != reference_b or a.seeds != b.seeds or a.reference_seeds != b.reference_seeds:
        return 0.0
    if a.n_seeds < 2:
        return 0.0
    reference_var = da.get("var_run_reference", math.nan)
    if math.isfinite(reference_var):
        seed_var = float(da.get("var_seed_effect", 0.0))
        n_ref = len(a.reference_seeds)
        return reference_var / n_ref + seed_var * (1 / a.n_seeds - 1 / n_ref)
    return min(a.var_seeds, b.var_seeds) / 2


def family_correlation(
    rows: Sequence[tuple[str, str, Comparison]], diagnostics: Sequence[Mapping[str, float]]
) -> np.ndarray:
    """Correlation matrix of the family's t statistics (identity where a row has no SE)."""
    n = len(rows)
    covariance = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            (_, ref_i, a), (_, ref_j, b) = rows[i], rows[j]
            if i == j:
                covariance[i, i] = a.se**2
                continue
            value = _seed_covariance(a, b, ref_i, ref_j, diagnostics[i], diagnostics[j])
            covariance[i, j] = covariance[j, i] = value + _subject_covariance(a, b)
    scale = np.sqrt(np.diag(covariance))
    ok = np.isfinite(scale) & (scale > 1e-12)
    corr = np.eye(n)
    inner = covariance[np.ix_(ok, ok)] / np.outer(scale[ok], scale[ok])
    corr[np.ix_(ok, ok)] = np.clip(inner, -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    values, vectors = np.linalg.eigh(corr)  # nearest valid correlation: clip, rescale
    if values.min() < 1e-8:
        corr = vectors @ np.diag(np.maximum(values, 1e-8)) @ vectors.T
        d = np.sqrt(np.diag(corr))
        corr = corr / np.outer(d, d)
    return corr


def max_abs_tail(c: float, corr: np.ndarray, df: float) -> float:
    """P(max_i |T_i| >= c), T central multivariate t (df) with correlation `corr`."""
    m = len(corr)
    if m == 1:
        return float(2 * student_t.sf(c, min(df, 1e12)))
    upper, lower = np.full(m, c), np.full(m, -c)
    inside = multivariate_t(shape=corr, df=min(df, _NORMAL_DF), allow_singular=True).cdf(
        upper, lower_limit=lower, random_state=_RANDOM_STATE
    )
    return float(min(max(1.0 - inside, 0.0), 1.0))


def stepdown_maxt(t_stats: np.ndarray, corr: np.ndarray, df: float = math.inf) -> np.ndarray:
    """Step-down max-t adjusted p-values (NaN where t is NaN); df inf: normal scores."""
    t_stats = np.asarray(t_stats, dtype=float)
    adjusted = np.full(len(t_stats), np.nan)
    finite = np.flatnonzero(~np.isnan(t_stats))
    order = finite[np.argsort(-np.abs(t_stats[finite]), kind="stable")]
    running = 0.0
    for k, index in enumerate(order):
        remaining = order[k:]
        c = abs(t_stats[index])
        p = 0.0 if math.isinf(c) else max_abs_tail(c, corr[np.ix_(remaining, remaining)], df)
        running = max(running, p)
        adjusted[index] = running
    return adjusted


def maxt_critical(corr: np.ndarray, df: float, alpha: float) -> float:
    df = min(df, 1e12)
    """The first step's critical |t|: P(max |T| >= c) = alpha (between Sidak's one-test and
    Bonferroni's bounds)."""
    m = len(corr)
    low = float(student_t.ppf(1 - alpha / 2, df))
    high = float(student_t.ppf(1 - alpha / (2 * m), df))
    if m == 1 or high - low < 1e-9:
        return high
    return float(brentq(lambda c: max_abs_tail(c, corr, df) - alpha, low, high + 1e-6, xtol=1e-4))
