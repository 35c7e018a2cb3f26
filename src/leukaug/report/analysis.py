"""The numbers behind the report: metrics per arm and split, seed summaries, comparisons."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from leukaug.errors import ConfigError, DataError
from leukaug.metrics import DEFAULT_THRESHOLD, SPLIT_ORDER, split_metrics, youden_threshold
from leukaug.report.load import Study
from leukaug.stats import (
    BOOTSTRAP_METRICS,
    DegenerateDataWarning,
    delong_test,
    holm,
    mcnemar_exact,
    paired_bootstrap,
)

COMPARISON_SPLIT = "test"
SIGNIFICANCE = 0.05


def resolve_baseline(study: Study, baseline: str | None) -> str:
    """The baseline arm name: as given, else the study's configured one, else the first unaugmented arm."""
    names = study.names()
    if not names:
        raise DataError(f"{study.directory} holds no completed arm (no arms/*/predictions.csv).")
    if baseline is None:
        configured = study.config.get("baseline") or study.config.get("study", {}).get("baseline")
        if isinstance(configured, str) and configured in names:
            baseline = configured
        else:
            baseline = next((a.name for a in study.arms if not a.augmentations), None)
    if baseline is None:
        raise ConfigError(
            f"No baseline: no arm is unaugmented. Pass --baseline with one of: {', '.join(names)}."
        )
    if baseline not in names:
        raise ConfigError(f"Unknown baseline arm {baseline!r}. Completed arms: {', '.join(names)}.")
    return baseline


def _splits(frame: pd.DataFrame) -> list[str]:
    present = set(frame["split"])
    return [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))


def operating_threshold(predictions: pd.DataFrame) -> float | None:
    """Youden's J threshold chosen on the validation split (None without one)."""
    val = predictions[predictions["split"] == "val"]
    if val.empty:
        return None
    return youden_threshold(val["label"].to_numpy(), val["prob"].to_numpy())


def metrics_rows(predictions: pd.DataFrame, ci_method: str = "wilson") -> list[dict[str, Any]]:
    """One metrics row per split of one prediction table."""
    operating = operating_threshold(predictions)
    rows = []
    for split in _splits(predictions):
        row = {"split": split}
        row.update(
            split_metrics(
                predictions[predictions["split"] == split],
                DEFAULT_THRESHOLD,
                operating,
                ci_method=ci_method,
            )
        )
        rows.append(row)
    return rows


def metrics_table(study: Study, ci_method: str = "wilson") -> pd.DataFrame:
    """One row per arm and split, every metric (metrics.csv)."""
    rows = []
    for arm in study.arms:
        for row in metrics_rows(arm.predictions, ci_method):
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
    """McNemar, DeLong and subject-bootstrap rows for arm a against baseline b on one split."""
    joined = paired(a, b, split)
    y = joined["label"].to_numpy()
    prob_a, prob_b = joined["prob_a"].to_numpy(), joined["prob_b"].to_numpy()
    correct_a = (prob_a >= DEFAULT_THRESHOLD) == (y == 1)
    correct_b = (prob_b >= DEFAULT_THRESHOLD) == (y == 1)
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
            "detail": f"only arm right: {mc.only_a}; only baseline right: {mc.only_b}",
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
    "baseline",
    "baseline_id",
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
    study: Study, baseline: str, *, seed: int = 0, n_resamples: int = 2000
) -> pd.DataFrame:
    """Every arm against the baseline on test: on seed-averaged probabilities (when some arm has
    several seeds) and per seed ("arm").

    Holm's correction runs within each level and test/metric across all arms of the study.
    Arms without test predictions are left out (the report says so).
    """
    rows: list[dict[str, Any]] = []
    if not has_split(seed_averaged(study, baseline)):
        return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    baseline_arms = {arm.seed: arm for arm in study.arms_named(baseline)}
    first_baseline = study.arms_named(baseline)[0]
    if any(len(study.arms_named(name)) > 1 for name in study.names()):
        reference_predictions = seed_averaged(study, baseline)
        for name in study.names():
            if name == baseline or not has_split(seed_averaged(study, name)):
                continue
            for row in compare(
                seed_averaged(study, name),
                reference_predictions,
                seed=seed,
                n_resamples=n_resamples,
            ):
                rows.append(
                    {
                        "level": "seed_mean",
                        "arm": name,
                        "arm_id": "",
                        "baseline": baseline,
                        "baseline_id": "",
                        **row,
                    }
                )
    for arm in study.arms:
        if arm.name == baseline or not has_split(arm.predictions):
            continue
        reference = baseline_arms.get(arm.seed, first_baseline)
        for row in compare(
            arm.predictions, reference.predictions, seed=seed, n_resamples=n_resamples
        ):
            rows.append(
                {
                    "level": "arm",
                    "arm": arm.name,
                    "arm_id": arm.arm_id,
                    "baseline": baseline,
                    "baseline_id": reference.arm_id,
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


@dataclass(frozen=True)
class Verdict:
    """The headline for one arm name against the baseline."""

    arm: str
    verdict: str  # "better" | "worse" | "no clear difference"
    accuracy_difference: float
    accuracy_ci: tuple[float, float]
    mcnemar_p_adjusted: float
    auc_difference: float
    auc_ci: tuple[float, float]
    delong_p_adjusted: float
    balanced_accuracy_difference: float
    balanced_accuracy_ci: tuple[float, float]


def verdicts(comparisons: pd.DataFrame) -> list[Verdict]:
    """Which arms beat the baseline: accuracy higher with Holm-adjusted McNemar p < 0.05 AND a
    subject-bootstrap CI of the difference that excludes 0 (both must agree)."""
    if comparisons.empty:
        return []
    level = "seed_mean" if (comparisons["level"] == "seed_mean").any() else "arm"
    table = comparisons[comparisons["level"] == level]
    result = []
    for arm, group in table.groupby("arm", sort=False):
        pick = {(r.test, r.metric): r for r in group.itertuples()}
        mc = pick[("mcnemar_exact", "accuracy")]
        dl = pick[("delong", "auc")]
        ba = pick[("subject_bootstrap", "balanced_accuracy")]
        significant = mc.p_adjusted < SIGNIFICANCE
        if significant and mc.effect > 0 and mc.ci_low > 0:
            verdict = "better"
        elif significant and mc.effect < 0 and mc.ci_high < 0:
            verdict = "worse"
        else:
            verdict = "no clear difference"
        result.append(
            Verdict(
                str(arm),
                verdict,
                mc.effect,
                (mc.ci_low, mc.ci_high),
                mc.p_adjusted,
                dl.effect,
                (dl.ci_low, dl.ci_high),
                dl.p_adjusted,
                ba.effect,
                (ba.ci_low, ba.ci_high),
            )
        )
    return result
