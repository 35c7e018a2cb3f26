"""`build_report`: study folder -> metrics.csv, comparisons.csv, verdicts.csv, figures/,
report.html, summary.md."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import warnings
from pathlib import Path

import pandas as pd

from leukaug.core import atomic
from leukaug.core.errors import ConfigError
from leukaug.core.layout import StudyFolder
from leukaug.report.background import background_notes, background_summary
from leukaug.report.baseline_note import baseline_sentence
from leukaug.report.cams import cam_figures, cam_notes, cam_summary, cam_table
from leukaug.report.figure_specs import render_figures
from leukaug.report.folds_report import METHOD as CV_METHOD
from leukaug.report.folds_report import fold_table
from leukaug.report.html import ReportContent, render_html
from leukaug.report.markdown import render_markdown
from leukaug.report.tables import (
    comparisons_display_table,
    extended_table,
    operating_table,
    paper_table,
    seed_table,
    splits_table,
)
from leukaug.report.tables import training_table as training_display
from leukaug.report.verdict_text import family_notes, headline, verdict_table
from leukaug.stats.analysis import (
    COMPARISON_SPLIT,
    comparisons_table,
    figure_data,
    metrics_table,
    seed_summary,
    training_table,
)
from leukaug.stats.classical import DegenerateDataWarning
from leukaug.stats.cross_validation import fold_metrics, is_cross_validated, pool_folds
from leukaug.stats.family import primary_metric, primary_verdicts
from leukaug.stats.pairs import ReferencePlan, plan_references
from leukaug.stats.study_results import Study, load_study_results

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
CI_NAMES = {
    "wilson": "Wilson score interval",
    "wald": "Wald interval, acc +/- 1.96 SE (the seed paper's)",
}
METHODS = [
    "Metrics use P(ALL) with ALL (leukemic) = 1 as the positive class; an image is called ALL when P(ALL) >= 0.5 "
    "unless stated (one rule everywhere: leukaug.stats.metrics.predicted_all).",
    "Primary analysis (the verdicts; verdicts.csv): each arm is compared with its matched reference, the arm that "
    "differs from it only in its augmentations, on the study's primary metric. The comparison is paired by seed and "
    "joined by image_id, and its inference covers both training runs (seeds) and test subjects (leukaug.stats; "
    "see docs/statistics.md). Each row's (arm's and reference's) own training-run variance is moderated toward the "
    "family's; a step-down max-t correction that uses the correlation the shared reference induces (Holm's in "
    "older tables; verdicts.csv `multiplicity`) is applied to exactly these primary p-values, one per tested arm: "
    "that family, and only it, decides the verdicts. Accuracy-type primary metrics use each run's operating "
    "threshold chosen on validation unless the study fixes one.",
    "Secondary analyses (comparisons.csv, Table 6, Figure 9): McNemar's exact test on correctness, DeLong's test of "
    "correlated AUCs, and a subject bootstrap, each arm against its matched reference per seed and on seed-averaged "
    "probabilities. They are conditional on these trained models and these cells, and McNemar and DeLong treat cells "
    "as independent. Their Holm correction runs within each level, test and metric; they decide nothing.",
    "Single-arm intervals: accuracy by the {ci}, AUC by DeLong's variance (Sun & Xu's fast algorithm); both treat "
    "cells as independent. Beside them (Table 2), a 95% cluster-bootstrap interval over test subjects (within class "
    "strata): the interval for new patients.",
    "The operating threshold is chosen on the validation split by Youden's J and then applied to test; it is never "
    "chosen on test.",
    '"Epochs" = N means the checkpoint with the lowest validation loss within N epochs (Table 7); the validation '
    "loss is the loss training optimises (class-weighted when the arm weights its classes). Choose an epoch count "
    "on validation, never on test results.",
    "ECE: expected calibration error over 10 equal-width probability bins. Weighted F1 is the C-NMC 2019 challenge "
    "metric.",
]


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


def _baseline_lines(study: Study, summary: pd.DataFrame, metric: str) -> list[str]:
    """The answer box's comparison of the best CNN arm with the features baseline, if any."""
    sentence = baseline_sentence(study, summary, metric)
    return [] if sentence is None else [sentence]


def _notes(metrics: pd.DataFrame, plan: ReferencePlan) -> list[str]:
    notes = family_notes(plan)
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
                f"{label} predicts ALL for every test image (as the paper's InceptionV3 did): its accuracy is "
                "just the share of ALL images."
            )
    for _, row in metrics[metrics["auc"].isna()].iterrows():
        notes.append(
            f"The {row['split']} split of {row['name']!r} (arm {row['arm_id']}) holds one class only: AUC and "
            "balanced accuracy are undefined (dash)."
        )
    return notes


