"""The verdicts in words: the report's headline, the verdict table and the family's notes,
written from verdicts.csv alone (decided by `leukaug.stats.family`), so no verdict can sit
beside a number that contradicts it.
"""

from __future__ import annotations

import math

import pandas as pd

from leukaug.report.tables import DASH, Table, interval, p_value
from leukaug.stats.family import ALPHA
from leukaug.stats.pairs import ReferencePlan

RECOMMENDED_SEEDS = 3
METRIC_LABELS = {
    "auc": "AUC",
    "accuracy": "accuracy (threshold 0.5)",
    "balanced_accuracy": "balanced accuracy (threshold 0.5)",
    "f1_weighted": "weighted F1 (threshold 0.5)",
    "log_loss": "log loss (lower is better)",
}


def _ci_name(row: pd.Series) -> str:
    """The printed interval is Holm-adjusted: it excludes 0 exactly when there is a verdict."""
    level = row.get("ci_level", math.nan)
    if level is None or not math.isfinite(float(level)):
        return "CI"
    return f"{100 * float(level):.1f}% Holm-adjusted CI"


def _effect_text(row: pd.Series, metric: str) -> str:
    effect = interval(row["effect"], row["ci_low"], row["ci_high"], 3, sign=True)
    return f"Δ {METRIC_LABELS.get(metric, metric)} {effect} ({_ci_name(row)})"


def _p_phrase(value: float) -> str:
    text = p_value(value)
    return f"p {text[0]} {text[1:]}" if text.startswith("<") else f"p = {text}"


def _detectable(row: pd.Series) -> str:
    """The smallest difference the study would have found with 80% power."""
    mde = row.get("mde", math.nan)
    if mde is None or not math.isfinite(float(mde)):
        return DASH
    return f"±{float(mde):.3f}"


def seeds_sentence(verdicts: pd.DataFrame) -> str | None:
    """What the number of training runs allows one to claim (None with enough seeds)."""
    if verdicts.empty:
        return None
    fewest = int(verdicts["n_seeds"].min())
    if fewest == 1:
        return (
            "One seed per arm: every result here is conditional on one training run per arm and "
            "cannot generalise over training runs (another run of the same arm can differ as much "
            f"as the arms do). Run at least {RECOMMENDED_SEEDS} seeds (`seeds = [0, 1, 2]` in [study])."
        )
    if fewest < RECOMMENDED_SEEDS:
        return (
            f"Only {fewest} seeds per arm: the between-run variance rests on {fewest} runs; "
            f"at least {RECOMMENDED_SEEDS} seeds are recommended."
        )
    return None


def rule_sentence(verdicts: pd.DataFrame, metric: str, alpha: float = ALPHA) -> str:
    """The verdict rule and its family, stated once."""
    label = METRIC_LABELS.get(metric, metric)
    methods = ", ".join(sorted(set(verdicts["method"].astype(str)))) if len(verdicts) else ""
    return (
        f"Rule: the primary metric is test {label}. An arm helps (hurts) when its difference from its "
        f"matched reference is better (worse) on that metric with a Holm-adjusted p of at most {alpha}; otherwise "
        f"there is no detectable difference. The family is the {len(verdicts)} comparison(s) listed here "
        f"(verdicts.csv); Holm's correction applies to exactly these p-values. Differences are arm minus "
        f"reference, paired by seed and joined by image_id; the inference is over training runs (seeds) "
        f"and test subjects ({methods}). The matched reference has the same model, regime, image size, "
        "epochs, initialisation and class weighting, and differs only in its augmentations."
    )


