"""metrics.py against scikit-learn / statsmodels, the seed paper's Wald figure, degenerate cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from statsmodels.stats.proportion import proportion_confint

from leukaug.core.errors import DataError
from leukaug.stats.classical import DegenerateDataWarning
from leukaug.stats.metrics import (
    accuracy_ci,
    arm_metrics,
    binary_metrics,
    expected_calibration_error,
    predicted_all,
    subject_table,
    threshold_sweep,
    validate_predictions,
    youden_threshold,
)


def random_predictions(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    prob = 1 / (1 + np.exp(-(1.2 * (2 * y - 1) + rng.normal(0, 1.2, n))))
    return y, prob


def predictions_frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for split, n in (("train", 60), ("val", 200), ("test", 300)):
        y, prob = random_predictions(seed + n, n)
        frames.append(
            pd.DataFrame(
                {
                    "split": split,
                    "image_id": [f"{split}/img{i}.bmp" for i in range(n)],
                    "subject": [f"{split}-s{i % 10}" for i in range(n)],
                    "label": y,
                    "prob": prob,
                }
            )
        )
    return pd.concat(frames, ignore_index=True).sample(
        frac=1.0, random_state=int(rng.integers(1000))
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_metrics_match_sklearn(seed: int, threshold: float) -> None:
    y, prob = random_predictions(seed)
    predicted = (prob >= threshold).astype(int)
    result = binary_metrics(y, prob, threshold)
    assert result["loss"] == pytest.approx(skm.log_loss(y, prob))
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert result["precision"] == pytest.approx(skm.precision_score(y, predicted))
    assert result["recall"] == pytest.approx(skm.recall_score(y, predicted))
    assert result["specificity"] == pytest.approx(skm.recall_score(y, predicted, pos_label=0))
    assert result["f1"] == pytest.approx(skm.f1_score(y, predicted))
    assert result["weighted_f1"] == pytest.approx(skm.f1_score(y, predicted, average="weighted"))
    assert result["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, predicted))
    assert result["mcc"] == pytest.approx(skm.matthews_corrcoef(y, predicted))
    assert result["auc"] == pytest.approx(skm.roc_auc_score(y, prob))
    assert result["brier"] == pytest.approx(skm.brier_score_loss(y, prob))
    tn, fp, fn, tp = skm.confusion_matrix(y, predicted).ravel()
    assert (result["tn"], result["fp"], result["fn"], result["tp"]) == (tn, fp, fn, tp)
    low, high = proportion_confint(tn + tp, len(y), alpha=0.05, method="wilson")
    assert (result["accuracy_ci_low"], result["accuracy_ci_high"]) == pytest.approx((low, high))
    assert result["auc_ci_low"] < result["auc"] < result["auc_ci_high"]


def test_wald_interval_reproduces_the_seed_paper() -> None:
    """Table 1: 'always ALL' on 1,867 test images (1,219 ALL) -> 0.6529 +/- 0.02159 (Wald)."""
    low, high = accuracy_ci(1219, 1867, method="wald")
    assert (low + high) / 2 == pytest.approx(0.6529, abs=5e-5)
    assert (high - low) / 2 == pytest.approx(0.02159, abs=5e-6)
    y = np.array([1] * 1219 + [0] * 648)
    result = binary_metrics(y, np.full(len(y), 0.9), ci_method="wald")
    assert result["accuracy"] == pytest.approx(0.6529, abs=5e-5)
    assert result["accuracy_ci_high"] - result["accuracy"] == pytest.approx(0.02159, abs=5e-6)
    assert result["predicts_one_class"] and not result["precision_undefined"]


def test_wilson_is_the_default_and_matches_statsmodels() -> None:
    assert accuracy_ci(1219, 1867) == pytest.approx(proportion_confint(1219, 1867, method="wilson"))
    with pytest.raises(DataError):
        accuracy_ci(3, 10, method="exactish")


def test_one_class_split_gives_nan_auc_with_warning() -> None:
    y = np.ones(20, int)
    prob = np.linspace(0.1, 0.9, 20)
    with pytest.warns(DegenerateDataWarning, match="one class"):
        result = binary_metrics(y, prob)
    assert math.isnan(result["auc"]) and math.isnan(result["auc_ci_low"])
    assert math.isnan(result["balanced_accuracy"])
    assert result["accuracy"] == pytest.approx(np.mean(prob >= 0.5))


def test_model_predicting_one_class_has_undefined_precision() -> None:
    y, _ = random_predictions(4)
    result = binary_metrics(y, np.full(len(y), 0.2))  # always HEM, like the paper's unaugmented CNN
    assert math.isnan(result["precision"]) and result["precision_undefined"]
    assert result["predicts_one_class"]
    assert result["recall"] == 0.0 and result["specificity"] == 1.0


def test_threshold_sweep_matches_sklearn_at_each_step() -> None:
    y, prob = random_predictions(5)
    sweep = threshold_sweep(y, prob)
    assert (
        len(sweep) == 101
        and sweep["threshold"].iloc[0] == 0.0
        and sweep["threshold"].iloc[-1] == 1.0
    )
    assert sweep["threshold"].iloc[37] == 0.37
    for _, row in sweep.iloc[::10].iterrows():
        predicted = (prob >= row["threshold"]).astype(int)
        assert row["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
        if predicted.any():
            assert row["precision"] == pytest.approx(skm.precision_score(y, predicted))
        assert row["recall"] == pytest.approx(skm.recall_score(y, predicted))
        assert row["f1"] == pytest.approx(skm.f1_score(y, predicted))


def test_youden_threshold_maximises_j() -> None:
    y, prob = random_predictions(6)
    threshold = youden_threshold(y, prob)

    def j(t: float) -> float:
        predicted = prob >= t
        return predicted[y == 1].mean() - predicted[y == 0].mean()

    assert j(threshold) >= max(j(t) for t in np.linspace(0, 1, 501)) - 1e-12
    with pytest.warns(DegenerateDataWarning):
        assert youden_threshold(np.ones(5, int), np.linspace(0, 1, 5)) == 0.5


def test_operating_threshold_comes_from_validation_never_test() -> None:
    frame = predictions_frame()
    result = arm_metrics(frame)
    val = frame[frame["split"] == "val"]
    assert result["operating_threshold"] == pytest.approx(
        youden_threshold(val["label"].to_numpy(), val["prob"].to_numpy())
    )
    changed = frame.copy()
    is_test = changed["split"] == "test"
    changed.loc[is_test, "prob"] = 1 - changed.loc[is_test, "prob"]
    assert arm_metrics(changed)["operating_threshold"] == result["operating_threshold"]
    test = result["splits"]["test"]
    expected = binary_metrics(
        frame.loc[is_test, "label"].to_numpy(),
        frame.loc[is_test, "prob"].to_numpy(),
        result["operating_threshold"],
    )
    assert test["op_accuracy"] == pytest.approx(expected["accuracy"])


def test_arm_metrics_is_strict_json_per_split() -> None:
    frame = predictions_frame()
    frame.loc[frame["split"] == "train", "label"] = 1  # one-class split -> AUC null
    with pytest.warns(DegenerateDataWarning):
        result = arm_metrics(frame)
    text = json.dumps(result, allow_nan=False)
    assert set(result["splits"]) == {"train", "val", "test"}
    assert json.loads(text)["splits"]["train"]["auc"] is None
    assert result["splits"]["test"]["n"] == 300


def test_arm_metrics_ignore_row_order() -> None:
    frame = predictions_frame()
    assert arm_metrics(frame) == arm_metrics(frame.sample(frac=1.0, random_state=3))


def test_expected_calibration_error_by_hand() -> None:
    y = np.array([0, 1, 1, 1])
    prob = np.array([0.05, 0.15, 0.95, 0.85])
    # bins: [0, 0.1): prob 0.05, frac 0 -> 0.05; [0.1, 0.2): 0.15 vs 1 -> 0.85; [0.8, 0.9): 0.85 vs 1; [0.9, 1]: 0.95 vs 1
    expected = 0.25 * (0.05 + 0.85 + 0.15 + 0.05)
    assert expected_calibration_error(y, prob) == pytest.approx(expected)


def test_subject_table_uses_mean_probability_per_subject() -> None:
    frame = pd.DataFrame(
        {
            "subject": ["a", "a", "b", "b"],
            "label": [1, 1, 0, 0],
            "prob": [0.9, 0.3, 0.2, 0.6],
            "image_id": list("wxyz"),
            "split": "test",
        }
    )
    table = subject_table(frame).set_index("subject")
    assert table.loc["a", "mean_prob"] == pytest.approx(0.6) and table.loc["a", "diagnosis"] == 1
    assert table.loc["a", "accuracy"] == 0.5 and table.loc["b", "diagnosis"] == 0
    assert table["diagnosis_correct"].all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="subject"), "lack column"),
        (lambda f: f.assign(label=2), "label"),
        (lambda f: f.assign(prob=1.5), "prob"),
        (lambda f: pd.concat([f, f.iloc[:1]]), "appears twice"),
    ],
)
def test_validate_predictions_rejects_bad_tables(change, message: str) -> None:
    with pytest.raises(DataError, match=message):
        validate_predictions(change(predictions_frame()))


def test_predicted_all_is_one_rule_at_exactly_one_half() -> None:
    """P(ALL) >= threshold is ALL, so a probability of exactly 0.5 is called ALL everywhere."""
    prob = np.array([0.0, 0.4999999, 0.5, 0.5000001, 1.0])
    assert predicted_all(prob).tolist() == [False, False, True, True, True]
    assert predicted_all(prob, threshold=0.3).tolist() == [False, True, True, True, True]
    y = np.array([0, 0, 1, 1, 1])  # right exactly when 0.5 counts as ALL
    assert binary_metrics(y, prob)["accuracy"] == 1.0
    assert threshold_sweep(y, prob).set_index("threshold").loc[0.5, "accuracy"] == 1.0
    frame = pd.DataFrame({"subject": ["a"] * 2 + ["b"] * 3, "label": y, "prob": prob})
    frame.loc[frame["subject"] == "b", "prob"] = 0.5
    table = subject_table(frame).set_index("subject")
    assert table.loc["b", "diagnosis"] == 1 and table.loc["b", "accuracy"] == 1.0