def optional_failure_notes(study: Study) -> list[str]:
    """One note per arm whose optional steps (Grad-CAMs, tracking) failed (its arm.json's
    `optional_failures`): the arm's results are complete and in the report."""
    notes = []
    for arm in study.arms:
        failures = arm.info.get("optional_failures") or []
        if failures:
            listed = "; ".join(f"{f.get('step')}: {f.get('error')}" for f in failures)
            notes.append(
                f"Arm {arm.arm_id}: optional step(s) failed ({listed}). Its results are "
                "complete and included; only these extras are missing (see its arm.json)."
            )
    return notes


def build_report(
    study_dir: str | Path,
    baseline: str | None = None,
    seed: int = 0,
    *,
    n_resamples: int = 2000,
    ci_method: str = "wilson",
) -> dict[str, Path]:
    """Analyse every completed arm of a study and write the report files; return their paths.

    `baseline` overrides the study file's reference augmentation (an arm name is read as its
    augmentation); `seed` seeds every bootstrap; `ci_method` is "wilson" (default) or "wald".
    """
    if ci_method not in CI_NAMES:
        raise ConfigError(f"Unknown CI method {ci_method!r}; valid: {', '.join(CI_NAMES)}.")
    directory = Path(study_dir)
    trained = load_study_results(directory)  # every arm folder (with cv_folds: one per fold)
    pooled = pool_folds(trained) if is_cross_validated(trained) else None
    study = pooled.study if pooled is not None else trained  # what the statistics analyse
    plan = plan_references(study, baseline)
    metric = primary_metric(study)
    order = {name: k for k, name in enumerate(study.names())}
    first = plan.used_references or plan.references
    study.arms.sort(key=lambda arm: (arm.name not in first, order[arm.name], arm.seed, arm.arm_id))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)  # surfaced as notes instead
        metrics = metrics_table(study, ci_method, n_resamples=n_resamples, rng_seed=seed)
    summary = seed_summary(metrics)
    verdicts = primary_verdicts(study, plan, metric, rng_seed=seed)
    comparisons = comparisons_table(study, plan, seed=seed, n_resamples=n_resamples)
    figure_entries, written = render_figures(
        figure_data(study, plan, comparisons, ci_method), directory / "figures"
    )
    tables = [
        paper_table(metrics, COMPARISON_SPLIT, plan.references),
        extended_table(metrics, COMPARISON_SPLIT),
        operating_table(metrics, COMPARISON_SPLIT),
        splits_table(metrics),
    ]
    if (summary["n_seeds"] > 1).any():
        tables.append(seed_table(summary, COMPARISON_SPLIT))
    if not comparisons.empty:
        tables.append(comparisons_display_table(comparisons))
    folds = fold_metrics(pooled.out_of_fold, metric) if pooled is not None else None
    if folds is not None and (table := fold_table(folds, metric)) is not None:
        tables.append(table)
    training = training_table(trained)
    if not training.empty:
        tables.append(training_display(training))
    cams = cam_summary(trained)  # where the CNN arms look (Grad-CAM; report/cams.py)
    background = background_summary(trained)  # shortcuts (report/background.py)
    if (where := cam_table(cams, background)) is not None:
        tables.append(where)
    content = ReportContent(
        title=_title(study),
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        synthetic=study.synthetic,
        headline=headline(verdicts, plan, metric) + _baseline_lines(study, summary, metric),
        verdict_table=verdict_table(verdicts, metric),
        notes=_notes(metrics, plan)
        + cam_notes(cams, background)
        + background_notes(background)
        + optional_failure_notes(study),
        tables=tables,
        figures=figure_entries + cam_figures(trained),
        dataset=study.dataset,
        study_toml=study.study_toml,
        specs={
            arm.arm_id: {
                "name": arm.name,
                "seed": arm.seed,
                "config_hash": arm.info.get("config_hash"),
                "spec": arm.spec,
            }
            for arm in trained.arms
        },
        versions=_versions(trained),
        failed=study.failed,
        incomplete=study.incomplete,
        methods=[line.replace("{ci}", CI_NAMES[ci_method]) for line in METHODS]
        + ([CV_METHOD.format(k=pooled.folds)] if pooled is not None else []),
    )
    layout = StudyFolder(directory)
    paths = {
        "report": layout.report_html,
        "summary": layout.summary_md,
        "metrics": layout.metrics_csv,
        "comparisons": layout.comparisons_csv,
        "verdicts": layout.verdicts_csv,
        "seed_metrics": layout.metrics_by_name_csv,
    }
    atomic.write_csv(paths["metrics"], metrics)
    atomic.write_csv(paths["comparisons"], comparisons)
    atomic.write_csv(paths["verdicts"], verdicts)
    atomic.write_csv(paths["seed_metrics"], summary)
    if pooled is not None and folds is not None:
        paths["out_of_fold"] = layout.out_of_fold_csv
        paths["fold_metrics"] = layout.fold_metrics_csv
        atomic.write_csv(paths["out_of_fold"], pooled.out_of_fold)
        atomic.write_csv(paths["fold_metrics"], folds)
    atomic.write_text(paths["report"], render_html(content))
    atomic.write_text(paths["summary"], render_markdown(content, tables[:2]))
    return {**paths, **written}
