"""What a data set holds: counts per split, class, fold and subject (summarised, with an
images-per-subject histogram), and a contact sheet.

`contact_sheet` renders the paper's Figure 1 (sample cells per class), for `leukaug data
inspect` and for a study's report (from its image cache, `study.prepare.render_figures`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from leukaug import CLASS_NAMES, LABEL_ALL, LABEL_HEM
from leukaug.core.atomic import save_figure
from leukaug.data.images import open_rgb
from leukaug.data.read import Dataset


@dataclass
class Inspection:
    """Tables describing a data set (all pandas DataFrames)."""

    by_split: pd.DataFrame  # source_split, class, subjects, images
    by_fold: pd.DataFrame  # source_split, fold, class, subjects, images
    by_subject: pd.DataFrame  # subject, class, source_split, folds, images


def _counts(manifest: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    frame = manifest.assign(**{"class": manifest["label"].map(CLASS_NAMES)})
    grouped = frame.groupby([*keys, "class"], sort=True)
    return grouped.agg(subjects=("subject", "nunique"), images=("image_id", "size")).reset_index()


def inspect_manifest(manifest: pd.DataFrame) -> Inspection:
    """Counts per source split x class, per fold x class, and per subject."""
    by_subject = (
        manifest.assign(**{"class": manifest["label"].map(CLASS_NAMES)})
        .groupby("subject", sort=True)
        .agg(
            **{
                "class": ("class", "first"),
                "source_split": ("source_split", "first"),
                "folds": ("fold", lambda f: ",".join(str(v) for v in sorted(set(f)))),
                "images": ("image_id", "size"),
            }
        )
        .reset_index()
    )
    return Inspection(
        by_split=_counts(manifest, ["source_split"]),
        by_fold=_counts(manifest, ["source_split", "fold"]),
        by_subject=by_subject,
    )


# Bins of the images-per-subject histogram: (label, lowest, highest) counts of images.
HISTOGRAM_BINS = (("1", 1, 1), ("2", 2, 2), ("3-5", 3, 5), ("6-10", 6, 10), ("11-20", 11, 20),
                  ("21-50", 21, 50), ("51-100", 51, 100), ("101-500", 101, 500),
                  ("over 500", 501, None))  # fmt: skip


def subject_summary(by_subject: pd.DataFrame) -> pd.DataFrame:
    """Per class: subjects, images, and the fewest / median / most images of one subject."""
    grouped = by_subject.groupby("class", sort=False)["images"]
    summary = grouped.agg(subjects="size", images="sum", fewest="min", median="median", most="max")
    order = [CLASS_NAMES[LABEL_ALL], CLASS_NAMES[LABEL_HEM]]
    return summary.reindex([c for c in order if c in summary.index]).reset_index()


def images_per_subject_histogram(by_subject: pd.DataFrame) -> pd.DataFrame:
    """Subjects per class whose image count falls in each bin (empty bins left out)."""
    records = []
    for label, low, high in HISTOGRAM_BINS:
        inside = by_subject["images"] >= low
        if high is not None:
            inside &= by_subject["images"] <= high
        counts = by_subject.loc[inside, "class"].value_counts()
        if counts.sum():
            records.append(
                {
                    "images per subject": label,
                    **{
                        c: int(counts.get(c, 0))
                        for c in (CLASS_NAMES[LABEL_ALL], CLASS_NAMES[LABEL_HEM])
                    },
                }
            )
    return pd.DataFrame.from_records(records)


def sample_images(
    dataset: Dataset, per_class: int = 8, seed: int = 0
) -> tuple[list[np.ndarray], np.ndarray]:
    """Up to `per_class` images of each class (ALL first), chosen at random (seeded).

    Returns a list of uint8 H x W x 3 arrays (sizes may differ) and their labels.
    """
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in (LABEL_ALL, LABEL_HEM):
        paths = dataset.manifest.loc[dataset.manifest["label"] == label, "path"].to_numpy()
        chosen = (
            rng.choice(len(paths), size=min(per_class, len(paths)), replace=False)
            if len(paths)
            else []
        )
        for index in sorted(chosen):
            images.append(open_rgb(paths[index])[0])
            labels.append(label)
    return images, np.asarray(labels, dtype=np.int64)


def contact_sheet(
    images: np.ndarray | list[np.ndarray],
    labels: np.ndarray | list[int],
    path: str | Path,
    title: str | None = None,
    n_cols: int | None = None,
) -> Path:
    """Save a PNG grid with one block of rows per class (ALL, then HEM) and return its path.

    `images`: uint8 H x W x 3 each (an (N, H, W, 3) array or a list).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    groups = [
        (label, [images[i] for i in np.flatnonzero(labels == label)])
        for label in (LABEL_ALL, LABEL_HEM)
    ]
    groups = [(label, group) for label, group in groups if group]
    n_cols = n_cols or max((len(g) for _, g in groups), default=1)
    n_rows = sum(-(-len(g) // n_cols) for _, g in groups) or 1
    figure, axes = plt.subplots(
        n_rows, n_cols, figsize=(1.6 * n_cols, 1.7 * n_rows + 0.4), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    row = 0
    for label, group in groups:
        for index, image in enumerate(group):
            ax = axes[row + index // n_cols, index % n_cols]
            ax.imshow(image, interpolation="nearest")
            if index % n_cols == 0:
                ax.set_title(CLASS_NAMES[int(label)], loc="left", fontsize=10, fontweight="bold")
        row += -(-len(group) // n_cols)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    path = Path(path)
    save_figure(path, figure, dpi=120)
    plt.close(figure)
    return path
