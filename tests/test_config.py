"""The study file: shipped studies load, typos get 'did you mean', bad values name key and range."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from leukaug.config import StudyConfig, dump_toml, load_study, parse_study
from leukaug.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_STUDIES = ROOT / "src" / "leukaug" / "studies"
STUDY_NAMES = ("paper", "epochs", "extended", "demo")

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
    config = load_study(ROOT / "studies" / f"{name}.toml")
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
        (MINIMAL + "[data]\nval_fracton = 0.1\n", "Did you mean 'val_fraction'?"),
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
        ("[models.custom_cn]\n", "Unknown model 'custom_cn'. Did you mean 'custom_cnn'?"),
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


def test_load_study_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[study\nname = 1\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_study(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(tmp_path / "missing.toml")


def test_dump_toml_writes_nested_tables_and_arrays() -> None:
    data = {
        "a": 1,
        "b": {"c": 'x"y', "d": [1.5, True], "e": {}},
        "items": [{"name": "one", "params": {"k": 2}}],
    }
    assert tomllib.loads(dump_toml(data)) == data
