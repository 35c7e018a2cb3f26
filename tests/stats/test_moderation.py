"""Issue 18: each row's own run variance moderated toward the family, the step-down max-t,
extra reference seeds, and thresholded metrics at each run's validation threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import digamma
from scipy.stats import norm
from sklearn.metrics import balanced_accuracy_score
from statsmodels.stats.multitest import multipletests

from leukaug.stats import compare_arm, decide_verdicts
from leukaug.stats.compare import Comparison
from leukaug.stats.maxt import max_abs_tail, stepdown_maxt
from leukaug.stats.moderation import fit_prior, moderate_family, row_variances
from leukaug.stats.pooling import pool_seed_variance
from leukaug.stats.primary_metrics import get_metric, metric_label
from leukaug.stats.simulate import SimulationModel, simulate_study


def _row(arm: np.ndarray, reference: np.ndarray) -> Comparison:
    """A comparison built from per-seed metric values alone (no test-patient variance)."""
    n = len(arm)
    deltas = arm - reference[:n]
    effect = float(arm.mean() - reference.mean())
    var_seeds = float(np.var(deltas, ddof=1)) / n
    return Comparison(
        metric="auc",
        higher_is_better=True,
        effect=effect,
        ci_low=math.nan,
        ci_high=math.nan,
        ci_half_width=math.nan,
        p_value=0.5,
        se=math.sqrt(var_seeds),
        df=n - 1.0,
        alpha=0.05,
        var_seeds=var_seeds,
        var_subjects=0.0,
        arm_value=float(arm.mean()),
        reference_value=float(reference.mean()),
        seed_effects=tuple(deltas),
        seeds=tuple(range(n)),
        n_seeds=n,
        n_subjects=0,
        n_images=0,
        method="",
        note="",
        arm_seed_values=tuple(arm),
        reference_seeds=tuple(range(len(reference))),
        reference_seed_values=tuple(reference),
    )


def _families(reference_sd: float, repetitions: int, n_ref: int = 3, arm_sd: float = 1.0):
    """Null families: 9 arms, 3 seeds, a shared seed effect, the reference's SD as given."""
    rng = np.random.default_rng(18)
    for _ in range(repetitions):
        seed_effect = rng.normal(0, 0.5, n_ref)
        reference = seed_effect + rng.normal(0, reference_sd, n_ref)
        sds = np.r_[np.full(8, 1.0), arm_sd]
        arms = seed_effect[:3] + rng.normal(0, 1, (9, 3)) * sds[:, None]
        yield [(f"a{k}", "none", _row(arms[k], reference)) for k in range(9)]


@pytest.mark.parametrize("reference_sd", [1.0, 3.0])
def test_contrast_variance_follows_an_unstable_reference(reference_sd: float) -> None:
    """A reference 3x as variable as the arms (SD; 9x the variance): the moderated rule's
    training-run variance of a contrast is within 20% of the contrast's empirical variance
    over repetitions, where the pooled rule (equal stability assumed) is far below it."""
    effects, moderated, pooled = [], [], []
    for rows in _families(reference_sd, 1000):
        effects.append(rows[0][2].effect)
        moderated.append(moderate_family(rows)[0][0].var_seeds)
        pooled.append(pool_seed_variance(rows, "pooled")[0].var_seeds)
    empirical = np.var(effects, ddof=1)
    assert empirical == pytest.approx((1 + reference_sd**2) / 3, rel=0.15)
    assert np.mean(moderated) == pytest.approx(empirical, rel=0.2)
    if reference_sd > 1:
        assert np.mean(pooled) < 0.5 * empirical
    else:  # equal stability: close to the pooled rule (its power), slightly conservative
        assert np.mean(pooled) <= np.mean(moderated) <= 1.25 * np.mean(pooled)


def test_row_variances_and_prior() -> None:
    rng = np.random.default_rng(3)
    table = rng.normal(0, 1, (10, 4)) + rng.normal(0, 2, 4)  # a large shared seed effect
    rows = row_variances(table)
    assert rows.own.shape == rows.moderated.shape == (10,) and (rows.own > 0).all()
    assert rows.seed_var > 1 and (rows.df == 3).all()
    assert rows.prior_df <= 8 * 3  # at most the residual df of the rest of the table
    # Identical spread: no evidence of heterogeneity, an infinite prior df (capped later).
    # (s0^2 undoes the log chi-square's bias: exp(log 2 - digamma(1)) for 2 df)
    assert fit_prior(np.full(5, 2.0), np.full(5, 2.0)) == (
        math.inf,
        pytest.approx(2.0 * math.exp(-digamma(1.0))),
    )
    d0, s02 = fit_prior(np.array([0.2, 1.0, 5.0, 0.5, 2.5, 9.0]), np.full(6, 10.0))
    assert 0 < d0 < math.inf and 0.5 < s02 < 5
    unstable = table.copy()  # the reference row made 5x as variable around the seed effects
    unstable[0] = table[0] + 4 * (table[0] - table.mean(axis=0))
    assert row_variances(unstable).moderated[0] > 4 * rows.moderated[0]


