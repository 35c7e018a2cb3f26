"""`build_report`: study folder -> metrics.csv, comparisons.csv, figures/, report.html, summary.md."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from leukaug import atomic
from leukaug.errors import ConfigError
from leukaug.metrics import (
    DEFAULT_THRESHOLD,
    accuracy_ci,
    expected_calibration_error,
    subject_table,
    threshold_sweep,
)
from leukaug.report import figures
from leukaug.report.analysis import (
    COMPARISON_SPLIT,
    SIGNIFICANCE,
    Verdict,
    comparisons_table,
    metrics_table,
    operating_threshold,
    resolve_baseline,
    seed_averaged,
    seed_summary,
    verdicts,
)
from leukaug.report.html import FigureEntry, ReportContent, render_html
from leukaug.report.load import Study, load_study
from leukaug.report.markdown import render_markdown
from leukaug.report.tables import (
    Table,
    extended_table,
    interval,
    operating_table,
    p_value,
    paper_table,
    seed_table,
    splits_table,
)
from leukaug.report.tables import comparisons_table as comparisons_display
from leukaug.stats import DegenerateDataWarning, delong_ci

PACKAGES = (
    "leukaug",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "statsmodels",
    "matplotlib",
    "torch",
    "torchvision",
    "kornia",
)
STUDY_FIGURES = {
    "sample_cells": (
        "Figure 1. Sample cells",
        "ALL (leukemic) and HEM (healthy) cells from the data set (the paper's Figure 1).",
    ),
    "augmented_cells": (
        "Figure 2. Augmented cells",
        "The study's augmentations applied to sample cells (the paper's Figure 2).",
    ),
}


def _versions(study: Study) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    trained = sorted(
        {f"{k} {v}" for arm in study.arms for k, v in (arm.info.get("versions") or {}).items()}
    )
    if trained:
        versions["arms trained with"] = ", ".join(trained)
    return versions


def _title(study: Study) -> str:
    name = (
        study.config.get("name")
        or study.config.get("study", {}).get("name")
        or study.directory.resolve().name
    )
    return f"leukaug study report: {name}"


def _effect(verdict: Verdict) -> str:
    acc = interval(verdict.accuracy_difference, *verdict.accuracy_ci, 3, sign=True)
    auc = interval(verdict.auc_difference, *verdict.auc_ci, 3, sign=True)
    return (
        f"accuracy {acc} (Holm-adjusted McNemar {_p_phrase(verdict.mcnemar_p_adjusted)}), "
        f"AUC {auc} (Holm-adjusted DeLong {_p_phrase(verdict.delong_p_adjusted)})"
    )


def _p_phrase(value: float) -> str:
    text = p_value(value)
    return f"p {text[0]} {text[1:]}" if text.startswith("<") else f"p = {text}"


def headline(found: list[Verdict], baseline: str, comparisons: pd.DataFrame) -> list[str]:
    """The report's opening sentences: which arms beat the baseline, by how much, how sure."""
    if comparisons.empty:
        return [
            f"Only the baseline arm {baseline!r} completed: there is nothing to compare it with."
        ]
    seed_level = (comparisons["level"] == "seed_mean").any()
    first = comparisons.iloc[0]
    lines = [
        f"Compared with the baseline {baseline!r} on {first['n_images']} test images from {first['n_subjects']} subjects"
        + (" (probabilities averaged over seeds):" if seed_level else ":")
    ]
    better = [v for v in found if v.verdict == "better"]
    worse = [v for v in found if v.verdict == "worse"]
    unclear = [v for v in found if v.verdict == "no clear difference"]
    if better:
        lines += [f"{v.arm} beats the baseline: {_effect(v)}." for v in better]
    else:
        lines.append("No augmentation beat the baseline with confidence.")
    lines += [f"{v.arm} is worse than the baseline: {_effect(v)}." for v in worse]
    lines += [f"{v.arm}: no clear difference; {_effect(v)}." for v in unclear]
    lines.append(
        f"Criterion: an arm beats the baseline when its test accuracy (threshold 0.5) is higher, Holm-adjusted McNemar "
        f"p < {SIGNIFICANCE}, and the 95% subject-bootstrap CI of the difference excludes 0. Differences are arm minus "
        "baseline, with 95% CIs in brackets."
    )
    return lines


