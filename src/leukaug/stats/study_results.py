"""Read a study folder: arms (arm.json, history.csv, predictions.csv), failures, data set, config."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from leukaug.core.errors import DataError
from leukaug.core.layout import ArmFolder, StudyFolder
from leukaug.stats.metrics import validate_predictions


@dataclass
class ArmResults:
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
    arms: list[ArmResults]
    failed: list[dict[str, Any]] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    dataset: dict[str, Any] | None = None
    study_toml: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def names(self) -> list[str]:
        """Arm names in order of first appearance (arms sorted by id)."""
        return list(dict.fromkeys(arm.name for arm in self.arms))

    def arms_named(self, name: str) -> list[ArmResults]:
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


def _read_arm(arm_folder: ArmFolder) -> ArmResults | None:
    """The arm's results, or None when it is not complete (`ArmFolder.is_complete`)."""
    if not arm_folder.is_complete():
        return None
    folder, predictions_path = arm_folder.path, arm_folder.predictions
    info = _read_json(arm_folder.arm_json)
    try:
        predictions = validate_predictions(
            pd.read_csv(predictions_path, dtype={"image_id": str, "subject": str})
        )
    except (DataError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"{predictions_path}: {error}") from error
    history = pd.read_csv(arm_folder.history) if arm_folder.history.is_file() else None
    return ArmResults(
        arm_id=str(info.get("arm_id", folder.name)),
        name=str(info.get("name", folder.name)),
        seed=int(info.get("seed", 0) or 0),
        info=info,
        predictions=predictions,
        history=history,
    )


def load_study_results(study_dir: str | Path) -> Study:
    """Read `study_dir/arms/*/` and the optional study.toml and dataset.json."""
    directory = Path(study_dir)
    study_folder = StudyFolder(directory)
    if not directory.exists():
        raise DataError(
            f"{directory} does not exist. Fix: pass a study folder (the --out of `leukaug run`)."
        )
    if not directory.is_dir():
        raise DataError(f"{directory} is a file, not a study folder (one holding arms/).")
    if not study_folder.arms_dir.is_dir():
        raise DataError(f"{directory} has no arms/ folder; point the report at a study folder.")
    arms, failed, incomplete = [], [], []
    for folder in study_folder.arm_folders():
        if folder.error.is_file():
            error = _read_json(folder.error)
            error.setdefault("arm_id", folder.arm_id)
            failed.append(error)
            continue
        arm = _read_arm(folder)
        if arm is None:
            incomplete.append(folder.arm_id)
        else:
            arms.append(arm)
    dataset_path = study_folder.dataset_json
    toml_path = study_folder.study_toml
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