def test_maxt_is_dunnett_and_less_conservative_than_holm() -> None:
    corr = np.full((4, 4), 0.5) + 0.5 * np.eye(4)
    t_stats = np.array([3.0, -2.5, 0.4, np.nan])
    adjusted = stepdown_maxt(t_stats[:3], corr[:3, :3])
    # first step: P(max of 3 equicorrelated |Z| >= 3) under the multivariate normal
    draws = np.random.default_rng(0).multivariate_normal(np.zeros(3), corr[:3, :3], 400_000)
    assert adjusted[0] == pytest.approx(np.mean(np.abs(draws).max(axis=1) >= 3.0), abs=2e-3)
    raw = 2 * norm.sf(np.abs(t_stats[:3]))
    holm = multipletests(raw, method="holm")[1]
    assert (adjusted >= raw - 1e-12).all() and (adjusted <= holm + 1e-3).all()
    assert adjusted[1] >= adjusted[0]  # step-down: monotone in |t|
    assert math.isnan(stepdown_maxt(t_stats, corr)[3])
    assert max_abs_tail(2.0, np.eye(1), 1e12) == pytest.approx(0.0455, abs=1e-4)


def _study(seed: int, n_arms: int = 4, n_seeds: int = 3, **model: float) -> list:
    effects = np.r_[0.0, 1.2, np.zeros(n_arms - 1)]
    return simulate_study(
        SimulationModel(separation=0.75, n_subjects=16, **model),
        effects,
        n_seeds,
        np.random.default_rng(seed),
    )


def test_verdicts_gain_the_rules_columns_and_keep_holm_available() -> None:
    study = _study(4)
    rows = [(f"arm{a}", "none", compare_arm(study[a], study[0])) for a in range(1, len(study))]
    table = decide_verdicts(rows, "auc")
    for column in ("var_run_arm", "var_run_reference", "prior_df", "pairing_correlation"):
        assert table[column].notna().all()
    assert (table["multiplicity"] == "maxt").all() and (table["seed_variance"] == "moderated").all()
    assert (table["p_adjusted"] >= table["p_value"] - 1e-12).all()
    assert table["pairing_correlation"].between(0, 1).all()
    for row in table.itertuples():  # the printed interval agrees with the adjusted test
        decided = row.verdict != "no detectable difference"
        assert decided == (row.p_adjusted <= 0.05) == (row.ci_low > 0 or row.ci_high < 0)
    holm = decide_verdicts(rows, "auc", multiplicity="holm")
    assert (holm["p_adjusted"] >= table["p_adjusted"] - 2e-3).all()  # max-t never worse
    with pytest.raises(Exception, match="multiplicity rule"):
        decide_verdicts(rows, "auc", multiplicity="bonferroni")


def test_reference_with_more_seeds_joins_its_mean_and_lowers_the_se() -> None:
    study = _study(5, n_seeds=9, seed_arm_sd=0.3, seed_sd=0.0)
    arms = [{s: study[a][s] for s in range(3)} for a in range(1, len(study))]
    equal = [(f"arm{a}", "none", compare_arm(arms[a - 1], {s: study[0][s] for s in range(3)}))
             for a in range(1, len(study))]  # fmt: skip
    more = [(f"arm{a}", "none", compare_arm(arms[a - 1], study[0])) for a in range(1, len(study))]
    comparison = more[0][2]
    assert comparison.reference_seeds == tuple(range(9)) and comparison.n_seeds == 3
    expected = np.mean(comparison.arm_seed_values) - np.mean(comparison.reference_seed_values)
    assert comparison.effect == pytest.approx(expected)
    table = decide_verdicts(more, "auc")
    assert (table["n_reference_seeds"] == 9).all()
    assert (table["se"] < table["se_equal_allocation"]).all()
    # max-t was anti-conservative with more reference seeds (BENCHMARKS.md): Holm there
    assert (table["multiplicity"] == "holm").all()
    assert (decide_verdicts(equal, "auc")["multiplicity"] == "maxt").all()
    assert decide_verdicts(equal, "auc")["n_reference_seeds"].eq(3).all()


def test_thresholded_metrics_use_each_runs_threshold() -> None:
    study = _study(6, n_arms=1)
    arm = {s: frame.assign(threshold=0.3) for s, frame in study[1].items()}
    reference = {s: frame.assign(threshold=0.7) for s, frame in study[0].items()}
    comparison = compare_arm(arm, reference, "balanced_accuracy")
    expected = [
        balanced_accuracy_score(a["label"], a["prob"] >= 0.3)
        - balanced_accuracy_score(r["label"], r["prob"] >= 0.7)
        for a, r in zip(study[1].values(), study[0].values(), strict=True)
    ]
    assert comparison.seed_effects == pytest.approx(expected)
    at_half = compare_arm(study[1], study[0], "balanced_accuracy")
    assert at_half.seed_effects != pytest.approx(expected)
    assert get_metric("accuracy").thresholded and not get_metric("auc").thresholded
    assert (
        metric_label("balanced_accuracy") == "balanced accuracy (each run's validation threshold)"
    )
    assert metric_label("accuracy", 0.5) == "accuracy (threshold 0.5)"
    assert metric_label("auc", 0.5) == "AUC"
    with pytest.raises(Exception, match="one operating threshold"):
        compare_arm({0: study[1][0].assign(threshold=[0.2] + [0.3] * (len(study[1][0]) - 1))},
                    {0: study[0][0]}, "accuracy")  # fmt: skip


def test_an_extra_reference_seed_on_other_images_is_a_data_error() -> None:
    study = _study(7, n_arms=1, n_seeds=3)
    reference = {**study[0], 3: study[0][2].iloc[1:]}
    with pytest.raises(Exception, match="reference seed 3 was not predicted"):
        compare_arm({s: study[1][s] for s in range(2)}, reference)
