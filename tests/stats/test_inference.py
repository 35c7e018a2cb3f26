"""The inference engine: metric definitions against scikit-learn, the clustered variance
against Obuchowski's formula, seed pairing, the family's pooled seed variance, verdicts with
Holm, and a quick calibration and power check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    roc_auc_score,
)
from statsmodels.stats.multitest import multipletests

from leukaug.core.errors import ConfigError, DataError
from leukaug.stats import (
    PRIMARY_METRICS,
    compare_arm,
    decide_verdicts,
    get_metric,
    subject_bootstrap_ci,
)
from leukaug.stats.classical import obuchowski_components
from leukaug.stats.compare import METHOD_ONE_SEED, METHOD_SEEDS
from leukaug.stats.metrics import predicted_all
from leukaug.stats.pooling import DEFAULT_SEED_VARIANCE, pool_seed_variance, residual_variance
from leukaug.stats.simulate import SimulationModel, run_family, simulate_study


def _sklearn(name: str, y: np.ndarray, prob: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Each primary metric computed independently by scikit-learn (predicted ALL: prob >= 0.5)."""
    predicted = predicted_all(prob).astype(int)
    if name == "auc":
        return roc_auc_score(y, prob, sample_weight=weight)
    if name == "accuracy":
        return accuracy_score(y, predicted, sample_weight=weight)
    if name == "balanced_accuracy":
        return balanced_accuracy_score(y, predicted, sample_weight=weight)
    if name == "f1_weighted":
        return f1_score(y, predicted, average="weighted", sample_weight=weight)
    return log_loss(y, prob, sample_weight=weight, labels=[0, 1])


def _cells(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    prob = np.round(1 / (1 + np.exp(-(1.2 * (2 * y - 1) + rng.normal(0, 1.2, n)))), 2)
    prob[:3] = [0.5, 0.5, 0.0]  # the threshold itself, ties and a zero probability
    return y, prob


def _study(seed: int = 0, n_seeds: int = 3, effect: float = 0.0, **model: float) -> list:
    effects = np.array([0.0, effect])
    return simulate_study(SimulationModel(**model), effects, n_seeds, np.random.default_rng(seed))


@pytest.mark.parametrize("name", sorted(PRIMARY_METRICS))
def test_metric_values_match_sklearn(name: str) -> None:
    for seed in range(3):
        y, prob = _cells(seed)
        assert get_metric(name).value(y, prob) == pytest.approx(_sklearn(name, y, prob), abs=1e-12)


@pytest.mark.parametrize("name", sorted(PRIMARY_METRICS))
def test_weighted_values_match_sklearn_sample_weight(name: str) -> None:
    y, prob = _cells(5)
    weights = np.random.default_rng(1).integers(0, 3, (4, len(y))).astype(float)
    got = get_metric(name).weighted(y, prob, weights)
    expected = [_sklearn(name, y, prob, w) for w in weights]
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("name", sorted(PRIMARY_METRICS))
def test_influence_is_the_derivative_of_the_weighted_metric(name: str) -> None:
    """Influence_i = d metric / d weight_i, checked by central differences of scikit-learn."""
    y, prob = _cells(7)
    value, influence = get_metric(name).influence(y, prob)
    assert value == pytest.approx(_sklearn(name, y, prob), abs=1e-12)
    assert influence.sum() == pytest.approx(0.0, abs=1e-12)
    step = 1e-6
    for i in (0, 3, 10, 41):
        up, down = np.ones(len(y)), np.ones(len(y))
        up[i], down[i] = 1 + step, 1 - step
        numeric = (_sklearn(name, y, prob, up) - _sklearn(name, y, prob, down)) / (2 * step)
        assert influence[i] == pytest.approx(numeric, abs=1e-6)


def test_unknown_metric_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'auc'"):
        get_metric("aucc")


def test_one_seed_subject_variance_is_obuchowskis_clustered_delong() -> None:
    """With single-class subjects the stratified subject variance is Obuchowski's (1997)."""
    study = _study(seed=3, n_seeds=1, heterogeneity_sd=0.6)
    comparison = compare_arm(study[1], study[0])
    arm, reference = study[1][0], study[0][0]
    aucs, cov = obuchowski_components(
        arm["label"].to_numpy(),
        np.vstack([arm["prob"], reference["prob"]]),
        arm["subject"].to_numpy(),
    )
    assert comparison.effect == pytest.approx(aucs[0] - aucs[1], abs=1e-12)
    assert comparison.var_subjects == pytest.approx(
        cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], rel=1e-10
    )
    assert comparison.var_seeds == 0 and comparison.n_seeds == 1
    assert comparison.method == METHOD_ONE_SEED
    assert "one training run" in comparison.note and ">= 3 seeds" in comparison.note