def headline(verdicts: pd.DataFrame, plan: ReferencePlan, metric: str) -> list[str]:
    """The report's opening sentences, written from verdicts.csv alone."""
    lines: list[str] = []
    if verdicts.empty and not plan.untested and not plan.pairs:
        lines.append(
            f"Every arm has the reference augmentation {plan.baseline!r}: there is nothing to test, and "
            "this report only describes the arms."
        )
    elif verdicts.empty:
        lines.append(
            "No arm could be tested against a matched reference, so there are no verdicts."
        )
    for verdict, phrase in (
        ("helps", "helps"),
        ("hurts", "hurts"),
    ):
        for _, row in verdicts[verdicts["verdict"] == verdict].iterrows():
            lines.append(
                f"{row['arm']} {phrase} compared with {row['reference']}: {_effect_text(row, metric)}, "
                f"Holm-adjusted {_p_phrase(row['p_adjusted'])}, {row['n_seeds']} seed(s) x "
                f"{row['n_subjects']} test subjects."
            )
    if not verdicts.empty and not (verdicts["verdict"] == "helps").any():
        lines.append("No augmentation was shown to help.")
    for _, row in verdicts[verdicts["verdict"] == "no detectable difference"].iterrows():
        lines.append(
            f"{row['arm']}: no detectable difference from {row['reference']} "
            f"({_effect_text(row, metric)}, Holm-adjusted {_p_phrase(row['p_adjusted'])}); this study "
            f"would have detected a difference of {_detectable(row)} or more with 80% power."
        )
    if not verdicts.empty:
        lines.append(rule_sentence(verdicts, metric))
    if (sentence := seeds_sentence(verdicts)) is not None:
        lines.append(sentence)
    if plan.untested:
        described = "; ".join(f"{arm} ({why.rstrip('.')})" for arm, why in plan.untested.items())
        lines.append(f"Described, not tested: {described}.")
    return lines


def verdict_table(verdicts: pd.DataFrame, metric: str) -> Table | None:
    """The headline as a table: one row per tested arm, every number from verdicts.csv."""
    if verdicts.empty:
        return None
    rows = [
        [
            str(row["arm"]),
            str(row["reference"]),
            str(row["verdict"]),
            interval(row["effect"], row["ci_low"], row["ci_high"], 4, sign=True),
            _ci_name(row).removesuffix(" Holm-adjusted CI"),
            p_value(row["p_adjusted"]),
            _detectable(row),
            f"{row['n_seeds']} x {row['n_subjects']}",
            str(row["method"]),
        ]
        for _, row in verdicts.iterrows()
    ]
    header = [
        "Arm",
        "Reference",
        "Verdict",
        f"Δ {METRIC_LABELS.get(metric, metric)} [Holm-adjusted CI]",
        "CI level",
        "Holm-adjusted p",
        "Detectable (80% power)",
        "Seeds x subjects",
        "Method",
    ]
    notes = [
        "Each interval is at the level that matches its Holm-adjusted test, so it excludes 0 exactly "
        "when there is a verdict; unadjusted 95% intervals and raw p-values are in verdicts.csv "
        "(ci_low_unadjusted, ci_high_unadjusted, p_value). Detectable: the difference this study "
        "would find with 80% power at the strictest Holm step."
    ]
    return Table(
        "verdicts",
        "Primary analysis: each arm against its matched reference (test split, verdicts.csv).",
        header,
        rows,
        notes,
        text_columns=3,
    )


def family_notes(plan: ReferencePlan) -> list[str]:
    """Notes about the comparisons: how the baseline was read, explicit pairs, the references."""
    notes = list(plan.notes)
    explicit = [p for p in plan.pairs if p.source == "pair"]
    if explicit:
        notes.append(
            "Explicit pairs from [[study.pairs]]: "
            + ", ".join(f"{p.arm} vs {p.reference}" for p in explicit)
            + "."
        )
    if plan.used_references:
        notes.append(
            f"Reference augmentation {plan.baseline!r}; reference arms: {', '.join(plan.used_references)}."
        )
    if plan.pairs and plan.unpaired_references:
        notes.append(
            f"Arms with the reference augmentation that no other arm matches (described, not tested): "
            f"{', '.join(plan.unpaired_references)}."
        )
    return notes
