"""Fabricate a study folder of arms (arm.json, history.csv, predictions.csv) with known effects.

Each arm's P(ALL) is sigmoid(separation * (2y - 1) + subject effect + noise): a larger
`separation` is a better classifier, so the expected ordering of arms is known.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

# name -> separation (float), or "always_all" / "always_hem" for one-class predictors.
DEFAULT_ARMS: dict[str, float | str] = {"baseline": 0.3, "flip_rotate": 1.5, "noise": 0.35}
AUGMENTATIONS = {
    "baseline": [],
    "flip_rotate": [{"name": "flip", "params": {}}, {"name": "rotate", "params": {"degrees": 180}}],
    "noise": [{"name": "noise", "params": {"std": 0.316}}],
    "stain": [{"name": "stain", "params": {"strength": "strong"}}],
}
OTHER_AUGMENTATION = [{"name": "zoom", "params": {"range": 0.2}}]  # any other arm name
# One-class predictors are another model: no arm matches them, so they are described, not tested.
OTHER_MODEL = ("always_all", "always_hem")


def spec_for(name: str, kind: float | str, seed: int) -> dict:
    """An arm.json spec: every arm the same but its augmentations (and the one-class "models")."""
    return {
        "model": "resnet18" if kind in OTHER_MODEL else "custom_cnn",
        "image_size": 72,
        "augmentations": AUGMENTATIONS.get(name, OTHER_AUGMENTATION),
        "aug_p": 0.33,
        "aug_mode": "together",
        "regime": "full",
        "init_from": None,
        "class_weighting": "balanced",
        "epochs": 5,
        "seed": seed,
    }


def subjects_frame(
    split: str, n_subjects: int, images_per_subject: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Image rows of one split: single-class subjects, about 2/3 ALL as in C-NMC."""
    rows = []
    for s in range(n_subjects):
        label = 1 if s % 3 != 2 else 0
        subject = f"{'' if label else 'H'}{split}{s}"
        for i in range(images_per_subject):
            rows.append(
                {
                    "split": split,
                    "image_id": f"{split}/{subject}_{i}.bmp",
                    "subject": subject,
                    "label": label,
                }
            )
    frame = pd.DataFrame(rows)
    frame["subject_effect"] = frame["subject"].map(
        {s: rng.normal(0, 0.3) for s in frame["subject"].unique()}
    )
    return frame


def predictions_for(
    frame: pd.DataFrame, kind: float | str, rng: np.random.Generator
) -> pd.DataFrame:
    """Predictions of one arm on the given images."""
    out = frame[["split", "image_id", "subject", "label"]].copy()
    if kind == "always_all":
        out["prob"] = rng.uniform(0.6, 0.99, len(out))
    elif kind == "always_hem":
        out["prob"] = rng.uniform(0.01, 0.4, len(out))
    else:
        logit = (
            float(kind) * (2 * out["label"] - 1)
            + frame["subject_effect"]
            + rng.normal(0, 1, len(out))
        )
        out["prob"] = 1 / (1 + np.exp(-logit))
    return out


def history_for(epochs: int, rng: np.random.Generator) -> pd.DataFrame:
    epoch = np.arange(1, epochs + 1)
    return pd.DataFrame(
        {
            "epoch": epoch,
            "train_loss": 0.7 / epoch**0.3 + rng.normal(0, 0.01, epochs),
            "train_accuracy": 0.6 + 0.05 * np.log(epoch) + rng.normal(0, 0.01, epochs),
            "val_loss": 0.72 / epoch**0.2 + rng.normal(0, 0.01, epochs),
            "val_accuracy": 0.58 + 0.04 * np.log(epoch) + rng.normal(0, 0.01, epochs),
            "lr": np.full(epochs, 1e-4),
            "seconds": np.full(epochs, 12.5),
        }
    )


def make_study(
    root: Path,
    arms: Mapping[str, float | str] = DEFAULT_ARMS,
    *,
    seeds: Sequence[int] = (0,),
    n_subjects: Mapping[str, int] | None = None,
    images_per_subject: int = 15,
    failed: Sequence[str] = ("blur",),
    synthetic: bool = True,
    with_toml: bool = True,
    baseline: str = "none",
    primary_metric: str = "auc",
    seed: int = 0,
) -> Path:
    """Write a complete study folder under `root` and return it."""
    rng = np.random.default_rng(seed)
    n_subjects = dict(n_subjects or {"train": 6, "val": 6, "test": 12})
    images = pd.concat(
        [subjects_frame(split, n, images_per_subject, rng) for split, n in n_subjects.items()],
        ignore_index=True,
    )
    arms_dir = root / "arms"
    for name, kind in arms.items():
        for arm_seed in seeds:
            arm_id = f"{re.sub(r'[^A-Za-z0-9_]+', '_', name)}-s{arm_seed}"
            folder = arms_dir / arm_id
            folder.mkdir(parents=True)
            spec = spec_for(name, kind, arm_seed)
            info = {
                "arm_id": arm_id,
                "name": name,
                "seed": arm_seed,
                "spec": spec,
                "config_hash": f"hash-{arm_id}",
                "status": "complete",
                "started_at": "2026-01-01T00:00:00Z",
                "finished_at": "2026-01-01T00:10:00Z",
                "device": "cpu",
                "versions": {"python": "3.11", "torch": "2.4.0", "leukaug": "0.1.0"},
            }
            (folder / "arm.json").write_text(json.dumps(info))
            predictions_for(images, kind, rng).to_csv(folder / "predictions.csv", index=False)
            history_for(5, rng).to_csv(folder / "history.csv", index=False)
    for name in failed:
        folder = arms_dir / f"{name}-s0"
        folder.mkdir(parents=True)
        error = {
            "arm_id": f"{name}-s0",
            "name": name,
            "error_type": "TrainingError",
            "message": "loss became NaN at epoch 2 <lr too high>",
            "traceback": "Traceback ...",
        }
        (folder / "error.json").write_text(json.dumps(error))
    counts = {
        split: {
            cls: {
                "images": int((part["label"] == label).sum()),
                "subjects": int(part.loc[part["label"] == label, "subject"].nunique()),
            }
            for label, cls in ((1, "ALL"), (0, "HEM"))
        }
        for split, part in images.groupby("split")
    }
    dataset = {  # the shape study.py writes
        "root": "/data/embedded-fixture",
        "layout": "kaggle",
        "synthetic": synthetic,
        "split": {"strategy": "subject", "val_fraction": 0.2, "seed": 0},
        "counts": counts,
    }
    (root / "dataset.json").write_text(json.dumps(dataset))
    if with_toml:
        (root / "study.toml").write_text(
            f'[study]\nname = "fixture"\nbaseline = "{baseline}"\nprimary_metric = "{primary_metric}"\n\n'
            '[data]\nsource = "synthetic"\n'
        )
    return root
