"""Matched references: each arm against the arm that differs from it only in its augmentations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from leukaug.core.errors import ConfigError
from leukaug.report import build_report
from leukaug.stats.pairs import match_key, plan_references
from leukaug.stats.study_results import load_study_results
from report_fixtures import make_study

PAPER_LIKE = """
[study]
name = "paper-like"
baseline = "none"

[models.custom_cnn]
[models.resnet50]

[augmentations]
none = []
flip = ["flip"]
noise = [{ name = "noise", std = 0.316 }]

[regimes.transfer]
[regimes.weighted]
"""


def _rename(study: Path, old: str, new: str, **spec: object) -> None:
    """Turn fixture arm `old` into grid arm `new` (model-augmentation-regime) with spec changes."""
    for folder in sorted((study / "arms").glob(f"{old}-s*")):
        seed = folder.name.rsplit("-s", 1)[1]
        target = study / "arms" / f"{new}-s{seed}"
        shutil.copytree(folder, target)
        info = json.loads((target / "arm.json").read_text())
        init_from = spec.get("init_from")
        changes = dict(spec)
        if isinstance(init_from, str):  # as the study writes it: the same seed's checkpoint
            changes["init_from"] = f"/runs/x/arms/{init_from}-s{seed}/checkpoint.pt"
        info.update(arm_id=target.name, name=new, spec={**info["spec"], **changes})
        (target / "arm.json").write_text(json.dumps(info))


@pytest.fixture
def paper_like(tmp_path: Path) -> Path:
    """Arms of two models and two regimes; transfer arms start from another arm."""
    study = make_study(
        tmp_path / "fixture",
        {"baseline": 0.3, "flip_rotate": 1.2, "noise": 0.3},
        seeds=(0, 1),
        failed=(),
        n_subjects={"val": 3, "test": 6},
        images_per_subject=5,
    )
    out = tmp_path / "paper"
    (out / "arms").mkdir(parents=True)
    shutil.copy(study / "dataset.json", out / "dataset.json")
    (out / "study.toml").write_text(PAPER_LIKE)
    moved = study.rename(tmp_path / "source")
    arms = [
        ("baseline", "custom_cnn-none-weighted", {}),
        ("flip_rotate", "custom_cnn-flip-weighted", {}),
        ("noise", "custom_cnn-noise-weighted", {}),
        ("baseline", "custom_cnn-none-transfer", {"regime": "freeze_first", "init_from": "p"}),
        ("flip_rotate", "custom_cnn-flip-transfer", {"regime": "freeze_first", "init_from": "p"}),
        ("noise", "custom_cnn-noise-transfer", {"regime": "freeze_first", "init_from": "q"}),
        ("baseline", "resnet50-none-weighted", {"model": "resnet50"}),
        ("flip_rotate", "resnet50-flip-weighted", {"model": "resnet50", "image_size": 128}),
    ]
    for old, new, spec in arms:
        _rename(moved, old, new, **spec)
        for folder in moved.glob(f"arms/{new}-s*"):
            shutil.move(folder, out / "arms" / folder.name)
    return out


def test_each_arm_gets_the_arm_that_differs_only_in_augmentations(paper_like: Path) -> None:
    plan = plan_references(load_study_results(paper_like))
    pairs = {p.arm: p.reference for p in plan.pairs}
    assert pairs == {
        "custom_cnn-flip-weighted": "custom_cnn-none-weighted",
        "custom_cnn-noise-weighted": "custom_cnn-none-weighted",
        "custom_cnn-flip-transfer": "custom_cnn-none-transfer",
    }
    # another initialisation, another image size: described, not tested
    assert "custom_cnn-noise-transfer" in plan.untested
    assert "resnet50-flip-weighted" in plan.untested
    assert "resnet50-none-weighted" in plan.unpaired_references
    assert plan.baseline == "none" and not plan.notes


def test_match_key_ignores_augmentations_and_seed_but_not_the_start() -> None:
    spec = {"model": "m", "augmentations": [], "aug_p": 0.33, "seed": 0, "init_from": None}
    flip = {**spec, "augmentations": [{"name": "flip", "params": {}}], "aug_p": 0.8, "seed": 2}
    assert match_key(spec) == match_key(flip)
    start = {**spec, "init_from": "/a/arms/cnn-none-pretrain-s0/checkpoint.pt"}
    same_start = {**flip, "init_from": "/b/arms/cnn-none-pretrain-s2/checkpoint.pt"}
    other = {**spec, "init_from": "/a/arms/cnn-noise-pretrain-s0/checkpoint.pt"}
    assert match_key(start) == match_key(same_start) != match_key(other)


def test_explicit_pairs_and_unknown_names(paper_like: Path) -> None:
    toml = paper_like / "study.toml"
    toml.write_text(
        toml.read_text()
        + '\n[[study.pairs]]\narm = "resnet50-flip-weighted"\nreference = "resnet50-none-weighted"\n'
        + '\n[[study.pairs]]\narm = "custom_cnn-flip-rotate"\nreference = "custom_cnn-none-weighted"\n'
    )
    plan = plan_references(load_study_results(paper_like))
    pairs = {(p.arm, p.reference, p.source) for p in plan.pairs}
    assert ("resnet50-flip-weighted", "resnet50-none-weighted", "pair") in pairs
    assert "resnet50-flip-weighted" not in plan.untested
    assert any("custom_cnn-flip-rotate" in note and "not tested" in note for note in plan.notes)
    with pytest.raises(ConfigError, match="Unknown augmentation or arm 'nnoe'"):
        plan_references(load_study_results(paper_like), "nnoe")


def test_an_arm_name_as_baseline_is_read_as_its_augmentation(paper_like: Path) -> None:
    plan = plan_references(load_study_results(paper_like), "custom_cnn-none-weighted")
    assert plan.baseline == "none"
    assert "custom_cnn-flip-transfer" in {p.arm for p in plan.pairs}
    assert 'Write `baseline = "none"`' in plan.notes[0]


@pytest.mark.slow
def test_a_missing_reference_seed_is_an_error_not_another_seed(tmp_path: Path) -> None:
    study = make_study(
        tmp_path / "s",
        {"baseline": 0.3, "flip_rotate": 1.5},
        seeds=(0, 1),
        failed=(),
        n_subjects={"val": 3, "test": 8},
        images_per_subject=6,
    )
    shutil.rmtree(study / "arms" / "baseline-s1")
    paths = build_report(study, n_resamples=50)
    assert pd.read_csv(paths["verdicts"]).empty
    summary = paths["summary"].read_text(encoding="utf-8")
    assert "Described, not tested: flip_rotate (against 'baseline':" in summary
    comparisons = pd.read_csv(paths["comparisons"])
    per_seed = comparisons[comparisons["level"] == "arm"]
    assert set(per_seed["arm_id"]) == {"flip_rotate-s0"}  # seed 1 is never paired with seed 0
    assert (per_seed["reference_id"] == "baseline-s0").all()


STUDY = """
[study]
{study}
[models.custom_cnn]
[training]
image_size = 72
[augmentations]
none = []
flip = ["flip"]
"""


@pytest.mark.parametrize(
    ("study", "expected"),
    [
        ('primary_metric = "f1"', "primary_metric"),
        ('[[study.pairs]]\narm = "a"', "exactly the keys 'arm' and 'reference'"),
        ('[[study.pairs]]\narm = "a"\nreference = "a"', "compares arm 'a' with itself"),
    ],
)
def test_study_file_checks_the_comparison_settings(study: str, expected: str) -> None:
    import tomllib

    from leukaug.study.study_file import parse_study

    with pytest.raises(ConfigError, match=expected):
        parse_study(tomllib.loads(STUDY.format(study=study)), "study.toml")


def test_study_runner_accepts_a_reference_augmentation_and_checks_names(tmp_path: Path) -> None:
    import tomllib

    from leukaug.study.plan import expand_arms
    from leukaug.study.study_file import parse_study

    def arms(study: str) -> list:
        return expand_arms(parse_study(tomllib.loads(STUDY.format(study=study))), tmp_path)

    assert len(arms('baseline = "none"\nprimary_metric = "log_loss"')) == 2
    assert len(arms('baseline = "custom_cnn-none-full"')) == 2  # an older file: an arm name
    with pytest.raises(ConfigError, match="Unknown augmentation or arm 'nnoe'"):
        arms('baseline = "nnoe"')
    with pytest.raises(ConfigError, match=r"study.pairs\[0\].reference: Unknown arm"):
        arms('[[study.pairs]]\narm = "custom_cnn-flip-full"\nreference = "custom_cnn-nne-full"')
