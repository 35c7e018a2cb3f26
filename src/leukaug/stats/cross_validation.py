"""Cross-validated studies (`[data] cv_folds`): fold arms -> out-of-fold predictions.

A cross-validated study has one arm folder per arm x seed x fold (`arm.json`'s spec holds
the fold). The inference (docs/statistics.md, "Cross-validation") does not treat the K fold
contrasts as independent replicates: their training sets overlap and their test sets come
from one data set (Nadeau & Bengio 2003; Bates, Hastie & Tibshirani 2023). Instead, per arm
name and seed, the K folds' test predictions are pooled into one out-of-fold prediction per
image (each image is predicted once, by the model that never saw it), and that pooled arm
goes through the hold-out rule unchanged: per seed the arm-minus-reference metric on the
pooled predictions, then the seed-paired, subject-clustered test across seeds
(`leukaug.stats.compare_arm`, `decide_verdicts`). benchmarks/calibration_cv.py checks its
false-verdict rate on fold-structured simulated studies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from leukaug.core.errors import DataError
from leukaug.stats.analysis import COMPARISON_SPLIT
from leukaug.stats.primary_metrics import get_metric
from leukaug.stats.study_results import ArmResults, Study

POOLED = "pooled"  # the fold label of the out-of-fold rows in fold_metrics
OOF_COLUMNS = ("name", "seed", "fold", "arm_id", "image_id", "subject", "label", "prob")


def arm_fold(arm: ArmResults) -> int | None:
    """The fold an arm was trained for (its spec's `fold`), None in a hold-out study."""
    fold = arm.spec.get("fold")
    return None if fold is None else int(fold)


def is_cross_validated(study: Study) -> bool:
    """True when the study's arms are fold arms (or its dataset.json records folds)."""
    return any(arm_fold(arm) is not None for arm in study.arms) or bool(
        (study.dataset or {}).get("cv")
    )


def n_folds(study: Study) -> int:
    """K: dataset.json's `cv.folds`, else the study file's `data.cv_folds`, else the folds seen."""
    recorded = (study.dataset or {}).get("cv", {}).get("folds") or (
        study.config.get("data") or {}
    ).get("cv_folds")
    if recorded:
        return int(recorded)
    folds = [arm_fold(arm) for arm in study.arms]
    return max((f for f in folds if f is not None), default=-1) + 1


@dataclass(frozen=True)
class FoldGroup:
    """The fold arms of one arm name and seed."""

    name: str
    seed: int
    arms: dict[int, ArmResults]  # fold -> arm


def fold_groups(study: Study) -> list[FoldGroup]:
    """Fold arms grouped by (name, seed), in the study's arm order."""
    groups: dict[tuple[str, int], dict[int, ArmResults]] = {}
    for arm in study.arms:
        fold = arm_fold(arm)
        if fold is None:
            raise DataError(
                f"{study.directory}: arm {arm.arm_id} has no fold in its arm.json spec, but the "
                "study is cross-validated; remove the folder or re-run the study."
            )
        groups.setdefault((arm.name, arm.seed), {})[fold] = arm
    return [FoldGroup(name, seed, arms) for (name, seed), arms in groups.items()]


def _test_rows(arm: ArmResults) -> pd.DataFrame:
    return arm.predictions[arm.predictions["split"] == COMPARISON_SPLIT]


def out_of_fold(group: FoldGroup) -> pd.DataFrame:
    """The group's out-of-fold table (OOF_COLUMNS): every fold's test rows, each image once."""
    frames = [
        _test_rows(arm).assign(name=group.name, seed=group.seed, fold=fold, arm_id=arm.arm_id)
        for fold, arm in sorted(group.arms.items())
    ]
    table = pd.concat(frames, ignore_index=True)[list(OOF_COLUMNS)]
    repeated = table["image_id"].duplicated(keep=False)
    if repeated.any():
        first = table[repeated].sort_values("image_id").iloc[:2]
        raise DataError(
            f"image {first['image_id'].iloc[0]!r} is a test image of both {first['arm_id'].iloc[0]} "
            f"and {first['arm_id'].iloc[1]}: the folds of {group.name!r} seed {group.seed} overlap. "
            "The arm folders come from different fold assignments; re-run the study with --force."
        )
    return table.sort_values("image_id", ignore_index=True)


def _pooled_arm(group: FoldGroup, table: pd.DataFrame) -> ArmResults:
    first = group.arms[min(group.arms)]
    spec = {key: value for key, value in first.spec.items() if key != "fold"}
    arm_id = f"{group.name}-s{group.seed}"
    info: dict[str, Any] = {
        **{key: value for key, value in first.info.items() if key != "config_hash"},
        "arm_id": arm_id,
        "spec": spec,
        "fold_arms": {str(fold): arm.arm_id for fold, arm in sorted(group.arms.items())},
    }
    predictions = table.assign(split=COMPARISON_SPLIT)[
        ["split", "image_id", "subject", "label", "prob"]
    ]
    return ArmResults(arm_id, group.name, group.seed, info, predictions, history=None)


@dataclass
class PooledStudy:
    """A cross-validated study seen through its out-of-fold predictions."""

    study: Study  # one arm per name x seed whose test predictions are out-of-fold
    out_of_fold: pd.DataFrame  # OOF_COLUMNS, every complete name x seed
    folds: int


def pool_folds(study: Study) -> PooledStudy:
    """One pooled arm per name x seed whose K folds all finished. A name x seed with a fold
    missing is left out of the analysis and listed in the pooled study's `incomplete`."""
    k = n_folds(study)
    pooled, tables, incomplete = [], [], list(study.incomplete)
    for group in fold_groups(study):
        missing = sorted(set(range(k)) - set(group.arms))
        if missing:
            folds = ", ".join(str(f) for f in missing)
            incomplete.append(
                f"{group.name}-s{group.seed} (fold(s) {folds} of {k} not finished: "
                "its out-of-fold predictions are incomplete, so it is not analysed)"
            )
            continue
        table = out_of_fold(group)
        tables.append(table)
        pooled.append(_pooled_arm(group, table))
    oof = (
        pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(OOF_COLUMNS))
    )
    return PooledStudy(replace(study, arms=pooled, incomplete=incomplete), oof, k)


def fold_metrics(out_of_fold_table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The primary metric per arm name, seed and fold (each fold's own test images) and on
    the pooled out-of-fold predictions (fold = "pooled"): columns name, seed, fold, n_images,
    value."""
    definition = get_metric(metric)
    rows = []
    for (name, seed), table in out_of_fold_table.groupby(["name", "seed"], sort=False):
        parts = [(int(fold), part) for fold, part in table.groupby("fold")]
        for fold, part in [*parts, (POOLED, table)]:
            y, prob = part["label"].to_numpy(), part["prob"].to_numpy(dtype=float)
            value = definition.value(y, prob)  # NaN where undefined (AUC of one class)
            rows.append(
                {
                    "name": name,
                    "seed": int(seed),
                    "fold": fold,
                    "n_images": len(part),
                    "value": value,
                }
            )
    return pd.DataFrame(rows, columns=["name", "seed", "fold", "n_images", "value"])
