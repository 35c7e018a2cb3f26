"""Read a study folder: arms (arm.json, history.csv, predictions.csv), failures, data set, config."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from leukaug.errors import DataError
from leukaug.metrics import validate_predictions


@dataclass
class Arm:
    """One completed arm: its identity, resolved spec and outputs."""

    arm_id: str
    name: str
    seed: int
    info: dict[str, Any]
    predictions: pd.DataFrame
    history: pd.DataFrame | None

    @property
    def spec(self) -> dict[str, Any]:
        return self.info.get("spec", {}) or {}

    @property
    def augmentations(self) -> list[Any]:
        return list(self.spec.get("augmentations", []) or [])


@dataclass
class Study:
    """Everything the report needs from a study folder."""

    directory: Path
    arms: list[Arm]
    failed: list[dict[str, Any]] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    dataset: dict[str, Any] | None = None
    study_toml: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def names(self) -> list[str]:
        """Arm names in order of first appearance (arms sorted by id)."""
        return list(dict.fromkeys(arm.name for arm in self.arms))

    def arms_named(self, name: str) -> list[Arm]:
        return sorted((a for a in self.arms if a.name == name), key=lambda a: (a.seed, a.arm_id))

    @property
    def synthetic(self) -> bool:
        return bool(self.dataset and self.dataset.get("synthetic"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(
            f"cannot read {path}: {error}. Re-run the arm or remove its folder."
        ) from error


def _read_arm(folder: Path) -> Arm | None:
    predictions_path = folder / "predictions.csv"
    if not predictions_path.is_file():
        return None
    info = _read_json(folder / "arm.json") if (folder / "arm.json").is_file() else {}
    try:
        predictions = validate_predictions(
            pd.read_csv(predictions_path, dtype={"image_id": str, "subject": str})
        )
    except (DataError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"{predictions_path}: {error}") from error
    history_path = folder / "history.csv"
    history = pd.read_csv(history_path) if history_path.is_file() else None
    return Arm(
        arm_id=str(info.get("arm_id", folder.name)),
        name=str(info.get("name", folder.name)),
        seed=int(info.get("seed", 0) or 0),
        info=info,
        predictions=predictions,
        history=history,
    )


def load_study(study_dir: str | Path) -> Study:
    """Read `study_dir/arms/*/` and the optional study.toml and dataset.json."""
    directory = Path(study_dir)
    arms_dir = directory / "arms"
    if not arms_dir.is_dir():
        raise DataError(f"{directory} has no arms/ folder; point the report at a study folder.")
    arms, failed, incomplete = [], [], []
    for folder in sorted(p for p in arms_dir.iterdir() if p.is_dir()):
        if (folder / "error.json").is_file():
            error = _read_json(folder / "error.json")
            error.setdefault("arm_id", folder.name)
            failed.append(error)
            continue
        arm = _read_arm(folder)
        if arm is None:
            incomplete.append(folder.name)
        else:
            arms.append(arm)
    dataset_path = directory / "dataset.json"
    toml_path = directory / "study.toml"
    study_toml = toml_path.read_text(encoding="utf-8") if toml_path.is_file() else None
    config: dict[str, Any] = {}
    if study_toml is not None:
        try:
            config = tomllib.loads(study_toml)
        except tomllib.TOMLDecodeError as error:
            raise DataError(f"{toml_path} is not valid TOML: {error}.") from error
    return Study(
        directory=directory,
        arms=arms,
        failed=failed,
        incomplete=incomplete,
        dataset=_read_json(dataset_path) if dataset_path.is_file() else None,
        study_toml=study_toml,
        config=config,
    )
