"""Fold arms -> out-of-fold predictions, the per-fold metrics and the pooled verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from leukaug.core.errors import DataError
from leukaug.stats.cross_validation import POOLED, fold_metrics, is_cross_validated, pool_folds
from leukaug.stats.family import primary_verdicts
from leukaug.stats.pairs import plan_references
from leukaug.stats.study_results import ArmResults, Study

SUBJECTS = [f"{c}{k}" for c in "AH" for k in range(6)]  # 6 ALL, 6 HEM subjects
FOLD_OF = {subject: k % 3 for k, subject in enumerate(SUBJECTS)}  # 3 folds, both classes in each


def images(rng: np.random.Generator, shift: float) -> pd.DataFrame:
    rows = []
    for subject in SUBJECTS:
        label = int(subject[0] == "A")
        for i in range(4):
            prob = 1 / (1 + np.exp(-((2 * label - 1) * (1 + shift) + rng.normal(0, 1))))
            rows.append(
                {"image_id": f"{subject}/{i}.png", "subject": subject, "label": label, "prob": prob}
            )
    return pd.DataFrame(rows)


def fold_arm(
    name: str, augmentations: list, seed: int, fold: int, frame: pd.DataFrame
) -> ArmResults:
    test = frame[frame["subject"].map(FOLD_OF) == fold].assign(split="test")
    val = frame[frame["subject"].map(FOLD_OF) != fold].iloc[:6].assign(split="val")
    spec = {"model": "resnet18", "augmentations": augmentations, "seed": seed, "fold": fold}
    arm_id = f"{name}-s{seed}-f{fold}"
    info = {"arm_id": arm_id, "name": name, "seed": seed, "spec": spec, "config_hash": arm_id}
    return ArmResults(arm_id, name, seed, info, pd.concat([val, test], ignore_index=True), None)


def cv_study(seeds=(0, 1, 2), drop: tuple[str, int, int] | None = None) -> Study:
    rng = np.random.default_rng(0)
    arms = []
    for name, augmentations, shift in (
        ("resnet18-none-full", [], 0.0),
        ("resnet18-flip-full", [{"name": "flip", "params": {}}], 0.0),
    ):
        for seed in seeds:
            frame = images(rng, shift)
            for fold in range(3):
                if drop != (name, seed, fold):
                    arms.append(fold_arm(name, augmentations, seed, fold, frame))
    dataset = {"cv": {"folds": 3, "seed": 0, "strategy": "subject"}}
    return Study(Path("study"), arms, dataset=dataset, config={"study": {"baseline": "none"}})


def test_pooled_arms_predict_every_image_once() -> None:
    study = cv_study()
    assert is_cross_validated(study)
    pooled = pool_folds(study)
    assert {arm.arm_id for arm in pooled.study.arms} == {
        f"resnet18-{aug}-full-s{seed}" for aug in ("none", "flip") for seed in (0, 1, 2)
    }
    for arm in pooled.study.arms:
        assert arm.predictions["image_id"].is_unique and len(arm.predictions) == 4 * len(SUBJECTS)
        assert set(arm.predictions["split"]) == {"test"}
        assert "fold" not in arm.spec and sorted(arm.info["fold_arms"]) == ["0", "1", "2"]
    table = pooled.out_of_fold
    assert len(table) == 2 * 3 * 4 * len(SUBJECTS)
    assert (table["fold"] == table["subject"].map(FOLD_OF)).all()


def test_a_name_and_seed_with_a_missing_fold_is_left_out_and_said() -> None:
    pooled = pool_folds(cv_study(drop=("resnet18-flip-full", 1, 2)))
    assert "resnet18-flip-full-s1" not in {arm.arm_id for arm in pooled.study.arms}
    assert any("resnet18-flip-full-s1 (fold(s) 2 of 3" in line for line in pooled.study.incomplete)


def test_overlapping_folds_are_a_data_error() -> None:
    study = cv_study(seeds=(0,))
    arm = study.arms[1]
    extra = study.arms[0].predictions.query("split == 'test'")
    study.arms[1] = ArmResults(
        arm.arm_id, arm.name, arm.seed, arm.info, pd.concat([arm.predictions, extra]), None
    )
    with pytest.raises(DataError, match=r"test image of both .*-f0 and .*-f1"):
        pool_folds(study)


def test_fold_metrics_per_fold_and_pooled() -> None:
    pooled = pool_folds(cv_study(seeds=(0,)))
    folds = fold_metrics(pooled.out_of_fold, "auc")
    flip = folds[folds["name"] == "resnet18-flip-full"]
    assert list(flip["fold"]) == [0, 1, 2, POOLED]
    assert list(flip["n_images"]) == [16, 16, 16, 48]
    oof = pooled.out_of_fold.query("name == 'resnet18-flip-full'")
    part = oof[oof["fold"] == 1]
    assert flip["value"].iloc[1] == pytest.approx(roc_auc_score(part["label"], part["prob"]))
    assert flip["value"].iloc[3] == pytest.approx(roc_auc_score(oof["label"], oof["prob"]))


def test_verdicts_compare_the_pooled_predictions_per_seed() -> None:
    pooled = pool_folds(cv_study())
    plan = plan_references(pooled.study, None)
    verdicts = primary_verdicts(pooled.study, plan, "auc")
    assert list(verdicts["arm"]) == ["resnet18-flip-full"]
    assert verdicts["n_seeds"].iloc[0] == 3 and verdicts["n_subjects"].iloc[0] == len(SUBJECTS)
