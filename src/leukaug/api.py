"""The Python API, for notebooks and scripts: run a study, open a finished one, use an arm.

    import leukaug
    study = leukaug.run_study("demo", out="runs/demo")      # or a study file, or a StudyConfig
    study.verdicts                                          # pandas DataFrames, read on demand
    arm = leukaug.load_arm(study.arms["custom_cnn-none-full-s0"].path)
    arm.predict(["cell.bmp", pil_image, uint8_array, tensor])  # P(ALL), as `leukaug predict`

`leukaug/__init__.py` re-exports `run_study`, `open_study` and `load_arm` lazily (this
module imports torch), so `import leukaug` stays torch-free.
Errors are the library's (`leukaug.core.errors.LeukaugError` and its kinds), as the CLI's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from leukaug.core import atomic
from leukaug.core.errors import ConfigError, DataError
from leukaug.core.layout import ArmFolder, StudyFolder
from leukaug.data.images import open_rgb, pil_to_rgb
from leukaug.stats.metrics import predicted_all
from leukaug.study.jobs import ArmOutcome
from leukaug.study.packaged import resolve_study
from leukaug.study.run import run_study as run_study_folder
from leukaug.study.study_file import StudyConfig, read_study_file
from leukaug.trained.loader import TrainedArm, load_trained_arm
from leukaug.trained.predict import CHUNK_IMAGES, collect_inputs, predict_prepared, preparer


def run_study(
    study: str | Path | StudyConfig,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    cache_dir: str | Path | None = None,
    force: bool = False,
    executor: str | None = None,
    ray_address: str | None = None,
    device: str | None = None,
    on_arm_done: Callable[[ArmOutcome], None] | None = None,
) -> StudyResults:
    """Run (or resume) a study into `out` and return it opened (`open_study`).

    `study`: a study file, a packaged study's name (`leukaug studies list`) or a
    `StudyConfig`. The options are `leukaug run`'s: `overrides` are `--set KEY=VALUE`
    strings, then `--cache-dir`, `--force`, `--executor`, `--ray-address`, `--device`.
    `on_arm_done(outcome)` is called after each arm. Failed arms are in `.failed`.
    """

    if isinstance(study, StudyConfig):
        if overrides:
            raise ConfigError(
                "overrides apply to a study file; change a StudyConfig with model_copy."
            )
        config, source = study, "Python API"
    else:
        path = resolve_study(str(study))
        config, source = read_study_file(path, overrides), str(path)
    if cache_dir is not None:
        data = config.data.model_copy(update={"cache_dir": str(Path(cache_dir).resolve())})
        config = config.model_copy(update={"data": data})
    result = run_study_folder(
        config,
        out,
        force=force,
        executor="ray" if ray_address else executor,
        ray_address=ray_address,
        device=device,
        source=source,
        on_arm_done=on_arm_done,
    )
    return open_study(result.out_dir)


@dataclass(frozen=True)
class ArmRecord:
    """One arm of a study folder: where it is and how it ended."""

    arm_id: str
    name: str
    seed: int
    status: str  # "complete", "failed" or "incomplete"
    path: Path

    def load(self) -> Arm:
        """The trained arm, ready to predict (`load_arm`)."""
        return load_arm(self.path)


def _arm_record(folder: ArmFolder) -> ArmRecord:
    info = folder.read_info() or {}
    if folder.error.is_file():
        status = "failed"
    else:
        status = "complete" if folder.is_complete() else "incomplete"
    return ArmRecord(
        arm_id=folder.arm_id,
        name=str(info.get("name", folder.arm_id)),
        seed=int(info.get("seed", 0) or 0),
        status=status,
        path=folder.path,
    )


@dataclass
class StudyResults:
    """A study folder, read on demand: DataFrames of the report's CSVs and the arms."""

    folder: Path
    _layout: StudyFolder = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._layout = StudyFolder(self.folder)

    def _csv(self, path: Path) -> pd.DataFrame:
        if not path.is_file():
            raise DataError(
                f"{path} does not exist: the study's report was not built (no arm finished, "
                f"or the run stopped). Fix: leukaug report {self.folder}"
            )
        return pd.read_csv(path)

    @cached_property
    def verdicts(self) -> pd.DataFrame:
        """The primary analysis (verdicts.csv): one row per tested arm and its reference."""
        return self._csv(self._layout.verdicts_csv)

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """metrics.csv: one row per arm and split."""
        return self._csv(self._layout.metrics_csv)

    @cached_property
    def comparisons(self) -> pd.DataFrame:
        """comparisons.csv: the secondary tests (McNemar, DeLong, subject bootstrap)."""
        return self._csv(self._layout.comparisons_csv)

    @cached_property
    def arms(self) -> dict[str, ArmRecord]:
        """Every arm folder, by arm id (`.load()` one to predict with it)."""
        return {folder.arm_id: _arm_record(folder) for folder in self._layout.arm_folders()}

    @property
    def failed(self) -> list[ArmRecord]:
        return [arm for arm in self.arms.values() if arm.status == "failed"]

    @cached_property
    def dataset(self) -> dict[str, Any]:
        """dataset.json: data root, layout, synthetic flag, split, counts per split and class."""
        info = atomic.read_json(self._layout.dataset_json)
        if not isinstance(info, dict):
            raise DataError(f"{self._layout.dataset_json} is missing or not a JSON object.")
        return info

    @cached_property
    def predictions(self) -> pd.DataFrame:
        """Every complete arm's predictions.csv, with `arm_id`, `name` and `seed` in front and
        each image's `path` (data root / image_id) at the end, ready for `Arm.predict`."""
        frames = [
            pd.read_csv(
                ArmFolder(arm.path).predictions, dtype={"image_id": str, "subject": str}
            ).assign(arm_id=arm.arm_id, name=arm.name, seed=arm.seed)
            for arm in self.arms.values()
            if arm.status == "complete"
        ]
        if not frames:
            raise DataError(f"{self.folder}: no arm is complete, so there are no predictions.")
        table = pd.concat(frames, ignore_index=True)
        front = ["arm_id", "name", "seed"]
        table = table[front + [c for c in table.columns if c not in front]]
        root = self.dataset.get("root") if self._layout.dataset_json.is_file() else None
        return (
            table.assign(path=[str(Path(root) / i) for i in table["image_id"]]) if root else table
        )

    @property
    def report(self) -> Path:
        """report.html (open it in a browser)."""
        return self._layout.report_html


