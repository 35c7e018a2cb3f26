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
from leukaug.stats.primary_metrics import PRIMARY_METRICS, metric_label

RECOMMENDED_SEEDS = 3
ADJUSTMENTS = {"maxt": "max-t-adjusted", "holm": "Holm-adjusted"}
CORRECTIONS = {"maxt": "The step-down max-t correction", "holm": "Holm's correction"}


def _multiplicity(frame: pd.DataFrame | pd.Series) -> str:
    """The family's multiplicity rule (verdicts.csv `multiplicity`; Holm in older tables)."""
    value = frame.get("multiplicity") if isinstance(frame, pd.Series) else None
    if isinstance(frame, pd.DataFrame) and "multiplicity" in frame and len(frame):
        value = frame["multiplicity"].iloc[0]
    return str(value) if value in ADJUSTMENTS else "holm"


def _adjusted(frame: pd.DataFrame | pd.Series) -> str:
    return ADJUSTMENTS[_multiplicity(frame)]


def _label(verdicts: pd.DataFrame | pd.Series, metric: str) -> str:
    """The metric's label with the threshold the verdicts used (verdicts.csv `threshold`)."""
    threshold = None
    if isinstance(verdicts, pd.DataFrame) and "threshold" in verdicts and len(verdicts):
        threshold = verdicts["threshold"].iloc[0]
    elif isinstance(verdicts, pd.Series):
        threshold = verdicts.get("threshold")
    if isinstance(threshold, str) and threshold not in ("", "validation"):
        threshold = float(threshold)
    return metric_label(metric, threshold)


def _ci_name(row: pd.Series) -> str:
    """The printed interval is adjusted: it excludes 0 exactly when there is a verdict."""
    level = row.get("ci_level", math.nan)
    if level is None or not math.isfinite(float(level)):
        return "CI"
    return f"{100 * float(level):.1f}% {_adjusted(row)} CI"


def _effect_text(row: pd.Series, metric: str) -> str:
    effect = interval(row["effect"], row["ci_low"], row["ci_high"], 3, sign=True)
    return f"Δ {_label(row, metric)} {effect} ({_ci_name(row)})"


def _secondary_text(row: pd.Series, name: str) -> str:
    effect = interval(
        row[f"{name}_effect"], row[f"{name}_ci_low"], row[f"{name}_ci_high"], 3, sign=True
    )
    return f"Δ {metric_label(name)} {effect} (95% CI)"


def disagreement(row: pd.Series, metric: str) -> str | None:
    """A sentence when an arm's verdict and its effect on AUC or log loss point different
    ways (None when they agree, when there is no verdict, or without those columns)."""
    if row["verdict"] not in ("helps", "hurts"):
        return None
    better = row["verdict"] == "helps"
    label = _label(row, metric)
    for name in ("auc", "log_loss"):
        if name == metric or f"{name}_effect" not in row:
            continue
        effect = float(row[f"{name}_effect"])
        if not math.isfinite(effect) or effect == 0:
            continue
        improves = (effect > 0) == PRIMARY_METRICS[name].higher_is_better
        if improves == better:
            continue
        figure = _secondary_text(row, name)
        if name == "auc" and not better:
            return (
                f"{row['arm']} hurts {label} but ranks ALL cells above HEM cells better ({figure}): "
                "it changes calibration, not discrimination. Its predicted probabilities moved "
                "relative to the decision threshold; the cells are told apart at least as well."
            )
        if name == "auc":
            return (
                f"{row['arm']} helps {label} but ranks ALL cells above HEM cells worse ({figure}): "
                "the gain comes from where its probabilities fall relative to the threshold "
                "(calibration), not from telling the cells apart better (discrimination)."
            )
        verb = "helps" if better else "hurts"
        trust = "less" if better else "more"
        return (
            f"{row['arm']} {verb} {label} but its probabilities are {trust} trustworthy "
            f"({figure}, lower is better): the verdict and the calibration point different ways."
        )
    return None


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
    label = _label(verdicts, metric)
    distinct = sorted(set(verdicts["method"].astype(str))) if len(verdicts) else []
    methods = distinct[0] if len(distinct) == 1 else "each comparison's method is in the table"
    rule = _multiplicity(verdicts)
    return (
        f"Rule: the primary metric is test {label}. An arm helps (hurts) when its difference from its "
        f"matched reference is better (worse) on that metric with a {ADJUSTMENTS[rule]} p of at most "
        f"{alpha}; otherwise there is no detectable difference. The family is the {len(verdicts)} "
        f"comparison(s) listed here (verdicts.csv). {CORRECTIONS[rule]} applies to exactly these "
        "p-values. Differences are arm minus "
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
                f"{_adjusted(row)} {_p_phrase(row['p_adjusted'])}, {row['n_seeds']} seed(s) x "
                f"{row['n_subjects']} test subjects."
            )
            if (sentence := disagreement(row, metric)) is not None:
                lines.append(sentence)
    if not verdicts.empty and not (verdicts["verdict"] == "helps").any():
        lines.append("No augmentation was shown to help.")
    for _, row in verdicts[verdicts["verdict"] == "no detectable difference"].iterrows():
        lines.append(
            f"{row['arm']}: no detectable difference from {row['reference']} "
            f"({_effect_text(row, metric)}, {_adjusted(row)} {_p_phrase(row['p_adjusted'])}); this study "
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
            _ci_name(row).removesuffix(f" {_adjusted(row)} CI"),
            p_value(row["p_adjusted"]),
            _detectable(row),
            f"{row['n_seeds']} x {row['n_subjects']}",
            str(row["method"]),
        ]
        for _, row in verdicts.iterrows()
    ]
    adjusted = _adjusted(verdicts)
    header = [
        "Arm",
        "Reference",
        "Verdict",
        f"Δ {_label(verdicts, metric)} [{adjusted} CI]",
        "CI level",
        f"{adjusted[0].upper()}{adjusted[1:]} p",
        "Detectable (80% power)",
        "Seeds x subjects",
        "Method",
    ]
    step = "max-t step" if _multiplicity(verdicts) == "maxt" else "Holm step"
    notes = [
        f"Each interval is at the level that matches its {adjusted} test, so it excludes 0 exactly "
        "when there is a verdict; unadjusted 95% intervals and raw p-values are in verdicts.csv "
        "(ci_low_unadjusted, ci_high_unadjusted, p_value). Detectable: the difference this study "
        f"would find with 80% power at the strictest {step}."
    ]
    if "auc_effect" in verdicts:
        disagreements = [d for _, row in verdicts.iterrows() if (d := disagreement(row, metric))]
        notes += disagreements
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