def verdict_table(found: list[Verdict]) -> Table | None:
    if not found:
        return None
    rows = [
        [
            v.arm,
            v.verdict,
            interval(v.accuracy_difference, *v.accuracy_ci, 4, sign=True),
            p_value(v.mcnemar_p_adjusted),
            interval(v.balanced_accuracy_difference, *v.balanced_accuracy_ci, 4, sign=True),
            interval(v.auc_difference, *v.auc_ci, 4, sign=True),
            p_value(v.delong_p_adjusted),
        ]
        for v in found
    ]
    header = [
        "Arm",
        "Verdict",
        "Δ accuracy [95% CI]",
        "Holm p (McNemar)",
        "Δ balanced acc. [95% CI]",
        "Δ AUC [95% CI]",
        "Holm p (DeLong)",
    ]
    return Table(
        "verdicts", "Each arm against the baseline (test split).", header, rows, text_columns=2
    )


def _notes(metrics: pd.DataFrame, comparisons: pd.DataFrame) -> list[str]:
    notes = []
    without_test = sorted(
        set(metrics["arm_id"]) - set(metrics.loc[metrics["split"] == COMPARISON_SPLIT, "arm_id"])
    )
    if without_test:
        notes.append(f"No test predictions, so not compared: {', '.join(without_test)}.")
    test = metrics[metrics["split"] == COMPARISON_SPLIT]
    for _, row in test.iterrows():
        label = f"{row['name']!r} (arm {row['arm_id']})"
        if row["precision_undefined"]:
            notes.append(
                f"{label} predicts HEM for every test image: precision is undefined and shown as a dash."
            )
        elif row["predicts_one_class"]:
            notes.append(
                f"{label} predicts ALL for every test image (as the paper's InceptionV3 did): its accuracy is just the share of ALL images."
            )
    for _, row in metrics[metrics["auc"].isna()].iterrows():
        notes.append(
            f"The {row['split']} split of {row['name']!r} (arm {row['arm_id']}) holds one class only: AUC and balanced accuracy are undefined (dash)."
        )
    if not comparisons.empty and (comparisons["level"] == "seed_mean").any():
        notes.append(
            "Several seeds per arm: the answer uses probabilities averaged over seeds (joined by image_id); per-seed comparisons are in Table 6."
        )
    return notes


CI_NAMES = {
    "wilson": "Wilson score interval",
    "wald": "Wald interval, acc +/- 1.96 SE (the seed paper's)",
}
METHODS = [
    "Metrics use P(ALL) with ALL (leukemic) = 1 as the positive class; an image is called ALL when P(ALL) >= 0.5 unless stated.",
    "Accuracy CIs: {ci} (statsmodels proportion_confint). AUC CIs: DeLong's variance, computed with Sun & Xu's (2014) fast midrank algorithm.",
    "The operating threshold is chosen on the validation split by Youden's J and then applied to test; it is never chosen on test.",
    "Arms are compared with the baseline on the same test images joined by image_id: McNemar's exact test on correctness, DeLong's test of correlated AUCs, "
    "and a paired bootstrap of accuracy, balanced accuracy and AUC differences that resamples subjects (within class), not images, since cells of one patient are correlated.",
    "Holm's step-down correction controls the family-wise error across all arms of the study, within each test and metric.",
    "ECE: expected calibration error over 10 equal-width probability bins. Weighted F1 is the C-NMC 2019 challenge metric.",
]


