"""stats.py against independent computations: a slow, pairwise DeLong; hand-derived and
published values; statsmodels' McNemar and Holm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from leukaug.core.errors import DataError
from leukaug.stats.classical import (
    DegenerateDataWarning,
    delong_ci,
    delong_test,
    holm,
    mcnemar_exact,
    obuchowski_components,
    paired_bootstrap,
)


def slow_delong(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """DeLong, DeLong & Clarke-Pearson (1988) from the definition: the kernel psi(x, y) =
    1 if x > y, 1/2 if x == y, else 0, evaluated on every positive-negative pair explicitly."""
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    m, n = len(positives), len(negatives)
    k = len(scores)
    v10 = np.zeros((k, m))
    v01 = np.zeros((k, n))
    aucs = np.zeros(k)
    for r, score in enumerate(scores):
        psi = np.zeros((m, n))
        for i, p in enumerate(positives):
            for j, q in enumerate(negatives):
                psi[i, j] = 1.0 if score[p] > score[q] else (0.5 if score[p] == score[q] else 0.0)
        aucs[r] = psi.mean()
        v10[r] = psi.mean(axis=1)
        v01[r] = psi.mean(axis=0)
    s10 = np.zeros((k, k))
    s01 = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            s10[a, b] = np.sum((v10[a] - aucs[a]) * (v10[b] - aucs[b])) / (m - 1)
            s01[a, b] = np.sum((v01[a] - aucs[a]) * (v01[b] - aucs[b])) / (n - 1)
    return aucs, s10 / m + s01 / n


def random_scores(
    seed: int, n: int = 120, ties: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    a = rng.normal(size=n) + 0.8 * y
    b = 0.6 * a + rng.normal(size=n) + 0.3 * y
    if ties:  # coarse scores, many ties, as sigmoid outputs saturate
        a, b = np.round(a, 1), np.round(b, 1)
    return y, a, b


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("ties", [True, False])
def test_delong_test_matches_slow_pairwise_definition(seed: int, ties: bool) -> None:
    y, a, b = random_scores(seed, ties=ties)
    aucs, cov = slow_delong(y, [a, b])
    result = delong_test(y, a, b)
    se = math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    z = (aucs[0] - aucs[1]) / se
    assert result.auc_a == pytest.approx(aucs[0], abs=1e-9)
    assert result.auc_b == pytest.approx(aucs[1], abs=1e-9)
    assert result.se == pytest.approx(se, abs=1e-9)
    assert result.z == pytest.approx(z, abs=1e-7)
    assert result.p_value == pytest.approx(2 * norm.sf(abs(z)), abs=1e-9)
    assert result.ci_low == pytest.approx(aucs[0] - aucs[1] - 1.959963984540054 * se, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 5])
def test_delong_ci_matches_slow_definition_and_sklearn(seed: int) -> None:
    y, a, _ = random_scores(seed)
    aucs, cov = slow_delong(y, [a])
    ci = delong_ci(y, a)
    assert ci.auc == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert ci.se == pytest.approx(math.sqrt(cov[0, 0]), abs=1e-9)
    assert ci.low == pytest.approx(max(0.0, aucs[0] - 1.959963984540054 * ci.se), abs=1e-9)


def test_delong_hand_computed_example() -> None:
    # Positives 0.35, 0.8; negatives 0.1, 0.4. V10 = (0.5, 1), V01 = (1, 0.5),
    # S10 = S01 = 0.125, so Var(AUC) = 0.125 / 2 + 0.125 / 2 = 0.125 and AUC = 0.75.
    ci = delong_ci([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert ci.auc == pytest.approx(0.75, abs=1e-12)
    assert ci.se == pytest.approx(math.sqrt(0.125), abs=1e-12)


def test_delong_published_hanley_mcneil_auc() -> None:
    """Hanley & McNeil (1982, Radiology 143:29, Table 1): CT ratings 1-5 of 58 normal and
    51 abnormal patients; published AUC (Wilcoxon) 0.893."""
    normal_counts, abnormal_counts = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    ratings = np.concatenate(
        [np.repeat(np.arange(1, 6), normal_counts), np.repeat(np.arange(1, 6), abnormal_counts)]
    )
    y = np.concatenate([np.zeros(58, int), np.ones(51, int)])
    ci = delong_ci(y, ratings)
    assert round(ci.auc, 3) == 0.893
    _aucs, cov = slow_delong(y, [ratings])
    assert ci.se == pytest.approx(math.sqrt(cov[0, 0]), abs=1e-12)


def test_delong_identical_scores_and_perfect_separation() -> None:
    y, a, _ = random_scores(1)
    same = delong_test(y, a, a)
    assert same.difference == 0 and same.p_value == 1.0
    perfect = delong_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert (perfect.auc, perfect.se, perfect.low, perfect.high) == (1.0, 0.0, 1.0, 1.0)


def test_delong_one_class_warns_and_returns_nan() -> None:
    with pytest.warns(DegenerateDataWarning):
        result = delong_test([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    assert math.isnan(result.p_value) and math.isnan(result.auc_a)
    with pytest.warns(DegenerateDataWarning):
        assert math.isnan(delong_ci([0, 0], [0.1, 0.2]).auc)


def test_delong_rejects_bad_input() -> None:
    with pytest.raises(DataError):
        delong_ci([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError):
        delong_ci([0, 1], [0.1])
    with pytest.raises(DataError):
        delong_test([0, 1], [0.1, float("nan")], [0.1, 0.2])


def test_mcnemar_exact_matches_statsmodels() -> None:
    rng = np.random.default_rng(3)
    correct_a, correct_b = rng.random(300) < 0.7, rng.random(300) < 0.6
    result = mcnemar_exact(correct_a, correct_b)
    table = [
        [np.sum(correct_a & correct_b), np.sum(correct_a & ~correct_b)],
        [np.sum(~correct_a & correct_b), np.sum(~correct_a & ~correct_b)],
    ]
    expected = mcnemar(table, exact=True)
    assert result.p_value == pytest.approx(expected.pvalue, abs=1e-12)
    assert result.statistic == expected.statistic
    assert (result.only_a, result.only_b) == (table[0][1], table[1][0])


def test_holm_matches_statsmodels_and_keeps_nan() -> None:
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.5])
    adjusted = holm(p)
    finite = ~np.isnan(p)
    np.testing.assert_allclose(adjusted[finite], multipletests(p[finite], method="holm")[1])
    assert np.isnan(adjusted[3])


def clustered(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    subjects = np.repeat([f"s{i}" for i in range(16)], 12)
    y = np.repeat(np.arange(16) % 3 != 0, 12).astype(int)
    a = 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(0, 1, len(y)))))
    b = 1 / (1 + np.exp(-(0.3 * (2 * y - 1) + rng.normal(0, 1, len(y)))))
    return y, a, b, subjects


def test_bootstrap_is_reproducible_with_a_seed() -> None:
    y, a, b, subjects = clustered()
    first = paired_bootstrap(y, a, b, subjects, n_resamples=300, seed=7)
    again = paired_bootstrap(y, a, b, subjects, n_resamples=300, seed=7)
    other = paired_bootstrap(y, a, b, subjects, n_resamples=300, seed=8)
    assert first == again
    assert first["auc"].low != other["auc"].low
    assert first["accuracy"].estimate == pytest.approx(
        np.mean((a >= 0.5) == y) - np.mean((b >= 0.5) == y)
    )
    assert first["auc"].estimate == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    assert first["auc"].low > 0  # a is clearly better


def test_bootstrap_resamples_subjects_not_images() -> None:
    """With a strong subject effect, the subject bootstrap CI is wider than an image bootstrap's."""
    rng = np.random.default_rng(0)
    subjects = np.repeat([f"s{i}" for i in range(12)], 30)
    y = np.repeat(np.arange(12) % 2, 30)
    shift = np.repeat(rng.normal(0, 1.5, 12), 30)
    a = 1 / (1 + np.exp(-((2 * y - 1) + shift + rng.normal(0, 0.3, len(y)))))
    b = np.full(len(y), 0.6)
    by_subject = paired_bootstrap(y, a, b, subjects, metrics=["accuracy"], n_resamples=400)[
        "accuracy"
    ]
    by_image = paired_bootstrap(y, a, b, np.arange(len(y)), metrics=["accuracy"], n_resamples=400)[
        "accuracy"
    ]
    assert (by_subject.high - by_subject.low) > 1.5 * (by_image.high - by_image.low)