def open_study(folder: str | Path) -> StudyResults:
    """A finished (or partly finished) study folder: `.verdicts`, `.metrics`,
    `.comparisons`, `.predictions` (pandas DataFrames), `.arms`, `.failed`, `.report`."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder} does not exist. Fix: pass a study folder (the `out` of a run).")
    if not StudyFolder(folder).arms_dir.is_dir():
        raise DataError(f"{folder} has no arms/ folder; it is not a study folder.")
    return StudyResults(folder.resolve())


def _as_uint8(array: np.ndarray, where: str) -> np.ndarray:
    """uint8 as is; floats must be in [0, 1] (scaled to 0..255, rounded)."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if array.size and not (np.nanmin(array) >= 0 and np.nanmax(array) <= 1):
            raise DataError(
                f"{where}: float images must be in [0, 1], got values from {np.nanmin(array):g} "
                f"to {np.nanmax(array):g}. Fix: divide 0..255 values by 255, or pass uint8."
            )
        return np.round(array * 255).astype(np.uint8)
    raise DataError(f"{where}: images must be uint8 (0..255) or float (0..1), got {array.dtype}.")


def _array_images(array: np.ndarray, where: str) -> list[np.ndarray]:
    """(H, W, 3) or (N, H, W, 3) (or channels first, (3, H, W) / (N, 3, H, W)) -> H x W x 3."""
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise DataError(
            f"{where}: expected images shaped (N, H, W, 3) or (H, W, 3), got {array.shape}."
        )
    if array.shape[-1] != 3 and array.shape[1] == 3:
        array = array.transpose(0, 2, 3, 1)  # channels first, as torch keeps them
    if array.shape[-1] != 3:
        raise DataError(
            f"{where}: expected 3 colour channels (RGB) last or first, got shape {array.shape}."
        )
    return list(_as_uint8(np.asarray(array), where))


def _images(images: Any) -> Iterator[np.ndarray]:
    """Each image of `images` as uint8 H x W x 3 RGB, decoded as `leukaug predict` decodes."""
    items = images if isinstance(images, list | tuple) else [images]
    for index, item in enumerate(items):
        where = f"images[{index}]" if isinstance(images, list | tuple) else "images"
        if isinstance(item, str | Path):
            for path in collect_inputs([item])[0]:
                yield open_rgb(path)[0]
        elif isinstance(item, Image.Image):
            yield pil_to_rgb(item)
        elif isinstance(item, np.ndarray):
            yield from _array_images(item, where)
        elif isinstance(item, torch.Tensor):
            yield from _array_images(item.detach().cpu().numpy(), where)
        else:
            raise DataError(
                f"{where}: a {type(item).__name__} is not an image. Fix: pass paths, PIL "
                "images, uint8 arrays (N, H, W, 3) or tensors."
            )


@dataclass
class Arm:
    """A trained arm: `.predict(images)` gives P(ALL) as `leukaug predict` does."""

    trained: TrainedArm
    path: Path

    @property
    def threshold(self) -> float:
        """The operating threshold (chosen on the validation split): ALL when P(ALL) >= it."""
        return self.trained.threshold

    @property
    def card(self) -> dict[str, Any]:
        """The model card: model, image size, crop, normalisation, threshold, spec."""
        return self.trained.card

    @property
    def model(self) -> Any:
        """The torch module (eval mode): normalised (N, 3, size, size) -> one logit per image."""
        return self.trained.model

    def predict(
        self,
        images: Any,
        *,
        batch_size: int = 32,
        device: str = "cpu",
        tta: bool | None = None,
    ) -> np.ndarray:
        """P(ALL) per image, in order. `images`: a path (an image, a folder, a CSV with a
        `path` column), a PIL image, a uint8 array (N, H, W, 3) or (H, W, 3), a tensor
        (uint8, or float in [0, 1]; channels last or first), or a list of these. Every image
        is prepared as the arm's cache and `leukaug predict` prepare it (`preparer`)."""
        prepare = preparer(self.card)
        prepared = [prepare(image, f"images[{k}]") for k, image in enumerate(_images(images))]
        if not prepared:
            raise DataError("no images to predict. Fix: pass at least one image.")
        chunks = (
            prepared[start : start + CHUNK_IMAGES]
            for start in range(0, len(prepared), CHUNK_IMAGES)
        )
        return predict_prepared(self.trained, chunks, batch_size=batch_size, device=device, tta=tta)

    def predicted_all(self, prob: np.ndarray) -> np.ndarray:
        """True where P(ALL) >= the arm's operating threshold (the rule `predict` uses)."""
        return predicted_all(prob, self.threshold)


def load_arm(folder: str | Path) -> Arm:
    """A trained arm's folder (`arms/<arm_id>/` or a `leukaug train --out`), ready to predict."""
    return Arm(load_trained_arm(folder), Path(folder))