def test_seeds_combine_between_seed_and_subject_variance() -> None:
    study = _study(seed=4)
    comparison = compare_arm(study[1], study[0])
    per_seed = [compare_arm({s: study[1][s]}, {s: study[0][s]}).effect for s in range(3)]
    assert comparison.seed_effects == pytest.approx(per_seed, abs=1e-12)
    assert comparison.effect == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert comparison.var_seeds == pytest.approx(np.var(per_seed, ddof=1) / 3, abs=1e-15)
    assert comparison.se == pytest.approx(
        math.sqrt(comparison.var_seeds + comparison.var_subjects), abs=1e-15
    )
    assert comparison.df == 2  # S - 1: the between-seed variance rests on 3 seeds
    assert comparison.method == METHOD_SEEDS and comparison.note == ""
    assert comparison.ci_low < comparison.effect < comparison.ci_high


def test_overlap_is_the_seed_specific_share_of_the_subject_variance() -> None:
    """var_overlap = (mean of the one-seed subject variances - var_subjects) / (S - 1)."""
    study = _study(seed=14, n_seeds=4)
    comparison = compare_arm(study[1], study[0])
    single = [compare_arm({s: study[1][s]}, {s: study[0][s]}).var_subjects for s in range(4)]
    expected = (np.mean(single) - comparison.var_subjects) / 3
    assert expected > 0 and comparison.var_overlap == pytest.approx(expected, rel=1e-10)
    assert compare_arm({0: study[1][0]}, {0: study[0][0]}).var_overlap == 0


def test_seeds_are_paired_and_images_joined_by_image_id() -> None:
    study = _study(seed=5)
    shuffled = {s: frame.sample(frac=1.0, random_state=s) for s, frame in study[1].items()}
    assert compare_arm(shuffled, study[0]) == compare_arm(study[1], study[0])
    swapped = {0: study[1][1], 1: study[1][0], 2: study[1][2]}  # seeds matter, not dict order
    paired = compare_arm(study[1], study[0]).seed_effects
    assert compare_arm(swapped, study[0]).seed_effects != pytest.approx(paired)


def test_missing_seed_and_unmatched_images_are_data_errors() -> None:
    study = _study(seed=6)
    with pytest.raises(DataError, match=r"seed\(s\) \[2\] have no reference"):
        compare_arm(study[1], {0: study[0][0], 1: study[0][1]})
    dropped = {**study[1], 1: study[1][1].iloc[1:]}
    with pytest.raises(DataError, match=r"seed 1: .* same test images"):
        compare_arm(dropped, study[0])
    relabelled = {**study[1], 0: study[1][0].assign(subject="someone")}
    with pytest.raises(DataError, match="different subject"):
        compare_arm(relabelled, study[0])
    with pytest.raises(DataError, match="lack column"):
        compare_arm({0: study[1][0].drop(columns="prob")}, {0: study[0][0]})


def test_log_loss_direction_lower_is_better() -> None:
    study = _study(seed=7, effect=2.0)  # arm 1 separates the classes far better
    loss = compare_arm(study[1], study[0], "log_loss")
    auc = compare_arm(study[1], study[0], "auc")
    assert loss.effect < 0 < auc.effect and not loss.higher_is_better
    verdicts = decide_verdicts([("better", "reference", loss)], "log_loss")
    assert verdicts["verdict"].tolist() == ["helps"]
    worse = decide_verdicts(
        [("worse", "reference", compare_arm(study[0], study[1], "log_loss"))], "log_loss"
    )
    assert worse["verdict"].tolist() == ["hurts"]