def test_bootstrap_rejects_unknown_metric() -> None:
    y, a, b, subjects = clustered()
    with pytest.raises(DataError, match="unknown bootstrap metric"):
        paired_bootstrap(y, a, b, subjects, metrics=["f2"])


def test_bootstrap_auc_by_multiplicity_equals_the_auc_of_the_resample() -> None:
    """The bootstrap's AUC shortcut (weights per original image) must equal re-ranking."""
    from leukaug.stats.classical import _ResampledAuc, fast_auc

    rng = np.random.default_rng(7)
    for _ in range(100):
        n = int(rng.integers(6, 60))
        y = rng.integers(0, 2, n)
        score = np.round(rng.random(n), 1)  # many ties
        index = rng.integers(0, n, n)
        expected = fast_auc(y[index], score[index])
        got = _ResampledAuc(y, score)(np.bincount(index, minlength=n))
        assert (np.isnan(expected) and np.isnan(got)) or got == pytest.approx(expected, abs=1e-12)


def slow_obuchowski(
    y: np.ndarray, scores: list[np.ndarray], clusters: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Obuchowski (1997) from the definition: pairwise kernels, then sums per cluster."""
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    m, n = len(positives), len(negatives)
    names = sorted(set(clusters))
    k = len(scores)
    aucs = np.zeros(k)
    v10 = np.zeros((k, len(names)))
    v01 = np.zeros((k, len(names)))
    for r, score in enumerate(scores):
        psi = np.array(
            [[1.0 if score[p] > score[q] else 0.5 if score[p] == score[q] else 0.0 for q in negatives]
             for p in positives]
        )  # fmt: skip
        aucs[r] = psi.mean()
        for c, name in enumerate(names):
            v10[r, c] = psi.mean(axis=1)[clusters[positives] == name].sum()
            v01[r, c] = psi.mean(axis=0)[clusters[negatives] == name].sum()
    m_c = np.array([np.sum(clusters[positives] == name) for name in names])
    n_c = np.array([np.sum(clusters[negatives] == name) for name in names])
    i10, i01, i = int((m_c > 0).sum()), int((n_c > 0).sum()), len(names)
    cov = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            d10a, d10b = v10[a] - m_c * aucs[a], v10[b] - m_c * aucs[b]
            d01a, d01b = v01[a] - n_c * aucs[a], v01[b] - n_c * aucs[b]
            s10 = i10 / ((i10 - 1) * m) * np.sum(d10a * d10b)
            s01 = i01 / ((i01 - 1) * n) * np.sum(d01a * d01b)
            s11 = i / (i - 1) * (np.sum(d10a * d01b) + np.sum(d10b * d01a))
            cov[a, b] = s10 / m + s01 / n + s11 / (m * n)
    return aucs, cov


@pytest.mark.parametrize("ties", [True, False])
def test_obuchowski_matches_the_slow_definition_with_mixed_clusters(ties: bool) -> None:
    y, a, b = random_scores(4, n=90, ties=ties)
    clusters = np.array([f"s{i % 11}" for i in range(len(y))])  # subjects hold both classes
    aucs, cov = obuchowski_components(y, np.vstack([a, b]), clusters)
    expected_aucs, expected_cov = slow_obuchowski(y, [a, b], clusters)
    np.testing.assert_allclose(aucs, expected_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, expected_cov, atol=1e-12)


def test_obuchowski_equals_delong_with_one_image_per_subject() -> None:
    y, a, b = random_scores(2, n=80)
    clusters = np.array([f"image{i}" for i in range(len(y))])
    aucs, cov = obuchowski_components(y, np.vstack([a, b]), clusters)
    expected_aucs, expected_cov = slow_delong(y, [a, b])
    np.testing.assert_allclose(aucs, expected_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, expected_cov, atol=1e-12)


def test_obuchowski_exceeds_delong_when_subjects_share_an_offset() -> None:
    rng = np.random.default_rng(0)
    subjects = np.repeat(np.arange(12), 20)
    y = (subjects % 2).astype(int)
    score = 1.0 * y + rng.normal(0, 1, 12)[subjects] + rng.normal(0, 0.5, len(y))
    _aucs, clustered = obuchowski_components(y, score[None, :], subjects.astype(str))
    assert clustered[0, 0] > 3 * delong_ci(y, score).se ** 2


def test_obuchowski_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="cluster"):
        obuchowski_components([0, 1], np.array([[0.1, 0.2]]), ["a"])
    with pytest.raises(DataError, match="both classes"):
        obuchowski_components([1, 1], np.array([[0.1, 0.2]]), ["a", "b"])
