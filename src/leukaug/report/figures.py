"""The report's figures (matplotlib, Agg): each function returns a Figure; `save` writes PNG + SVG.

Styled for print: 9-10 pt text, line styles and markers that survive greyscale.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import offset_copy
from sklearn.metrics import confusion_matrix, roc_curve

from leukaug import CLASS_NAMES, LABEL_ALL, LABEL_HEM
from leukaug.core.atomic import save_figure
from leukaug.stats.metrics import predicted_all, reliability_table

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "leukaug",  # deterministic SVG ids
    "svg.fonttype": "none",
}
LINESTYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
WIDTH = 7.0  # inches: one text column of a printed page
LEGEND_DROP_PT = 34  # tick labels (8 pt) + axis label (9 pt) + their pads
LEGEND_ROW_PT = 13  # one legend row at 8 pt


def _style(k: int) -> dict[str, object]:
    return {
        "color": plt.get_cmap("tab10")(k % 10),
        "linestyle": LINESTYLES[k % len(LINESTYLES)],
        "marker": MARKERS[k % len(MARKERS)],
    }


def legend_below(ax: Axes, ncols: int = 1) -> None:
    """The legend under the axes, where it cannot cover a curve; the figure grows to hold it,
    so the axes keep their size."""
    rows = math.ceil(len(ax.get_legend_handles_labels()[1]) / ncols)
    figure = ax.get_figure()
    figure.set_figheight(figure.get_figheight() + (LEGEND_DROP_PT + LEGEND_ROW_PT * rows) / 72)
    below_xlabel = offset_copy(ax.transAxes, fig=figure, y=-LEGEND_DROP_PT, units="points")
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, 0),
        bbox_transform=below_xlabel,
        frameon=False,
        ncols=ncols,
        borderaxespad=0,
    )


def save(figure: Figure, directory: Path, stem: str) -> dict[str, Path]:
    """Write `stem.png` (200 dpi) and `stem.svg` atomically, close the figure."""
    paths = {"png": directory / f"{stem}.png", "svg": directory / f"{stem}.svg"}
    with plt.rc_context(STYLE):
        save_figure(paths["png"], figure, dpi=200, bbox_inches="tight", metadata={"Software": None})
        save_figure(paths["svg"], figure, bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    return paths


def baseline_label(name: str, baseline: str) -> str:
    """The arm's name, marked when it is the baseline (unless the name says so already)."""
    return f"{name} (baseline)" if name == baseline and name.lower() != "baseline" else name


