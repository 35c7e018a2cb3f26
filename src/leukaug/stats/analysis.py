"""The numbers behind the report: metrics per arm and split, seed summaries, the secondary
(image-level) comparisons with each arm's matched reference, and the figures' data."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from leukaug.core.errors import DataError
from leukaug.stats.bootstrap import subject_bootstrap_ci
from leukaug.stats.classical import (
    BOOTSTRAP_METRICS,
    DegenerateDataWarning,
    delong_ci,
    delong_test,
    holm,
    mcnemar_exact,
    paired_bootstrap,
)
from leukaug.stats.metrics import (
    DEFAULT_THRESHOLD,
    SPLIT_ORDER,
    accuracy_ci,
    expected_calibration_error,
    operating_threshold,
    predicted_all,
    split_metrics,
    subject_table,
    threshold_sweep,
)
from leukaug.stats.pairs import ReferencePlan
from leukaug.stats.study_results import Study

COMPARISON_SPLIT = "test"


def _splits(frame: pd.DataFrame) -> list[str]:
    present = set(frame["split"])
    return [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))


SUBJECT_CI_METRICS = ("accuracy", "auc")


def subject_intervals(
    frame: pd.DataFrame, *, n_resamples: int = 2000, rng_seed: int = 0
) -> dict[str, float]:
    """Subject-level (cluster bootstrap) 95% CIs of one split's accuracy and AUC.

    Image-level intervals (Wilson, DeLong) treat cells as independent; cells of one patient
    are not, so these are the intervals for a population of patients.
    """
    out: dict[str, float] = {}
    for metric in SUBJECT_CI_METRICS:
        try:
            low, high = subject_bootstrap_ci(
                frame, metric, n_resamples=n_resamples, rng_seed=rng_seed
            )
        except DataError:  # one class, or one subject: no interval
            low, high = math.nan, math.nan
        out[f"{metric}_subject_ci_low"], out[f"{metric}_subject_ci_high"] = low, high
    return out


def metrics_rows(
    predictions: pd.DataFrame,
    ci_method: str = "wilson",
    *,
    n_resamples: int = 2000,
    rng_seed: int = 0,
) -> list[dict[str, Any]]:
    """One metrics row per split of one prediction table; the test split also gets
    subject-level CIs of accuracy and AUC."""
    operating = operating_threshold(predictions)
    rows = []
    for split in _splits(predictions):
        frame = predictions[predictions["split"] == split]
        row: dict[str, Any] = {"split": split}
        row.update(split_metrics(frame, DEFAULT_THRESHOLD, operating, ci_method=ci_method))
        if split == COMPARISON_SPLIT:
            row.update(subject_intervals(frame, n_resamples=n_resamples, rng_seed=rng_seed))
        rows.append(row)
    return rows


def metrics_table(
    study: Study, ci_method: str = "wilson", *, n_resamples: int = 2000, rng_seed: int = 0
) -> pd.DataFrame:
    """One row per arm and split, every metric (metrics.csv)."""
    rows = []
    for arm in study.arms:
        for row in metrics_rows(
            arm.predictions, ci_method, n_resamples=n_resamples, rng_seed=rng_seed
        ):
            rows.append({"arm_id": arm.arm_id, "name": arm.name, "seed": arm.seed, **row})
    return pd.DataFrame(rows)


def seed_averaged(study: Study, name: str) -> pd.DataFrame:
    """Predictions of one arm name with P(ALL) averaged over its seeds, joined by image_id."""
    arms = study.arms_named(name)
    if len(arms) == 1:
        return arms[0].predictions.copy()
    keys = ["split", "image_id"]
    merged = arms[0].predictions.rename(columns={"prob": "prob_0"})
    for k, arm in enumerate(arms[1:], start=1):
        other = arm.predictions.rename(
            columns={"prob": f"prob_{k}", "label": f"label_{k}", "subject": f"subject_{k}"}
        )
        merged = merged.merge(other, on=keys, how="inner", validate="one_to_one")
        if not (merged["label"] == merged[f"label_{k}"]).all():
            raise DataError(
                f"arm {arm.arm_id!r} labels disagree with seed {arms[0].arm_id!r} for the same image_id."
            )
        merged = merged.drop(columns=[f"label_{k}", f"subject_{k}"])
    prob_columns = [f"prob_{k}" for k in range(len(arms))]
    merged["prob"] = merged[prob_columns].mean(axis=1)
    return merged.drop(columns=prob_columns).sort_values(keys, ignore_index=True)


def seed_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD over seeds of every numeric metric, per arm name and split."""
    numeric = [c for c in metrics.columns if c not in ("arm_id", "name", "seed", "split")]
    numeric = [
        c
        for c in numeric
        if pd.api.types.is_numeric_dtype(metrics[c]) and not pd.api.types.is_bool_dtype(metrics[c])
    ]
    grouped = metrics.groupby(["name", "split"], sort=False)
    mean = grouped[numeric].mean().add_suffix("_mean")
    sd = grouped[numeric].std(ddof=1).add_suffix("_sd")
    summary = pd.concat([grouped.size().rename("n_seeds"), mean, sd], axis=1).reset_index()
    return summary