def _read_png(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _figures(
    study: Study, baseline: str, comparisons: pd.DataFrame, directory: Path, ci_method: str
) -> tuple[list[FigureEntry], dict[str, Path]]:
    """Render every figure (PNG + SVG) and return the page entries and written paths."""
    names = [baseline, *[n for n in study.names() if n != baseline]]
    predictions = {name: seed_averaged(study, name) for name in names}
    test = {name: frame[frame["split"] == COMPARISON_SPLIT] for name, frame in predictions.items()}
    test = {name: frame for name, frame in test.items() if not frame.empty}
    units = {
        name: (frame["label"].to_numpy(), frame["prob"].to_numpy()) for name, frame in test.items()
    }
    multi_seed = any(len(study.arms_named(n)) > 1 for n in names)
    pooled = " Arms with several seeds use the seed-averaged probabilities." if multi_seed else ""
    written: dict[str, Path] = {}
    entries = [
        FigureEntry(
            key,
            title,
            caption,
            _read_png(directory / f"{key}.png"),
            "not available (the study did not render it)",
            display_scale=1.0,  # rendered by the study at screen resolution
        )
        for key, (title, caption) in STUDY_FIGURES.items()
    ]

    def add(stem: str, title: str, caption: str, figure: Any) -> None:
        paths = figures.save(figure, directory, stem)
        written.update({f"figure_{stem}_{kind}": path for kind, path in paths.items()})
        entries.append(
            FigureEntry(
                stem,
                title,
                caption + f" Files: figures/{stem}.png, figures/{stem}.svg.",
                paths["png"].read_bytes(),
            )
        )

    histories = {
        name: [a.history for a in study.arms_named(name) if a.history is not None] for name in names
    }
    histories = {name: h for name, h in histories.items() if h}
    if histories:
        add(
            "training_curves",
            "Figure 3. Training curves",
            "Train and validation loss and accuracy per epoch for each arm (the paper's Figure 3); seeds overlaid.",
            figures.training_curves(histories),
        )
    else:
        entries.append(
            FigureEntry(
                "training_curves",
                "Figure 3. Training curves",
                "",
                None,
                "not available (no history.csv)",
            )
        )
    if not units:
        entries.append(
            FigureEntry(
                "test_figures",
                "Figures 4 to 10",
                "",
                None,
                "not available (no arm has test predictions)",
            )
        )
        return entries, written
    add(
        "confusion_matrices",
        "Figure 4. Confusion matrices",
        "Test confusion matrices at threshold 0.5: counts and fraction of each true class (the paper's Figures 4 and 9)."
        + pooled,
        figures.confusion_matrices(units),
    )
    accuracy_rows = []
    for name, (y, prob) in units.items():
        correct = int(((prob >= DEFAULT_THRESHOLD) == (y == 1)).sum())
        low, high = accuracy_ci(correct, len(y), method=ci_method)
        accuracy_rows.append(
            {
                "name": name,
                "accuracy": correct / len(y),
                "accuracy_ci_low": low,
                "accuracy_ci_high": high,
            }
        )
    accuracy_table = pd.DataFrame(accuracy_rows)
    add(
        "accuracy_ci",
        "Figure 5. Test accuracy with 95% CIs",
        f"Test accuracy per arm with its {ci_method.capitalize()} 95% CI; the grey band is the baseline's CI (the paper's Figures 5 and 7). Overlapping intervals are not a test: see the comparisons."
        + pooled,
        figures.accuracy_with_ci(accuracy_table, baseline),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        aucs = {
            name: (ci.auc, ci.low, ci.high)
            for name, (y, prob) in units.items()
            for ci in [delong_ci(y, prob)]
        }
    add(
        "roc_curves",
        "Figure 6. ROC curves",
        "Test ROC curves of all arms with AUC and DeLong 95% CI in the legend (the paper's Figures 6 and 8)."
        + pooled,
        figures.roc_curves(units, aucs),
    )
    sweeps = {name: threshold_sweep(y, prob) for name, (y, prob) in units.items()}
    operating = {name: operating_threshold(predictions[name]) for name in units}
    add(
        "accuracy_vs_threshold",
        "Figure 7. Accuracy against threshold",
        "Test accuracy for thresholds 0 to 1 in steps of 0.01 (the paper's Figure 10, which used steps of 0.1); markers show the threshold chosen on validation (Youden's J)."
        + pooled,
        figures.accuracy_vs_threshold(sweeps, operating),
    )
    eces = {name: expected_calibration_error(y, prob) for name, (y, prob) in units.items()}
    add(
        "reliability",
        "Figure 8. Reliability diagram",
        "Observed fraction of ALL images against mean predicted P(ALL) in 10 bins, test split; the diagonal is perfect calibration."
        + pooled,
        figures.reliability_diagram(units, eces),
    )
    forest_rows = comparisons[comparisons["level"] == ("seed_mean" if multi_seed else "arm")]
    if forest_rows.empty:
        entries.append(
            FigureEntry(
                "forest",
                "Figure 9. Differences from the baseline",
                "",
                None,
                "not available (no arm to compare)",
            )
        )
    else:
        add(
            "forest",
            "Figure 9. Differences from the baseline",
            "Each arm minus the baseline on test, with 95% CI and Holm-adjusted p (accuracy: subject-bootstrap CI, McNemar p; balanced accuracy: subject bootstrap; AUC: DeLong)."
            + pooled,
            figures.forest_plot(forest_rows, baseline),
        )
    subjects = {name: subject_table(frame) for name, frame in test.items()}
    add(
        "subject_accuracy",
        "Figure 10. Per-subject accuracy",
        "Fraction of each test subject's cells classified correctly (threshold 0.5), per arm."
        + pooled,
        figures.subject_accuracy(subjects),
    )
    return entries, written


def build_report(
    study_dir: str | Path,
    baseline: str | None = None,
    seed: int = 0,
    *,
    n_resamples: int = 2000,
    ci_method: str = "wilson",
) -> dict[str, Path]:
    """Analyse every completed arm of a study and write the report files; return their paths.

    `seed` seeds the subject bootstrap; `ci_method` is "wilson" (default) or "wald".
    """
    if ci_method not in CI_NAMES:
        raise ConfigError(f"Unknown CI method {ci_method!r}; valid: {', '.join(CI_NAMES)}.")
    directory = Path(study_dir)
    study = load_study(directory)
    baseline = resolve_baseline(study, baseline)
    order = {name: k for k, name in enumerate(study.names())}
    study.arms.sort(key=lambda arm: (arm.name != baseline, order[arm.name], arm.seed, arm.arm_id))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)  # surfaced as notes instead
        metrics = metrics_table(study, ci_method)
    summary = seed_summary(metrics)
    comparisons = comparisons_table(study, baseline, seed=seed, n_resamples=n_resamples)
    found = verdicts(comparisons)
    figure_dir = directory / "figures"
    figure_entries, written = _figures(study, baseline, comparisons, figure_dir, ci_method)

    tables = [
        paper_table(metrics, COMPARISON_SPLIT, baseline),
        extended_table(metrics, COMPARISON_SPLIT),
        operating_table(metrics, COMPARISON_SPLIT),
        splits_table(metrics),
    ]
    if (summary["n_seeds"] > 1).any():
        tables.append(seed_table(summary, COMPARISON_SPLIT))
    if not comparisons.empty:
        tables.append(comparisons_display(comparisons))
    content = ReportContent(
        title=_title(study),
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        synthetic=study.synthetic,
        headline=headline(found, baseline, comparisons),
        verdict_table=verdict_table(found),
        notes=_notes(metrics, comparisons),
        tables=tables,
        figures=figure_entries,
        dataset=study.dataset,
        study_toml=study.study_toml,
        specs={
            arm.arm_id: {
                "name": arm.name,
                "seed": arm.seed,
                "config_hash": arm.info.get("config_hash"),
                "spec": arm.spec,
            }
            for arm in study.arms
        },
        versions=_versions(study),
        failed=study.failed,
        incomplete=study.incomplete,
        methods=[line.replace("{ci}", CI_NAMES[ci_method]) for line in METHODS],
    )
    paths = {
        "report": directory / "report.html",
        "summary": directory / "summary.md",
        "metrics": directory / "metrics.csv",
        "comparisons": directory / "comparisons.csv",
        "seed_metrics": directory / "metrics_by_name.csv",
    }
    atomic.write_csv(paths["metrics"], metrics)
    atomic.write_csv(paths["comparisons"], comparisons)
    atomic.write_csv(paths["seed_metrics"], summary)
    atomic.write_text(paths["report"], render_html(content))
    atomic.write_text(paths["summary"], render_markdown(content, tables[:2]))
    return {**paths, **written}
