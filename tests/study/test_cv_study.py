"""`[data] cv_folds`: a folder per class with no test set, cross-validated from the study
file alone; out-of-fold predictions, the per-fold report table, resume per fold."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from leukaug.core.errors import ConfigError
from leukaug.study.plan import expand_arms
from leukaug.study.run import run_study
from leukaug.study.study_file import parse_study, read_study_file

CV_STUDY = """
[study]
name = "cv"
seeds = [0]
baseline = "none"
device = "cpu"
sanity_baseline = false  # the features arm runs per fold like any arm; left out to stay tiny

[data]
source = "{source}"
positive_class = "all"
cache_dir = "{cache_dir}"
cv_folds = 2

[training]
image_size = 32
epochs = 1
batch_size = 16

[models.resnet18]

[augmentations]
none = []
flip = ["flip"]

[tracking]
tensorboard = false
"""
NAMES = ("resnet18-none-full", "resnet18-flip-full")


def class_folders_of_every_image(tiny_manifest: pd.DataFrame, root: Path) -> Path:
    """Every image of the tiny C-NMC set, its test set included, in `all/` and `hem/`
    folders: a folder per class with no test split."""
    for label, folder in ((1, "all"), (0, "hem")):
        (root / folder).mkdir(parents=True)
        for path in tiny_manifest.loc[tiny_manifest["label"] == label, "path"]:
            shutil.copy(path, root / folder / Path(path).name)
    return root


def write_study(folder: Path, source: Path) -> Path:
    path = folder / "cv.toml"
    path.write_text(CV_STUDY.format(source=source, cache_dir=folder / "cache"), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cross_validated(
    tmp_path_factory: pytest.TempPathFactory, _tiny_manifest_shared: pd.DataFrame
) -> tuple[Path, Path]:
    """(study file, study folder) of a 2-fold study on a folder per class, run once."""
    folder = tmp_path_factory.mktemp("cv")
    source = class_folders_of_every_image(_tiny_manifest_shared, folder / "cells")
    study = write_study(folder, source)
    result = run_study(read_study_file(study), folder / "out")
    assert not result.failed, result.failed
    return study, folder / "out"


def test_every_arm_and_seed_runs_on_every_fold(cross_validated: tuple[Path, Path]) -> None:
    _, out = cross_validated
    folders = sorted(p.name for p in (out / "arms").iterdir())
    assert folders == sorted(f"{name}-s0-f{fold}" for name in NAMES for fold in (0, 1))
    info = json.loads((out / "arms" / "resnet18-flip-full-s0-f1" / "arm.json").read_text())
    assert info["spec"]["fold"] == 1 and info["name"] == "resnet18-flip-full"


def test_folds_are_subject_level_and_recorded(cross_validated: tuple[Path, Path]) -> None:
    _, out = cross_validated
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["cv"] == {"folds": 2, "seed": 0, "strategy": "subject"}
    fold_subjects = [set(subjects) for subjects in dataset["fold_subjects"].values()]
    assert len(fold_subjects) == 2 and not fold_subjects[0] & fold_subjects[1]
    assert set(dataset["counts"]) == {"fold 0", "fold 1"}
    for fold in dataset["counts"].values():  # stratified: both classes in every test fold
        assert fold["ALL"]["images"] > 0 and fold["HEM"]["images"] > 0
    for fold in (0, 1):
        predictions = pd.read_csv(
            out / "arms" / f"resnet18-none-full-s0-f{fold}" / "predictions.csv"
        )
        test_subjects = set(predictions.loc[predictions["split"] == "test", "subject"].astype(str))
        assert test_subjects == fold_subjects[fold]
        trained_on = set(predictions.loc[predictions["split"] == "val", "subject"].astype(str))
        assert not trained_on & test_subjects


def test_out_of_fold_predictions_cover_every_image_once(
    cross_validated: tuple[Path, Path], _tiny_manifest_shared: pd.DataFrame
) -> None:
    _, out = cross_validated
    oof = pd.read_csv(out / "out_of_fold.csv")
    for name in NAMES:
        rows = oof[oof["name"] == name]
        assert len(rows) == len(_tiny_manifest_shared)
        assert rows["image_id"].is_unique
        assert set(rows["fold"]) == {0, 1}


def test_report_shows_folds_and_the_pooled_verdict(cross_validated: tuple[Path, Path]) -> None:
    _, out = cross_validated
    verdicts = pd.read_csv(out / "verdicts.csv")
    assert list(verdicts["arm"]) == ["resnet18-flip-full"]
    oof = pd.read_csv(out / "out_of_fold.csv")
    assert verdicts["n_subjects"].iloc[0] == oof.loc[oof["name"] == NAMES[0], "subject"].nunique()
    folds = pd.read_csv(out / "fold_metrics.csv")
    assert set(folds["fold"].astype(str)) == {"0", "1", "pooled"}
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "per cross-validation fold and pooled out of fold" in html
    assert "Pooled (out of fold)" in html and "Cross-validation (2 folds" in html


def test_resume_reruns_only_the_missing_fold(
    cross_validated: tuple[Path, Path], _tiny_manifest_shared: pd.DataFrame
) -> None:
    study, out = cross_validated
    lost = out / "arms" / "resnet18-flip-full-s0-f1"
    shutil.rmtree(lost)  # as if the run was killed before this fold's arm
    damaged = out / "arms" / "resnet18-none-full-s0-f0"
    (damaged / "predictions.csv").unlink()  # killed while writing its results
    before = (out / "arms" / "resnet18-none-full-s0-f1" / "checkpoint.pt").stat().st_mtime_ns
    result = run_study(read_study_file(study), out)
    status = {o.arm_id: o.status for o in result.outcomes}
    assert status == {
        "resnet18-none-full-s0-f0": "complete",
        "resnet18-flip-full-s0-f0": "skipped",
        "resnet18-none-full-s0-f1": "skipped",
        "resnet18-flip-full-s0-f1": "complete",
    }
    assert (
        out / "arms" / "resnet18-none-full-s0-f1" / "checkpoint.pt"
    ).stat().st_mtime_ns == before
    assert len(pd.read_csv(out / "out_of_fold.csv")) == len(NAMES) * len(_tiny_manifest_shared)


def test_another_fold_count_is_an_error_unless_forced(cross_validated: tuple[Path, Path]) -> None:
    study, out = cross_validated
    text = study.read_text(encoding="utf-8").replace("cv_folds = 2", "cv_folds = 3")
    with pytest.raises(ConfigError, match="another data set or split"):
        run_study(parse_study(tomllib.loads(text)), out)


def test_folds_expand_the_plan(tmp_path: Path) -> None:
    config = parse_study(
        {
            "study": {"seeds": [0, 1]},
            "data": {"source": str(tmp_path), "cv_folds": 3},
            "models": {"resnet18": {}},
            "regimes": {
                "full": {},
                "tune": {"kind": "freeze_backbone", "init_from": "resnet18-none-full"},
            },
        }
    )
    arms = expand_arms(config, tmp_path / "arms")
    assert len(arms) == 2 * 3 * 2
    tuned = next(a for a in arms if a.arm_id == "resnet18-none-tune-s1-f2")
    assert tuned.depends_on == "resnet18-none-full-s1-f2" and tuned.spec.fold == 2
    assert len({a.spec.config_hash() for a in arms}) == len(arms)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cv_folds": 2}, "embedded synthetic data set has its own test split"),
        ({"source": "cells", "cv_folds": 1}, "cv_folds"),
        ({"source": "cells", "cv_folds": 3, "test_fraction": 0.3}, "keep one of the two"),
    ],
)
def test_bad_fold_settings_are_config_errors(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_study({"data": data, "models": {"resnet18": {}}})


def test_a_data_set_with_its_own_test_split_is_refused(tmp_path: Path, tiny_cnmc: Path) -> None:
    study = write_study(tmp_path, tiny_cnmc)
    text = study.read_text(encoding="utf-8").replace('positive_class = "all"\n', "")
    study.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"already has a test split .* remove cv_folds"):
        run_study(read_study_file(study), tmp_path / "out")