def test_verdicts_apply_holm_to_exactly_their_family() -> None:
    rng = np.random.default_rng(10)
    model = SimulationModel(separation=1.0, subject_sd=0.3, heterogeneity_sd=0.3, n_subjects=24)
    study = simulate_study(model, np.array([0.0, 1.5, -1.5, 0.0, 0.2]), 6, rng)
    rows = [(f"arm{a}", "reference", compare_arm(study[a], study[0])) for a in range(1, 5)]
    # The previous round's rule, still available: pooled seed variance, Holm.
    table = decide_verdicts(rows, "auc", seed_variance="pooled_net", multiplicity="holm")
    assert list(table.columns[:12]) == [
        "arm", "reference", "metric", "effect", "ci_low", "ci_high", "p_value",
        "p_adjusted", "verdict", "n_seeds", "n_subjects", "method",
    ]  # fmt: skip
    p_values = table["p_value"].to_numpy()  # the pooled tests decide, Holm over exactly them
    np.testing.assert_allclose(table["p_adjusted"], multipletests(p_values, method="holm")[1])
    assert table["method"].str.contains("pooled over 4 arms").all()
    assert table["family_size"].eq(4).all()
    assert table["verdict"].tolist()[:2] == ["helps", "hurts"]
    for row in table.itertuples():
        decided = row.verdict != "no detectable difference"
        assert decided == (row.p_adjusted <= 0.05)
        assert decided == (row.ci_low > 0 or row.ci_high < 0)  # the CI printed agrees
        assert row.ci_high - row.ci_low >= row.ci_high_unadjusted - row.ci_low_unadjusted
        if not decided:
            assert "could have detected" in row.note and row.mde > 0
    smaller = decide_verdicts(rows[:1], "auc")  # a family of one: no adjustment, no pooling
    assert smaller["p_adjusted"].iloc[0] == pytest.approx(rows[0][2].p_value)
    assert smaller["df"].iloc[0] == 5 and "nothing to pool" in smaller["note"].iloc[0]
    with pytest.raises(DataError, match="primary metric"):
        decide_verdicts(rows, "accuracy")


def test_identical_arms_have_no_detectable_difference() -> None:
    study = _study(seed=9)
    comparison = compare_arm(study[0], study[0])
    assert (comparison.effect, comparison.p_value, comparison.se) == (0.0, 1.0, 0.0)
    assert decide_verdicts([("same", "same", comparison)], "auc")["verdict"].iloc[0] == (
        "no detectable difference"
    )


def test_subject_bootstrap_ci_resamples_subjects() -> None:
    study = _study(seed=10, n_seeds=1, subject_sd=1.5, n_subjects=16)
    frame = study[0][0]
    y, prob = frame["label"].to_numpy(), frame["prob"].to_numpy()
    for name in sorted(PRIMARY_METRICS):
        low, high = subject_bootstrap_ci(frame, name, n_resamples=500, rng_seed=1)
        assert low < get_metric(name).value(y, prob) < high
        assert (low, high) == subject_bootstrap_ci(frame, name, n_resamples=500, rng_seed=1)
    # Subjects, not images, are resampled: the interval is wider than an image bootstrap's.
    low, high = subject_bootstrap_ci(frame, "accuracy", n_resamples=500)
    rng = np.random.default_rng(0)
    images = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=500).astype(float)
    image_draws = get_metric("accuracy").weighted(y, prob, images)
    assert high - low > 1.5 * np.subtract(*np.quantile(image_draws, [0.975, 0.025]))


@pytest.mark.slow
def test_quick_calibration_new_rule_holds_old_rule_fails() -> None:
    """150 null families (9 arms, 3 seeds, 16-28 subjects, no heterogeneity, where the pooled
    seed variance matters most): the rule in use makes a false verdict in <= 10% of families
    (nominal 5%; P(> 15 of 150) < 0.005 for a calibrated rule) while the old image-level rule
    does in >= 50% (it measured ~99%)."""
    rng = np.random.default_rng(2026)
    false_new = false_old = 0
    for _ in range(150):
        model = SimulationModel(n_subjects=int(rng.integers(16, 29)), separation=0.75)
        outcome = run_family(model, np.zeros(10), 3, rng)
        false_new += int((outcome.verdicts != "no detectable difference").any())
        false_old += int(outcome.old_rejected.any())
    assert false_new <= 15
    assert false_old >= 75


def _anova_residual_mean_square(table: np.ndarray) -> float:
    """Two-way additive (row + column) model fitted by least squares on dummy variables."""
    rows, cols = table.shape
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    design = np.column_stack(
        [np.ones(table.size)]
        + [(r.ravel() == i).astype(float) for i in range(1, rows)]
        + [(c.ravel() == j).astype(float) for j in range(1, cols)]
    )
    fitted = design @ np.linalg.lstsq(design, table.ravel(), rcond=None)[0]
    return float(np.sum((table.ravel() - fitted) ** 2)) / ((rows - 1) * (cols - 1))


