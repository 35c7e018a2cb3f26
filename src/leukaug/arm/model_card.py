"""An arm's model card: everything `predict` and `export` need besides the weights.

`run_arm` stores it in `checkpoint.pt` under `"leukaug"` once the arm's predictions exist,
so a checkpoint is self-describing (model, image size, crop, normalisation, head, operating
threshold, leukaug version, spec). This module sits below `arm` (which embeds the card) and
`predict` (which reads it), so neither imports the other for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from leukaug import __version__
from leukaug.arm import checkpoints
from leukaug.core.errors import DataError
from leukaug.core.layout import ArmFolder
from leukaug.models import model_info
from leukaug.stats.metrics import DEFAULT_THRESHOLD, operating_threshold

MODEL_CARD_KEY = "leukaug"  # the checkpoint entry holding the model card
CARD_FORMAT = 1


class CardSpec(Protocol):
    """The parts of an `arm.ArmSpec` a card records."""

    model: str
    head: str
    tta: bool

    @property
    def resolved_image_size(self) -> int: ...

    def to_dict(self) -> dict[str, Any]: ...


def model_card(
    spec: CardSpec,
    predictions: pd.DataFrame | None,
    *,
    crop: float | None = None,
    stain: dict[str, Any] | None = None,
    arm_id: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Everything `predict` and `export` need besides the weights (JSON- and torch.load-safe).

    The threshold is the report's operating threshold (Youden's J on the arm's validation
    predictions); without validation predictions it is 0.5 and `threshold_source` says so.
    """
    chosen = operating_threshold(predictions) if predictions is not None else None
    return {
        "format": CARD_FORMAT,
        "arm_id": arm_id,
        "name": name,
        "model": spec.model,
        "head": spec.head,
        "image_size": spec.resolved_image_size,
        "crop": crop,
        "stain": stain,  # the stain normalisation target of the data (data.stain_norm)
        "mean": [float(v) for v in model_info(spec.model).mean],
        "std": [float(v) for v in model_info(spec.model).std],
        "threshold": float(chosen) if chosen is not None else DEFAULT_THRESHOLD,
        "threshold_source": "val (Youden's J)" if chosen is not None else "default 0.5 (no val)",
        "tta": bool(spec.tta),
        "leukaug_version": __version__,
        "spec": spec.to_dict(),
    }


def embed_model_card(arm_dir: str | Path, card: dict[str, Any]) -> None:
    """Store `card` in the arm's `checkpoint.pt` (atomically), making it self-describing."""
    path = ArmFolder(Path(arm_dir)).checkpoint
    saved = load_checkpoint(path)
    checkpoints.torch_save(path, saved | {MODEL_CARD_KEY: card})


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A leukaug checkpoint (`weights_only`), or a DataError naming the file."""
    if not path.is_file():
        raise DataError(
            f"{path} does not exist. Fix: pass a finished arm folder (it holds checkpoint.pt)."
        )
    return checkpoints.read_checkpoint(path)  # unreadable or no 'model': a DataError naming it