def _grid(n: int, ncols: int, cell: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    figure, axes = plt.subplots(
        nrows, ncols, figsize=(cell[0] * ncols, cell[1] * nrows), squeeze=False
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return figure, axes


def training_curves(histories: Mapping[str, Sequence[pd.DataFrame]]) -> Figure:
    """Train/validation loss and accuracy per epoch, two arms per row (Figure 3); seeds overlaid."""
    with plt.rc_context(STYLE):
        names = list(histories)
        per_row = 2 if len(names) > 1 else 1
        figure, axes = _grid(2 * len(names), 2 * per_row, (WIDTH / 4 + 0.1, 2.1))
        for k, name in enumerate(names):
            for col, metric in enumerate(("loss", "accuracy")):
                ax = axes.flat[2 * k + col]
                for history in histories[name]:
                    for j, part in enumerate(("train", "val")):
                        column = f"{part}_{metric}"
                        if column in history:
                            ax.plot(
                                history["epoch"],
                                history[column],
                                label=part,
                                linewidth=1.3,
                                markersize=3,
                                **_style(j),
                            )
                ax.set_title(f"{name}\n{metric}", loc="left", fontsize=8)
                ax.set_xlabel("epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                handles, labels = ax.get_legend_handles_labels()
                unique = dict(zip(labels, handles, strict=False))
                ax.legend(unique.values(), unique.keys(), frameon=False, fontsize=7)
        figure.tight_layout()
    return figure


def confusion_matrices(
    units: Mapping[str, tuple[np.ndarray, np.ndarray]], threshold: float = 0.5
) -> Figure:
    """Test confusion matrices with counts and row fractions (Figures 4 and 9)."""
    with plt.rc_context(STYLE):
        figure, axes = _grid(len(units), 4, (WIDTH / 4 + 0.15, 2.1))
        labels = [LABEL_HEM, LABEL_ALL]
        for ax, (name, (y, prob)) in zip(axes.flat, units.items(), strict=False):
            matrix = confusion_matrix(y, predicted_all(prob, threshold).astype(int), labels=labels)
            totals = matrix.sum(axis=1, keepdims=True).clip(min=1)
            ax.imshow(matrix / totals, cmap="Greys", vmin=0, vmax=1.6)
            for i in range(2):
                for j in range(2):
                    ax.text(
                        j,
                        i,
                        f"{matrix[i, j]}\n{matrix[i, j] / totals[i, 0]:.0%}",
                        ha="center",
                        va="center",
                        fontsize=8,
                    )
            ticks = [CLASS_NAMES[label] for label in labels]
            ax.set_xticks([0, 1], ticks)
            ax.set_yticks([0, 1], ticks)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(name, fontsize=9)
            for side in ("top", "right"):
                ax.spines[side].set_visible(True)
        figure.tight_layout()
    return figure


def accuracy_with_ci(table: pd.DataFrame, baseline: str) -> Figure:
    """Test accuracy per arm with its 95% CI (Figures 5 and 7); the baseline's CI shaded."""
    with plt.rc_context(STYLE):
        figure, ax = plt.subplots(figsize=(WIDTH, 0.45 * len(table) + 1.0))
        positions = np.arange(len(table))[::-1]
        for k, (pos, row) in enumerate(zip(positions, table.itertuples(), strict=True)):
            ax.errorbar(
                row.accuracy,
                pos,
                xerr=[[row.accuracy - row.accuracy_ci_low], [row.accuracy_ci_high - row.accuracy]],
                fmt=MARKERS[k % len(MARKERS)],
                color="black" if row.name == baseline else plt.get_cmap("tab10")(k % 10),
                capsize=3,
                markersize=5,
            )
            if row.name == baseline:
                ax.axvspan(row.accuracy_ci_low, row.accuracy_ci_high, color="0.85", zorder=0)
        ax.set_yticks(positions, [baseline_label(str(n), baseline) for n in table["name"]])
        ax.set_xlabel("test accuracy (95% CI)")
        ax.grid(axis="x", color="0.9")
        figure.tight_layout()
    return figure


def roc_curves(
    units: Mapping[str, tuple[np.ndarray, np.ndarray]],
    aucs: Mapping[str, tuple[float, float, float]],
) -> Figure:
    """Test ROC curves overlaid, AUC with DeLong CI in the legend (Figures 6 and 8)."""
    with plt.rc_context(STYLE):
        figure, ax = plt.subplots(figsize=(WIDTH * 0.62, WIDTH * 0.58))
        ax.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, linestyle=":")
        for k, (name, (y, prob)) in enumerate(units.items()):
            auc, low, high = aucs[name]
            if not np.isfinite(auc):
                continue
            fpr, tpr, _ = roc_curve(y, prob)
            style = _style(k)
            style.pop("marker")
            ax.plot(
                fpr,
                tpr,
                linewidth=1.5,
                label=f"{name}: AUC {auc:.3f} [{low:.3f}, {high:.3f}]",
                **style,
            )
        ax.set_xlabel("1 - specificity (false positive rate)")
        ax.set_ylabel("sensitivity (true positive rate)")
        ax.set_aspect("equal")
        legend_below(ax)
        figure.tight_layout()
    return figure


def accuracy_vs_threshold(
    sweeps: Mapping[str, pd.DataFrame], operating: Mapping[str, float | None]
) -> Figure:
    """Test accuracy at thresholds 0..1 (Figure 10); dots mark the validation-chosen threshold."""
    with plt.rc_context(STYLE):
        figure, ax = plt.subplots(figsize=(WIDTH, 3.2))
        for k, (name, sweep) in enumerate(sweeps.items()):
            style = _style(k)
            marker = style.pop("marker")
            ax.plot(sweep["threshold"], sweep["accuracy"], linewidth=1.5, label=name, **style)
            chosen = operating.get(name)
            if chosen is not None:
                at = np.interp(chosen, sweep["threshold"], sweep["accuracy"])
                ax.plot(
                    [chosen],
                    [at],
                    marker=marker,
                    color=style["color"],
                    markersize=6,
                    linestyle="none",
                )
        ax.axvline(0.5, color="0.6", linewidth=0.8, linestyle=":")
        ax.set_xlabel("threshold on P(ALL)")
        ax.set_ylabel("test accuracy")
        ax.set_xlim(0, 1)
        legend_below(ax, ncols=min(3, len(sweeps)))
        figure.tight_layout()
    return figure


def reliability_diagram(
    units: Mapping[str, tuple[np.ndarray, np.ndarray]], eces: Mapping[str, float]
) -> Figure:
    """Observed fraction ALL against mean predicted P(ALL) in 10 bins, test split."""
    with plt.rc_context(STYLE):
        figure, ax = plt.subplots(figsize=(WIDTH * 0.62, WIDTH * 0.58))
        ax.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, linestyle=":")
        for k, (name, (y, prob)) in enumerate(units.items()):
            table = reliability_table(y, prob)
            ax.plot(
                table["mean_prob"],
                table["fraction_all"],
                linewidth=1.2,
                markersize=4,
                label=f"{name} (ECE {eces[name]:.3f})",
                **_style(k),
            )
        ax.set_xlabel("mean predicted P(ALL)")
        ax.set_ylabel("observed fraction ALL")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        legend_below(ax)
        figure.tight_layout()
    return figure


FOREST_METRICS = {
    ("mcnemar_exact", "accuracy"): "Δ accuracy\n(CI: subject bootstrap; p: McNemar)",
    ("subject_bootstrap", "balanced_accuracy"): "Δ balanced accuracy\n(subject bootstrap)",
    ("delong", "auc"): "Δ AUC\n(DeLong)",
}


def _p_label(p: float) -> str:
    if not np.isfinite(p):
        return "p –"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


FOREST_WIDTH = WIDTH * 1.25  # three panels side by side need room for their tick labels
FOREST_TICKS = 4  # at most this many intervals per panel, so the labels never touch


def forest_plot(comparisons: pd.DataFrame, baseline: str) -> Figure:
    """Each arm's difference from the baseline with its 95% CI and Holm-adjusted p."""
    with plt.rc_context(STYLE):
        # one row per (arm, reference); "arm vs reference" where an arm has several references
        pairs = comparisons[["arm", "reference"]].drop_duplicates()
        several = set(pairs.loc[pairs["arm"].duplicated(keep=False), "arm"])
        comparisons = comparisons.assign(
            row=[
                f"{arm} vs {reference}" if arm in several else arm
                for arm, reference in zip(comparisons["arm"], comparisons["reference"], strict=True)
            ]
        )
        arms = list(dict.fromkeys(comparisons["row"]))
        figure, axes = plt.subplots(
            1,
            len(FOREST_METRICS),
            figsize=(FOREST_WIDTH, 0.55 * len(arms) + 1.6),
            sharey=True,
            squeeze=False,
        )
        positions = np.arange(len(arms))[::-1]
        for ax, ((test, metric), title) in zip(axes[0], FOREST_METRICS.items(), strict=True):
            rows = comparisons[
                (comparisons["test"] == test) & (comparisons["metric"] == metric)
            ].set_index("row")
            for pos, arm in zip(positions, arms, strict=True):
                if arm not in rows.index:
                    continue
                row = rows.loc[arm]
                ax.errorbar(
                    row["effect"],
                    pos,
                    xerr=[[row["effect"] - row["ci_low"]], [row["ci_high"] - row["effect"]]],
                    fmt="o",
                    color="black",
                    capsize=3,
                    markersize=4,
                )
                ax.annotate(
                    _p_label(row["p_adjusted"]),
                    (row["effect"], pos),
                    xytext=(0, 5),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="0.25",
                )
            ax.axvline(0, color="0.5", linewidth=0.8)
            ax.set_title(title, fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=FOREST_TICKS, steps=[1, 2, 2.5, 5, 10]))
            ax.ticklabel_format(axis="x", useOffset=False)
            ax.grid(axis="x", color="0.9")
        axes[0, 0].set_yticks(positions, arms)
        axes[0, 0].set_ylim(-0.6, len(arms) - 0.2)
        figure.supxlabel(f"difference: arm minus {baseline}", fontsize=9)
        figure.tight_layout()
    return figure


