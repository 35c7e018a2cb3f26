"""The study file: shipped studies load, typos get 'did you mean', bad values name key and range."""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict
from pathlib import Path

import pytest
from pydantic import ValidationError

from leukaug.arm.spec import ARM_DEFAULTS, CHOICES, ArmSpec
from leukaug.augment import AugmentationSpec
from leukaug.core.errors import ConfigError
from leukaug.data.synth import SynthConfig
from leukaug.study.plan import expand_arms
from leukaug.study.prepare import embedded_data_dir, ensure_embedded_data
from leukaug.study.study_file import (
    ModelEntry,
    RegimeEntry,
    StudyConfig,
    TrainingSection,
    dump_toml,
    parse_study,
    read_study_file,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_STUDIES = ROOT / "src" / "leukaug" / "studies"
STUDY_NAMES = ("paper", "epochs", "extended", "demo", "beyond")

MINIMAL = """
[models.custom_cnn]
[training]
image_size = 96
"""


def parse(text: str) -> StudyConfig:
    return parse_study(tomllib.loads(text), "study.toml")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return str(caught.value)


@pytest.mark.parametrize("name", STUDY_NAMES)
def test_shipped_studies_load_and_round_trip(name: str) -> None:
    config = read_study_file(ROOT / "studies" / f"{name}.toml")
    assert parse_study(tomllib.loads(dump_toml(config.to_dict()))) == config


def test_top_level_studies_are_the_package_copies() -> None:
    """One copy: studies/*.toml are links to the package data that `leukaug demo` reads."""
    top = sorted(p.name for p in (ROOT / "studies").glob("*.toml"))
    packaged = sorted(p.name for p in PACKAGE_STUDIES.glob("*.toml"))
    assert top == packaged == sorted(f"{n}.toml" for n in STUDY_NAMES)
    for name in top:
        assert (ROOT / "studies" / name).resolve() == (PACKAGE_STUDIES / name).resolve()


def test_defaults_fill_a_minimal_study() -> None:
    config = parse(MINIMAL)
    assert config.study.seeds == [0]
    assert config.data.embedded and config.data.split == "subject"
    assert list(config.augmentations) == ["none"] and list(config.regimes) == ["full"]
    assert config.training.aug_p == pytest.approx(0.33)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "[executer]\nkind = 'ray'\n", "Did you mean 'executor'?"),
        (MINIMAL.replace("image_size", "image_sise"), "Did you mean 'image_size'?"),
        (MINIMAL + "[data]\nval_fracton = 0.1\n", "Did you mean 'val_fraction'"),
        (MINIMAL + "[data.synth]\ncells_per_subjet = 3\n", "Did you mean 'cells_per_subject'?"),
        (MINIMAL + "[augmentations]\na = [{ name = 'flip', nme = 1 }]\n", "Unknown parameter"),
    ],
)
def test_unknown_keys_suggest_the_right_one(text: str, expected: str) -> None:
    message = error_of(text)
    assert expected in message
    assert "study.toml" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[models.custom_cn]\n", "Unknown model 'custom_cn'. Did you mean 'custom_cnn'"),
        (
            MINIMAL + "[augmentations]\na = ['flp']\n",
            "Unknown augmentation 'flp'. Did you mean 'flip'",
        ),
        (
            MINIMAL + "[regimes.r]\nkind = 'ful'\n",
            "Unknown regime kind 'ful'. Did you mean 'full'?",
        ),
        (
            MINIMAL + "[[experiments]]\nregimes = ['fulll']\n",
            "Unknown regime 'fulll'. Did you mean 'full'?",
        ),
    ],
)
def test_unknown_names_list_the_valid_ones(text: str, expected: str) -> None:
    message = error_of(text)
    assert expected in message
    assert "Valid names:" in message


@pytest.mark.parametrize(
    ("text", "key", "value", "allowed"),
    [
        (MINIMAL + "epochs = 0\n", "training.epochs", "0", "greater than or equal to 1"),
        (MINIMAL + "aug_p = 1.5\n", "training.aug_p", "1.5", "less than or equal to 1"),
        (MINIMAL + "[data]\nval_fraction = 1.0\n", "data.val_fraction", "1.0", "less than 1"),
        (
            MINIMAL + "[data]\nsplit = 'patient'\n",
            "data.split",
            "'patient'",
            "'subject' or 'image'",
        ),
        (MINIMAL + "[executor]\nmax_retries = -1\n", "executor.max_retries", "-1", "greater than"),
        (MINIMAL.replace("96", "40"), "training.image_size", "40", "at least 72"),
    ],
)
def test_invalid_values_name_key_value_and_range(
    text: str, key: str, value: str, allowed: str
) -> None:
    message = error_of(text)
    assert key in message and value in message and allowed in message


def test_augmentation_parameters_are_validated_at_load() -> None:
    message = error_of(MINIMAL + "[augmentations]\nn = [{ name = 'noise', std = -1 }]\n")
    assert "augmentations.n" in message and "std" in message


def test_freeze_first_needs_a_layer_count() -> None:
    message = error_of(MINIMAL + "[regimes.t]\nkind = 'freeze_first'\n")
    assert "freeze_first >= 1" in message


