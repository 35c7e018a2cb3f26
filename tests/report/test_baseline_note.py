"""The answer box says when the best CNN arm is below the features baseline (issue 19)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from leukaug.report.baseline_note import baseline_sentence
from leukaug.stats.study_results import ArmResults, Study

KINDS = {
    "cnn-none-full": "single",
    "resnet-none-full": "single",
    "features_gbm-none-full": "features",
}


def study_and_summary(auc: dict[str, float], tmp_path: Path) -> tuple[Study, pd.DataFrame]:
    arms = [
        ArmResults(f"{name}-s0", name, 0, {"spec": {"kind": KINDS[name]}}, pd.DataFrame(), None)
        for name in auc
    ]
    summary = pd.DataFrame(
        [{"name": name, "split": split, "n_seeds": 3, "auc_mean": value - (split == "val"),
          "accuracy_mean": value - 0.1, "log_loss_mean": 1 - value}
         for name, value in auc.items() for split in ("val", "test")]
    )  # fmt: skip
    return Study(tmp_path, arms), summary


def test_best_cnn_below_the_features_arm_is_said_with_the_numbers(tmp_path):
    study, summary = study_and_summary(
        {"cnn-none-full": 0.83, "resnet-none-full": 0.87, "features_gbm-none-full": 0.99}, tmp_path
    )
    sentence = baseline_sentence(study, summary, "auc")
    assert sentence.startswith("The best CNN arm, resnet-none-full (test AUC 0.870, accuracy 0.770")
    assert "is below the features baseline features_gbm-none-full" in sentence
    assert "test AUC 0.990, accuracy 0.890; mean of 3 seeds" in sentence
    assert "no CNN arm beats" in sentence
    # log loss: lower is better, so the same arms rank the same way
    assert "is below" in baseline_sentence(study, summary, "log_loss")


def test_a_cnn_above_the_baseline_or_no_baseline(tmp_path):
    study, summary = study_and_summary(
        {"cnn-none-full": 0.95, "features_gbm-none-full": 0.90}, tmp_path
    )
    assert "is at or above the features baseline" in baseline_sentence(study, summary, "auc")
    study, summary = study_and_summary({"cnn-none-full": 0.95}, tmp_path)
    assert baseline_sentence(study, summary, "auc") is None
