"""The report's figures as a declarative list: name, title, caption, and a render function
of the precomputed numbers (`analysis.FigureData`). A figure whose data are missing is shown
as a visible 'not available' box with the reason."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from leukaug.core.errors import StorageError
from leukaug.report import figures
from leukaug.report.html import FigureEntry
from leukaug.stats.analysis import FigureData

log = logging.getLogger(__name__)

POOLED = " Arms with several seeds use the seed-averaged probabilities."


@dataclass(frozen=True)
class FigureSpec:
    """One report figure; `missing` says why it cannot be drawn (None when it can)."""

    name: str
    title: str
    caption: str
    render: Callable[[FigureData], Figure]
    missing: Callable[[FigureData], str | None]
    pooled: bool = True  # the caption mentions seed-averaged probabilities with several seeds


def _no_test(data: FigureData) -> str | None:
    return None if data.units else "no arm has test predictions"


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

FIGURES = [
    FigureSpec(
        "training_curves",
        "Figure 3. Training curves",
        "Train and validation loss and accuracy per epoch for each arm (the paper's Figure 3); seeds "
        "overlaid. Each arm uses the checkpoint of its lowest validation loss (Table 7).",
        lambda d: figures.training_curves(d.histories),
        lambda d: None if d.histories else "no history.csv",
        pooled=False,
    ),
    FigureSpec(
        "confusion_matrices",
        "Figure 4. Confusion matrices",
        "Test confusion matrices at threshold 0.5: counts and fraction of each true class (the "
        "paper's Figures 4 and 9).",
        lambda d: figures.confusion_matrices(d.units),
        _no_test,
    ),
    FigureSpec(
        "accuracy_ci",
        "Figure 5. Test accuracy with 95% CIs",
        "Test accuracy per arm with its image-level 95% CI; the grey band is the reference's CI (the "
        "paper's Figures 5 and 7). Overlapping intervals are not a test: see the primary analysis.",
        lambda d: figures.accuracy_with_ci(d.accuracy, d.reference),
        _no_test,
    ),
    FigureSpec(
        "roc_curves",
        "Figure 6. ROC curves",
        "Test ROC curves of all arms with AUC and DeLong 95% CI in the legend (the paper's Figures "
        "6 and 8).",
        lambda d: figures.roc_curves(d.units, d.aucs),
        _no_test,
    ),
    FigureSpec(
        "accuracy_vs_threshold",
        "Figure 7. Accuracy against threshold",
        "Test accuracy for thresholds 0 to 1 in steps of 0.01 (the paper's Figure 10, which used "
        "steps of 0.1); markers show the threshold chosen on validation (Youden's J). Read it to "
        "understand the models, not to choose a threshold on test.",
        lambda d: figures.accuracy_vs_threshold(d.sweeps, d.operating),
        _no_test,
    ),
    FigureSpec(
        "reliability",
        "Figure 8. Reliability diagram",
        "Observed fraction of ALL images against mean predicted P(ALL) in 10 bins, test split; the "
        "diagonal is perfect calibration.",
        lambda d: figures.reliability_diagram(d.units, d.eces),
        _no_test,
    ),
    FigureSpec(
        "forest",
        "Figure 9. Secondary differences from the matched reference",
        "Each arm minus its matched reference on test, with 95% CI and Holm-adjusted p of the "
        "secondary tests (accuracy: subject-bootstrap CI, McNemar p; balanced accuracy: subject "
        "bootstrap; AUC: DeLong). Conditional on these trained models and these cells; McNemar and "
        "DeLong treat cells as independent. The verdicts come from the primary analysis.",
        lambda d: figures.forest_plot(d.forest, d.reference),
        lambda d: None if not d.forest.empty else "no arm to compare",
    ),
    FigureSpec(
        "subject_accuracy",
        "Figure 10. Per-subject accuracy",
        "Fraction of each test subject's cells classified correctly (threshold 0.5), per arm.",
        lambda d: figures.subject_accuracy(d.subjects),
        _no_test,
    ),
]


def _study_figure(key: str, title: str, caption: str, directory: Path) -> FigureEntry:
    path = directory / f"{key}.png"
    return FigureEntry(
        key,
        title,
        caption,
        path.read_bytes() if path.is_file() else None,
        "not available (the study did not render it)",
        display_scale=1.0,  # rendered by the study at screen resolution
    )


def render_figures(data: FigureData, directory: Path) -> tuple[list[FigureEntry], dict[str, Path]]:
    """Figures 1-2 (rendered by the study) and every `FIGURES` entry (PNG + SVG); returns the
    page entries and the written paths."""
    entries = [
        _study_figure(key, title, caption, directory)
        for key, (title, caption) in STUDY_FIGURES.items()
    ]
    written: dict[str, Path] = {}
    for spec in FIGURES:
        reason = spec.missing(data)
        if reason is not None:
            entries.append(
                FigureEntry(spec.name, spec.title, "", None, f"not available ({reason})")
            )
            continue
        try:
            paths = figures.save(spec.render(data), directory, spec.name)
        except StorageError:
            raise  # a full disk stops the report (rerun `leukaug report` after freeing space)
        except Exception as error:  # a figure is an extra: the report goes on without it
            log.warning("Figure %s failed: %s: %s", spec.name, type(error).__name__, error)
            reason = f"rendering failed: {type(error).__name__}: {error}"
            entries.append(
                FigureEntry(spec.name, spec.title, "", None, f"not available ({reason})")
            )
            continue
        written.update({f"figure_{spec.name}_{kind}": path for kind, path in paths.items()})
        caption = spec.caption + (POOLED if spec.pooled and data.multi_seed else "")
        entries.append(
            FigureEntry(
                spec.name,
                spec.title,
                caption + f" Files: figures/{spec.name}.png, figures/{spec.name}.svg.",
                paths["png"].read_bytes(),
            )
        )
    return entries, written