def test_regime_overrides_stay_partial() -> None:
    config = parse(MINIMAL + "[regimes.long]\ntraining = { epochs = 20 }\n")
    overrides = config.regimes["long"].training
    assert overrides is not None and overrides.model_fields_set == {"epochs"}
    assert config.to_dict()["regimes"]["long"]["training"] == {"epochs": 20}


def test_synth_settings_only_with_embedded_data() -> None:
    message = error_of(MINIMAL + "[data]\nsource = '/data/cnmc'\n[data.synth]\nsize = 64\n")
    assert "[data.synth]" in message


def test_pretrained_needs_imagenet_weights() -> None:
    assert "no ImageNet weights" in error_of(MINIMAL.replace("]\n", "]\npretrained = true\n", 1))


def test_read_study_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[study\nname = 1\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        read_study_file(path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_study_file(tmp_path / "missing.toml")


def test_dump_toml_writes_nested_tables_and_arrays() -> None:
    data = {
        "a": 1,
        "b": {"c": 'x"y', "d": [1.5, True], "e": {}},
        "items": [{"name": "one", "params": {"k": 2}}],
    }
    assert tomllib.loads(dump_toml(data)) == data


def test_dump_toml_round_trips_control_characters_and_drops_none() -> None:
    hostile = 'tab\there\x01\x1f\x7f bell\x07 "quoted" back\\slash\nnew line'
    data = {"name": hostile, "skip": None, "root": Path("/data/x"), "sizes": (224, 299)}
    text = dump_toml(data)
    assert "\x01" not in text and "\x7f" not in text
    assert tomllib.loads(text) == {"name": hostile, "root": "/data/x", "sizes": [224, 299]}


# --------------------------------------------------------------------------- one source of truth


def test_config_hashes_of_existing_arms_are_stable() -> None:
    """Hashes computed before the settings moved to one place (arm folders on disk keep them)."""
    assert ArmSpec(model="custom_cnn").config_hash() == "2eddbdd8e99373f8"
    spec = ArmSpec(
        model="resnet18", pretrained=True, image_size=64,
        augmentations=(AugmentationSpec("flip", {}), AugmentationSpec("rotate", {"degrees": 90})),
        aug_p=0.5, regime="freeze_backbone", optimizer="sgd", lr=0.01, seed=3, tta=True,
        early_stopping_patience=2,
    )  # fmt: skip
    assert spec.config_hash() == "035d3ff6da3f6e3c"


def test_training_section_is_armspec_fields_with_armspec_defaults() -> None:
    training = TrainingSection()
    for name in TrainingSection.model_fields:
        assert getattr(training, name) == ARM_DEFAULTS[name], name
    for name in ("pretrained", "weights_path", "head", "image_size"):
        assert ModelEntry.model_fields[name].default == ARM_DEFAULTS[name], name
    assert RegimeEntry().class_weighting == ARM_DEFAULTS["class_weighting"]


@pytest.mark.parametrize("key", ["optimizer", "aug_mode"])
def test_the_study_file_allows_exactly_armspec_choices(key: str) -> None:
    for value in CHOICES[key]:
        assert getattr(TrainingSection(**{key: value}), key) == value
    with pytest.raises(ValidationError):
        TrainingSection(**{key: "not-a-choice"})


def test_a_default_study_arm_is_the_default_armspec() -> None:
    config = parse_study({"models": {"custom_cnn": {}}})
    (arm,) = expand_arms(config, "arms")
    assert arm.spec == ArmSpec(model="custom_cnn")
    assert arm.image_size == ArmSpec(model="custom_cnn").resolved_image_size


def test_a_regime_overrides_training_settings_for_its_arms_only() -> None:
    config = parse_study(
        {"models": {"custom_cnn": {}}, "training": {"epochs": 3, "lr": 0.01},
         "regimes": {"full": {}, "short": {"training": {"epochs": 1}}}}
    )  # fmt: skip
    specs = {arm.name: arm.spec for arm in expand_arms(config, "arms")}
    assert specs["custom_cnn-none-full"].epochs == 3
    assert specs["custom_cnn-none-short"].epochs == 1
    assert specs["custom_cnn-none-short"].lr == 0.01


def test_synth_settings_added_later_keep_the_data_folders_generated_before(
    tmp_path: Path,
) -> None:
    """A data set generated before `test_stain_shift_fraction` existed records no such key:
    at its default the folder name and the recorded settings still match."""
    plain = parse(MINIMAL + f"[data]\ncache_dir = '{tmp_path}'\n[data.synth]\nsize = 24\n")
    settings = {**asdict(SynthConfig(size=24))}
    del settings["test_stain_shift_fraction"]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    assert embedded_data_dir(plain) == tmp_path / f"embedded-{digest}"
    root = embedded_data_dir(plain)
    root.mkdir()
    (root / "synthetic_config.json").write_text(json.dumps({"config": settings}))
    assert ensure_embedded_data(plain) == root  # accepted as is, nothing regenerated
    half = parse(
        MINIMAL + f"[data]\ncache_dir = '{tmp_path}'\n"
        "[data.synth]\nsize = 24\ntest_stain_shift_fraction = 0.5\n"
    )
    assert embedded_data_dir(half) != root
