"""One loader for a trained arm: its model (best checkpoint, eval mode) and its model card.

A checkpoint is self-describing when `checkpoint.pt` holds a `"leukaug"` entry (the model
card: model, image size, crop, normalisation, head, operating threshold, version, spec).
Older arm folders have none; their card is rebuilt from `arm.json` and `predictions.csv`.
`predict`, `export`, `explain` and the study's Grad-CAMs all load arms through here.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from leukaug.arm.model_card import MODEL_CARD_KEY, load_checkpoint, model_card
from leukaug.arm.network import build_model, load_arm_weights
from leukaug.arm.spec import ArmSpec
from leukaug.core.errors import DataError
from leukaug.core.layout import ArmFolder, StudyFolder


def read_arm_predictions(arm_dir: str | Path) -> pd.DataFrame:
    """An arm's `predictions.csv`, ids and subjects as text."""
    path = ArmFolder(Path(arm_dir)).predictions
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: the arm did not finish. Fix: rerun its study or `leukaug train`."
        )
    return pd.read_csv(path, dtype={"image_id": str, "subject": str})


def _study_crop(arm_dir: Path) -> float | None:
    """The data crop of the study holding `arm_dir` (`<study>/arms/<arm_id>/`), if it set one."""
    study_file = StudyFolder(arm_dir.parent.parent).study_toml
    if not study_file.is_file():
        return None
    crop = tomllib.loads(study_file.read_text(encoding="utf-8")).get("data", {}).get("crop")
    return float(crop) if crop is not None else None


def card_from_arm_json(arm_dir: str | Path) -> dict[str, Any]:
    """The model card of an arm folder written before checkpoints carried one."""
    arm_dir = Path(arm_dir)
    folder = ArmFolder(arm_dir)
    arm = folder.read_info()
    if not isinstance(arm, dict) or "spec" not in arm:
        raise DataError(
            f"{folder.arm_json} is missing or has no 'spec', and checkpoint.pt carries no "
            f"model card. Fix: pass an arm folder (arms/<arm_id>/) written by leukaug."
        )
    spec = _spec_from_dict(arm["spec"], folder.arm_json)
    # Without predictions (an arm folder assembled by hand) the threshold is 0.5, and the
    # card's `threshold_source` says so.
    predictions = read_arm_predictions(arm_dir) if folder.predictions.is_file() else None
    return model_card(
        spec,
        predictions,
        crop=_study_crop(arm_dir),
        arm_id=arm.get("arm_id"),
        name=arm.get("name"),
    )


def _spec_from_dict(data: dict[str, Any], where: Path) -> ArmSpec:
    """The arm's spec, or a DataError naming `where` when this version cannot read it."""
    try:
        return ArmSpec.from_dict(data)
    except (TypeError, KeyError) as error:
        raise DataError(
            f"{where}: the arm's spec does not fit this leukaug version ({error}). "
            "Fix: predict with the leukaug version that trained the arm (see its card or arm.json)."
        ) from None


@dataclass
class TrainedArm:
    """A trained arm ready for inference: the model (eval mode, CPU) and its card."""

    model: nn.Module
    card: dict[str, Any]
    card_source: str  # "checkpoint" or "arm.json"

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"])

    @property
    def model_name(self) -> str:
        return str(self.card["model"])

    @property
    def image_size(self) -> int:
        return int(self.card["image_size"])

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.card["mean"])  # type: ignore[return-value]

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.card["std"])  # type: ignore[return-value]


def load_trained_arm(arm_dir: str | Path) -> TrainedArm:
    """The arm's best checkpoint as a model, described by the checkpoint's card or `arm.json`."""
    arm_dir = Path(arm_dir)
    folder = ArmFolder(arm_dir)
    checkpoint = folder.checkpoint
    if not checkpoint.is_file() and not folder.arm_json.is_file():
        raise DataError(
            f"{arm_dir} is not a trained arm folder: it needs checkpoint.pt and arm.json. "
            "Fix: pass a folder arms/<arm_id>/ of a study whose arm completed."
        )
    saved = load_checkpoint(checkpoint)
    if isinstance(saved.get(MODEL_CARD_KEY), dict):
        card, source = saved[MODEL_CARD_KEY], "checkpoint"
    else:
        card, source = card_from_arm_json(arm_dir), "arm.json"
    # Same module structure as in training (regime included); the weights come from the
    # checkpoint (a slim one's frozen part is rebuilt by load_arm_weights).
    spec = dataclasses.replace(
        _spec_from_dict(card["spec"], checkpoint),
        pretrained=False,
        weights_path=None,
        init_from=None,
    )
    model = build_model(spec, int(card["image_size"]))
    load_arm_weights(model, arm_dir)
    return TrainedArm(model.eval(), card, source)