def test_residual_variance_is_the_arm_by_seed_anova_of_the_metric_values() -> None:
    """From the differences alone it equals the ANOVA of the arms' and reference's own values."""
    rng = np.random.default_rng(11)
    values = rng.normal(0.8, 0.05, (5, 3)) + rng.normal(0, 0.1, 3)  # row 0: the reference
    sigma2, df = residual_variance(values[1:] - values[0])
    assert df == 4 * 2
    assert sigma2 == pytest.approx(_anova_residual_mean_square(values), rel=1e-12)
    one_arm, df_one = residual_variance(values[1:2] - values[0])  # nothing to pool: own variance
    assert (one_arm * 2, df_one) == (pytest.approx(np.var(values[1] - values[0], ddof=1)), 2)


def _family(seed: int, effects: list[float], n_seeds: int = 3) -> list:
    model = SimulationModel(separation=0.75, n_subjects=20)
    study = simulate_study(model, np.array(effects), n_seeds, np.random.default_rng(seed))
    return [(f"arm{a}", "none", compare_arm(study[a], study[0])) for a in range(1, len(study))]


def test_pooling_borrows_the_seed_variance_across_arms_sharing_a_reference() -> None:
    rows = _family(12, [0.0, 0.0, 0.3, 0.0, 0.0])
    own = [c for _, _, c in rows]
    sigma2, _ = residual_variance([c.seed_effects for c in own])
    pooled = pool_seed_variance(rows, "pooled")
    largest = pool_seed_variance(rows, "max")
    assert pool_seed_variance(rows, "own") == own
    for before, after, safe in zip(own, pooled, largest, strict=True):
        assert after.var_seeds == pytest.approx(2 * sigma2 / 3)
        assert after.df == min(4 * 2, before.df_subjects) and before.df == 2
        assert after.se == pytest.approx(math.sqrt(after.var_seeds + before.var_subjects))
        assert (after.effect, after.var_subjects) == (before.effect, before.var_subjects)
        assert safe.var_seeds == pytest.approx(max(before.var_seeds, after.var_seeds))
        assert safe.df == after.df and "max(own, pooled over 4 arms)" in safe.method
        assert after.ci_low < after.effect < after.ci_high
    for before, net in zip(own, pool_seed_variance(rows, "max_net"), strict=True):
        largest_seed = max(before.var_seeds, 2 * sigma2 / 3)
        assert net.var_seeds == pytest.approx(max(largest_seed - before.var_overlap, 0.0))
        assert net.method.endswith("seed-specific test noise counted once")
    # Another reference (or other seeds) is another pooling group.
    split = rows[:2] + [(arm, "other", c) for arm, _, c in rows[2:]]
    regrouped = pool_seed_variance(split, "pooled")
    assert regrouped[0].df == min(2 * 2, own[0].df_subjects)
    assert "pooled over 2 arms" in regrouped[3].method
    with pytest.raises(ConfigError, match="seed variance rule"):
        pool_seed_variance(rows, "median")


def test_one_seed_rows_are_not_pooled() -> None:
    study = _study(seed=13, n_seeds=1)
    single = compare_arm(study[1], study[0])
    rows = [("a", "none", single), ("b", "none", single)]
    assert pool_seed_variance(rows) == [single, single]


@pytest.mark.slow
def test_quick_power_pooled_rule_detects_what_own_seed_variance_cannot() -> None:
    """A large planted improvement (logit +1.5 on separation 0.75) among 8 null arms, 3 seeds,
    40 families: the rule in use finds it in at least 6 (power ~0.4 at +0.15 AUC in the
    benchmark; P(< 6 of 40) < 0.005 at 0.35) and far more often than the unpooled t(S - 1)
    rule, which needs |t| > 13 at Holm's first step and measured 0.00 at +0.15 AUC."""
    rng = np.random.default_rng(7)
    effects = np.r_[0.0, 1.5, np.zeros(8)]
    found = {DEFAULT_SEED_VARIANCE: 0, "own": 0}
    for _ in range(40):
        model = SimulationModel(n_subjects=int(rng.integers(16, 29)), separation=0.75)
        outcome = run_family(model, effects, 3, rng, with_old_rule=False)
        for rule in found:
            found[rule] += int(outcome.rule_verdicts[rule][0] == "helps")
    assert found[DEFAULT_SEED_VARIANCE] >= 6
    assert found[DEFAULT_SEED_VARIANCE] >= found["own"] + 5