def _natural_key(text: str) -> tuple[object, ...]:
    """'s2' before 's10'."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def subject_accuracy(tables: Mapping[str, pd.DataFrame]) -> Figure:
    """Per-subject test accuracy for every arm; subjects grouped by class."""
    with plt.rc_context(STYLE):
        first = next(iter(tables.values()))
        subjects = first[["subject", "label"]].copy()
        subjects["key"] = subjects["subject"].map(_natural_key)
        subjects = subjects.sort_values(["label", "key"])[["subject", "label"]]
        figure, ax = plt.subplots(figsize=(WIDTH, 0.22 * len(subjects) + 1.2))
        positions = {s: i for i, s in enumerate(subjects["subject"][::-1])}
        for k, (name, table) in enumerate(tables.items()):
            style = _style(k)
            style.pop("linestyle")
            y = table["subject"].map(positions)
            ax.plot(
                table["accuracy"],
                y + (k - len(tables) / 2) * 0.08,
                linestyle="none",
                markersize=4,
                label=name,
                alpha=0.85,
                **style,
            )
        labels = [
            f"{s} ({CLASS_NAMES[int(lab)]})"
            for s, lab in zip(subjects["subject"], subjects["label"], strict=True)
        ]
        ax.set_yticks([positions[s] for s in subjects["subject"]], labels, fontsize=7)
        ax.set_xlabel("fraction of the subject's test cells classified correctly")
        ax.set_xlim(-0.02, 1.02)
        ax.grid(axis="x", color="0.9")
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        figure.tight_layout()
    return figure
