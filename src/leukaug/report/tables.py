"""Report tables as plain rows of formatted strings, shared by the HTML and Markdown writers.

Undefined values (NaN, None) print as an en dash, as the seed paper printed undefined precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

DASH = "–"


@dataclass
class Table:
    """A captioned table of already-formatted cells; `notes` print under it."""

    key: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    text_columns: int = 1  # leading columns of text (left-aligned); the rest are numbers


def number(value: Any, digits: int = 4) -> str:
    """Fixed-point number, or a dash when undefined."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    return f"{float(value):.{digits}f}"


def signed(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    return f"{float(value):+.{digits}f}"


def interval(value: Any, low: Any, high: Any, digits: int = 4, sign: bool = False) -> str:
    """'0.6529 [0.6310, 0.6742]' or a dash."""
    show = signed if sign else number
    if number(value) == DASH:
        return DASH
    return f"{show(value, digits)} [{show(low, digits)}, {show(high, digits)}]"


def _bracket(low: Any, high: Any, digits: int = 3) -> str:
    """'[0.631, 0.674]' or a dash."""
    if number(low) == DASH or number(high) == DASH:
        return DASH
    return f"[{number(low, digits)}, {number(high, digits)}]"


def p_value(value: Any) -> str:
    if number(value) == DASH:
        return DASH
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def _arm_label(row: Any, multi_seed: bool) -> str:
    return f"{row['name']} (seed {row['seed']})" if multi_seed else str(row["name"])


def paper_table(metrics: pd.DataFrame, split: str, references: Sequence[str] = ()) -> Table:
    """Table 1/2 of the seed paper: loss, accuracy with 95% CI, precision; one row per arm."""
    rows_frame = metrics[metrics["split"] == split]
    multi_seed = rows_frame.duplicated("name").any()
    rows, notes = [], []
    for _, row in rows_frame.iterrows():
        precision = number(row["precision"])
        if row["precision_undefined"]:
            precision += "*"
        label = _arm_label(row, multi_seed)
        if row["name"] in references:
            label += " (reference)"
        rows.append(
            [
                label,
                number(row["loss"]),
                interval(row["accuracy"], row["accuracy_ci_low"], row["accuracy_ci_high"]),
                precision,
            ]
        )
    if rows_frame["precision_undefined"].any():
        notes.append(
            "* Precision undefined: the model predicted no image as ALL (it predicts one class only)."
        )
    method = rows_frame["accuracy_ci_method"].iloc[0] if len(rows_frame) else "wilson"
    notes.append(
        f"Accuracy at threshold 0.5 with its 95% {method.capitalize()} interval, which treats cells as "
        "independent; the subject-level interval is in Table 2. Loss = binary cross-entropy. "
        "A reproduction of the paper's format, not a test: the verdicts are in the primary analysis."
    )
    return Table(
        "table1",
        f"Table 1. {split.capitalize()} loss, accuracy and precision per arm (reproduction of the seed paper's Table 1 format).",
        ["Arm", "Loss", "Accuracy [95% CI]", "Precision"],
        rows,
        notes,
    )


EXTENDED_COLUMNS = [
    ("Recall", "recall"),
    ("Specificity", "specificity"),
    ("F1", "f1"),
    ("Weighted F1", "weighted_f1"),
    ("Balanced acc.", "balanced_accuracy"),
    ("MCC", "mcc"),
    ("Brier", "brier"),
    ("ECE", "ece"),
    ("Subject diag. acc.", "subject_diagnosis_accuracy"),
]


def extended_table(metrics: pd.DataFrame, split: str) -> Table:
    """Every other metric of one split at threshold 0.5, with AUC and its DeLong CI."""
    rows_frame = metrics[metrics["split"] == split]
    multi_seed = rows_frame.duplicated("name").any()
    rows = []
    for _, row in rows_frame.iterrows():
        auc = interval(row["auc"], row["auc_ci_low"], row["auc_ci_high"], 3)
        subject_cis = [
            _bracket(row.get(f"{metric}_subject_ci_low"), row.get(f"{metric}_subject_ci_high"))
            for metric in ("accuracy", "auc")
        ]
        cells = [number(row[key], 3) for _, key in EXTENDED_COLUMNS]
        confusion = f"{row['tn']}/{row['fp']}/{row['fn']}/{row['tp']}"
        rows.append([_arm_label(row, multi_seed), auc, *subject_cis, *cells, confusion])
    notes = [
        "AUC with DeLong 95% CI (cells treated as independent). Subject CIs: 95% cluster-bootstrap "
        "intervals over test subjects (within class), the intervals for new patients. Weighted F1 is "
        "the C-NMC 2019 challenge metric. Subject diag. acc.: a subject is called ALL when the mean "
        "P(ALL) of its cells is at least 0.5. TN/FP/FN/TP: the confusion counts (ALL = positive). "
        "A dash marks an undefined value."
    ]
    header = [
        "Arm",
        "AUC [DeLong 95% CI]",
        "Accuracy subject CI",
        "AUC subject CI",
        *[title for title, _ in EXTENDED_COLUMNS],
        "TN/FP/FN/TP",
    ]
    return Table(
        "table2",
        f"Table 2. {split.capitalize()} metrics beyond the paper's, threshold 0.5.",
        header,
        rows,
        notes,
    )


def operating_table(metrics: pd.DataFrame, split: str) -> Table:
    """Metrics of one split at the threshold chosen on validation (Youden's J)."""
    rows_frame = metrics[metrics["split"] == split]
    multi_seed = rows_frame.duplicated("name").any()
    keys = [
        "op_accuracy",
        "op_balanced_accuracy",
        "op_precision",
        "op_recall",
        "op_specificity",
        "op_weighted_f1",
    ]
    rows = []
    for _, row in rows_frame.iterrows():
        threshold = row.get("operating_threshold", math.nan)
        rows.append(
            [
                _arm_label(row, multi_seed),
                number(threshold, 3),
                *[number(row.get(k, math.nan), 4) for k in keys],
            ]
        )
    return Table(
        "table3",
        f"Table 3. {split.capitalize()} metrics at the operating threshold chosen on the validation split (Youden's J), never on test.",
        [
            "Arm",
            "Threshold",
            "Accuracy",
            "Balanced acc.",
            "Precision",
            "Recall",
            "Specificity",
            "Weighted F1",
        ],
        rows,
        [
            "A dash means the arm has no validation predictions, so no operating threshold was chosen."
        ],
    )


def splits_table(metrics: pd.DataFrame) -> Table:
    """Loss, accuracy, balanced accuracy and AUC on every split (train/val/test)."""
    multi_seed = metrics.duplicated(["name", "split"]).any()
    rows = [
        [
            _arm_label(row, multi_seed),
            str(row["split"]),
            str(row["n"]),
            number(row["loss"]),
            number(row["accuracy"]),
            number(row["balanced_accuracy"]),
            number(row["auc"]),
        ]
        for _, row in metrics.iterrows()
    ]
    return Table(
        "table4",
        "Table 4. Every split (one row per arm and split, as metrics.csv).",
        ["Arm", "Split", "Images", "Loss", "Accuracy", "Balanced acc.", "AUC"],
        rows,
        text_columns=2,
    )


SEED_METRICS = [
    ("Accuracy", "accuracy"),
    ("Balanced acc.", "balanced_accuracy"),
    ("AUC", "auc"),
    ("Weighted F1", "weighted_f1"),
    ("Loss", "loss"),
]


def seed_table(summary: pd.DataFrame, split: str) -> Table:
    """Mean ± SD over seeds per arm name."""
    rows_frame = summary[summary["split"] == split]
    rows = []
    for _, row in rows_frame.iterrows():
        cells = [
            f"{number(row[f'{key}_mean'])} ± {number(row[f'{key}_sd'])}" for _, key in SEED_METRICS
        ]
        rows.append([str(row["name"]), str(row["n_seeds"]), *cells])
    return Table(
        "table5",
        f"Table 5. {split.capitalize()} metrics across seeds: mean ± SD per arm name.",
        ["Arm", "Seeds", *[title for title, _ in SEED_METRICS]],
        rows,
        ["SD needs at least two seeds; with one seed it shows as a dash."],
    )


TEST_NAMES = {
    "mcnemar_exact": "McNemar exact",
    "delong": "DeLong",
    "subject_bootstrap": "Subject bootstrap",
}
SECONDARY_CAVEAT = (
    "Secondary analyses, conditional on these trained models and these cells; McNemar and DeLong "
    "treat cells as independent. They decide no verdict (see the primary analysis)."
)


def comparisons_display_table(comparisons: pd.DataFrame) -> Table:
    """Every secondary comparison with the matched reference: effect, CI, p and Holm-adjusted p."""
    rows = []
    for _, row in comparisons.iterrows():
        level = "seed-averaged" if row["level"] == "seed_mean" else (row["arm_id"] or row["arm"])
        rows.append(
            [
                str(row["arm"]),
                str(level),
                str(row["reference_id"] or row["reference"]),
                TEST_NAMES.get(row["test"], str(row["test"])),
                str(row["metric"]),
                interval(row["effect"], row["ci_low"], row["ci_high"], 4, sign=True),
                number(row["statistic"], 3),
                p_value(row["p_value"]),
                p_value(row["p_adjusted"]),
            ]
        )
    return Table(
        "table6",
        "Table 6. Secondary paired comparisons with the matched reference on the test split "
        "(as comparisons.csv): conditional on these trained models and these cells; McNemar and "
        "DeLong treat cells as independent.",
        [
            "Arm",
            "Arm id / level",
            "Reference",
            "Test",
            "Metric",
            "Difference [95% CI]",
            "Statistic",
            "p",
            "Holm p",
        ],
        rows,
        [
            SECONDARY_CAVEAT,
            "Difference = arm minus reference on the same test images, joined by image_id. McNemar: exact binomial test on "
            "per-image correctness at threshold 0.5 (statistic = the smaller discordant count); its CI is the subject bootstrap's. "
            "DeLong: test of correlated AUCs (statistic z). Subject bootstrap: subjects resampled with replacement within class, "
            "one training run (or the seed-averaged probabilities) only. Holm's correction here runs within each level, test "
            "and metric across the arms listed.",
        ],
        text_columns=5,
    )


def training_table(training: pd.DataFrame) -> Table:
    """Per arm and seed: the epoch whose checkpoint was used (lowest validation loss)."""
    rows = [
        [
            f"{row['name']} (seed {row['seed']})",
            str(row["epochs_planned"]),
            str(row["epochs_run"]),
            DASH if pd.isna(row["best_epoch"]) else str(int(row["best_epoch"])),
            number(row["best_val_loss"]),
        ]
        for _, row in training.iterrows()
    ]
    return Table(
        "table7",
        "Table 7. Training: the checkpoint each arm uses is the epoch with the lowest validation loss.",
        ["Arm", "Epochs (N)", "Epochs run", "Best-validation epoch", "Validation loss"],
        rows,
        [
            '"Epochs" = N means the best-validation-loss checkpoint within N epochs; the validation loss is the '
            "class-weighted loss training optimises. Choose an epoch count on validation (this table), never "
            "on test results."
        ],
    )