def has_split(predictions: pd.DataFrame, split: str = COMPARISON_SPLIT) -> bool:
    return bool((predictions["split"] == split).any())


def paired(a: pd.DataFrame, b: pd.DataFrame, split: str = COMPARISON_SPLIT) -> pd.DataFrame:
    """Rows of one split that both prediction tables hold, joined by image_id (never by position)."""
    left = a[a["split"] == split][["image_id", "subject", "label", "prob"]]
    right = b[b["split"] == split][["image_id", "label", "prob"]]
    joined = left.merge(
        right, on="image_id", how="inner", suffixes=("_a", "_b"), validate="one_to_one"
    )
    if joined.empty:
        raise DataError(
            f"the two arms share no {split} image_id; they were not evaluated on the same images."
        )
    if not (joined["label_a"] == joined["label_b"]).all():
        raise DataError(
            f"labels disagree between arms for the same {split} image_id; predictions are inconsistent."
        )
    return (
        joined.rename(columns={"label_a": "label"})
        .drop(columns="label_b")
        .sort_values("image_id", ignore_index=True)
    )


def compare(
    a: pd.DataFrame,
    b: pd.DataFrame,
    *,
    seed: int = 0,
    n_resamples: int = 2000,
    split: str = COMPARISON_SPLIT,
) -> list[dict[str, Any]]:
    """McNemar, DeLong and subject-bootstrap rows for arm a against reference b on one split
    (secondary: conditional on these trained models and these cells)."""
    joined = paired(a, b, split)
    y = joined["label"].to_numpy()
    prob_a, prob_b = joined["prob_a"].to_numpy(), joined["prob_b"].to_numpy()
    correct_a = predicted_all(prob_a) == (y == 1)
    correct_b = predicted_all(prob_b) == (y == 1)
    common = {"split": split, "n_images": len(joined), "n_subjects": joined["subject"].nunique()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        boot = paired_bootstrap(
            y, prob_a, prob_b, joined["subject"].to_numpy(), n_resamples=n_resamples, seed=seed
        )
        delong = delong_test(y, prob_a, prob_b)
    mc = mcnemar_exact(correct_a, correct_b)
    rows = [
        {
            "test": "mcnemar_exact",
            "metric": "accuracy",
            "statistic": mc.statistic,
            "p_value": mc.p_value,
            "effect": float(correct_a.mean() - correct_b.mean()),
            "ci_low": boot["accuracy"].low,
            "ci_high": boot["accuracy"].high,
            "ci_method": "subject bootstrap",
            "detail": f"only arm right: {mc.only_a}; only reference right: {mc.only_b}",
        },
        {
            "test": "delong",
            "metric": "auc",
            "statistic": delong.z,
            "p_value": delong.p_value,
            "effect": delong.difference,
            "ci_low": delong.ci_low,
            "ci_high": delong.ci_high,
            "ci_method": "DeLong",
            "detail": f"AUC {delong.auc_a:.4f} vs {delong.auc_b:.4f}; SE {delong.se:.4f}",
        },
    ]
    for metric in BOOTSTRAP_METRICS:
        result = boot[metric]
        rows.append(
            {
                "test": "subject_bootstrap",
                "metric": metric,
                "statistic": math.nan,
                "p_value": result.p_value,
                "effect": result.estimate,
                "ci_low": result.low,
                "ci_high": result.high,
                "ci_method": "subject bootstrap",
                "detail": f"{result.n_valid} of {result.n_resamples} resamples",
            }
        )
    return [{**common, **row} for row in rows]


COMPARISON_COLUMNS = [
    "level",
    "arm",
    "arm_id",
    "reference",
    "reference_id",
    "split",
    "test",
    "metric",
    "statistic",
    "p_value",
    "p_adjusted",
    "effect",
    "ci_low",
    "ci_high",
    "ci_method",
    "n_images",
    "n_subjects",
    "detail",
]


def comparisons_table(
    study: Study, plan: ReferencePlan, *, seed: int = 0, n_resamples: int = 2000
) -> pd.DataFrame:
    """Secondary comparisons (comparisons.csv): McNemar, DeLong and a subject bootstrap of every
    tested arm against its matched reference on test, per seed ("arm") and, with several seeds,
    on seed-averaged probabilities ("seed_mean").

    They are conditional on these trained models and these cells, and McNemar and DeLong
    treat cells as independent; they decide nothing (the verdicts come from verdicts.csv).
    A seed the reference lacks gets no per-seed row (never another seed's reference), and
    seed averages are compared only when both arms have the same seeds.
    Holm's correction runs within each level and test/metric across the arms listed.
    """
    rows: list[dict[str, Any]] = []
    multi_seed = any(len(study.arms_named(name)) > 1 for name in study.names())
    for pair in plan.pairs:
        if not has_split(seed_averaged(study, pair.arm)) or not has_split(
            seed_averaged(study, pair.reference)
        ):
            continue
        names = {"arm": pair.arm, "reference": pair.reference}
        references = {arm.seed: arm for arm in study.arms_named(pair.reference)}
        same_seeds = {arm.seed for arm in study.arms_named(pair.arm)} == set(references)
        if multi_seed and same_seeds:
            for row in compare(
                seed_averaged(study, pair.arm),
                seed_averaged(study, pair.reference),
                seed=seed,
                n_resamples=n_resamples,
            ):
                rows.append(
                    {"level": "seed_mean", **names, "arm_id": "", "reference_id": "", **row}
                )
        for arm in study.arms_named(pair.arm):
            reference = references.get(arm.seed)
            if reference is None:
                continue
            for row in compare(
                arm.predictions, reference.predictions, seed=seed, n_resamples=n_resamples
            ):
                rows.append(
                    {
                        "level": "arm",
                        **names,
                        "arm_id": arm.arm_id,
                        "reference_id": reference.arm_id,
                        **row,
                    }
                )
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if table.empty:
        return table
    table["p_adjusted"] = np.nan
    for _, index in table.groupby(["level", "test", "metric"]).groups.items():
        table.loc[index, "p_adjusted"] = holm(table.loc[index, "p_value"].to_numpy())
    return table


@dataclass
class FigureData:
    """The numbers every report figure draws, computed once (test split, seed-averaged
    probabilities for arms with several seeds)."""

    names: list[str]  # arm names, references first
    reference: str  # how the figures name the reference ("matched reference" or an arm)
    multi_seed: bool
    histories: dict[str, list[pd.DataFrame]]
    units: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (labels, P(ALL)) on test
    accuracy: pd.DataFrame  # name, accuracy, accuracy_ci_low, accuracy_ci_high
    aucs: dict[str, tuple[float, float, float]]  # name -> (AUC, DeLong low, high)
    sweeps: dict[str, pd.DataFrame]
    operating: dict[str, float | None]
    eces: dict[str, float]
    subjects: dict[str, pd.DataFrame]
    forest: pd.DataFrame  # secondary comparisons at the level the figures use


def figure_data(
    study: Study, plan: ReferencePlan, comparisons: pd.DataFrame, ci_method: str
) -> FigureData:
    """Every figure's numbers (see `FigureData`)."""
    first = plan.used_references or plan.references
    names = [*first, *[n for n in study.names() if n not in first]]
    predictions = {name: seed_averaged(study, name) for name in names}
    test = {name: frame[frame["split"] == COMPARISON_SPLIT] for name, frame in predictions.items()}
    test = {name: frame for name, frame in test.items() if not frame.empty}
    units = {
        name: (frame["label"].to_numpy(), frame["prob"].to_numpy()) for name, frame in test.items()
    }
    multi_seed = any(len(study.arms_named(n)) > 1 for n in names)
    histories = {
        name: [a.history for a in study.arms_named(name) if a.history is not None] for name in names
    }
    accuracy_rows = []
    for name, (y, prob) in units.items():
        correct = int((predicted_all(prob) == (y == 1)).sum())
        low, high = accuracy_ci(correct, len(y), method=ci_method)
        accuracy = correct / len(y)
        accuracy_rows.append(
            {
                "name": name,
                "accuracy": accuracy,
                # Wilson's bound at 0 or 1 correct can miss the estimate by a rounding error
                "accuracy_ci_low": min(low, accuracy),
                "accuracy_ci_high": max(high, accuracy),
            }
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        aucs = {
            name: (ci.auc, ci.low, ci.high)
            for name, (y, prob) in units.items()
            for ci in [delong_ci(y, prob)]
        }
    forest = (
        comparisons[comparisons["level"] == ("seed_mean" if multi_seed else "arm")]
        if not comparisons.empty
        else comparisons
    )
    return FigureData(
        names=names,
        reference=plan.used_references[0]
        if len(plan.used_references) == 1
        else "matched reference",
        multi_seed=multi_seed,
        histories={name: h for name, h in histories.items() if h},
        units=units,
        accuracy=pd.DataFrame(
            accuracy_rows, columns=["name", "accuracy", "accuracy_ci_low", "accuracy_ci_high"]
        ),
        aucs=aucs,
        sweeps={name: threshold_sweep(y, prob) for name, (y, prob) in units.items()},
        operating={name: operating_threshold(predictions[name]) for name in units},
        eces={name: expected_calibration_error(y, prob) for name, (y, prob) in units.items()},
        subjects={name: subject_table(frame) for name, frame in test.items()},
        forest=forest,
    )


def training_table(study: Study) -> pd.DataFrame:
    """Per arm: epochs run and the epoch whose validation loss was lowest (its checkpoint)."""
    rows = []
    for arm in study.arms:
        history = arm.history
        if history is None or history.empty or "val_loss" not in history:
            continue
        val = pd.to_numeric(history["val_loss"], errors="coerce")
        best = int(val.idxmin()) if val.notna().any() else None
        rows.append(
            {
                "name": arm.name,
                "seed": arm.seed,
                "epochs_run": len(history),
                "epochs_planned": arm.spec.get("epochs"),
                "best_epoch": None if best is None else int(history.loc[best, "epoch"]),
                "best_val_loss": None if best is None else float(val[best]),
            }
        )
    return pd.DataFrame(rows)
