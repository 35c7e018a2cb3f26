"""The baseline that keeps CNNs honest (issue 19): on user data a study includes the
`features` arm by default, once, without changing the other arms; `sanity_baseline = false`
and embedded data leave the study as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from leukaug.core.errors import ConfigError
from leukaug.study.dry_run import preview_study
from leukaug.study.plan import SANITY_EXPERIMENT, expand_arms, with_sanity_baseline
from leukaug.study.study_file import parse_study

USER_STUDY = {
    "study": {"seeds": [0, 1], "device": "cpu"},
    "data": {"source": "/data/my-cells"},
    "training": {"epochs": 1},
    "models": {"custom_cnn": {"image_size": 72}, "small": {"model": "timm:resnet10t"}},
    "augmentations": {"flip": ["flip"]},
    "regimes": {"plain": {"kind": "full", "class_weighting": "none"}},
}


def arm_ids(config, tmp_path: Path) -> list[str]:
    return [arm.arm_id for arm in expand_arms(config, tmp_path / "arms")]


def test_user_data_gets_one_features_arm_per_seed_and_the_others_stay(tmp_path):
    written = parse_study(USER_STUDY)
    config = with_sanity_baseline(written)
    ids = arm_ids(config, tmp_path)
    assert set(arm_ids(written, tmp_path)) < set(ids)
    added = sorted(set(ids) - set(arm_ids(written, tmp_path)))
    # the plain, unaugmented variant: "none" and "full" are added because the study had neither
    assert added == ["features_gbm-none-full-s0", "features_gbm-none-full-s1"]
    spec = next(a.spec for a in expand_arms(config, tmp_path) if a.name == "features_gbm-none-full")
    assert spec.kind == "features" and spec.image_size == 72  # the first model's size
    assert config.experiments[-1].name == SANITY_EXPERIMENT
    assert with_sanity_baseline(config) == config  # a resumed study adds nothing more


def test_existing_plain_labels_and_training_size_are_reused(tmp_path):
    data = USER_STUDY | {
        "training": {"epochs": 1, "image_size": 64},
        "augmentations": {"base": [], "flip": ["flip"]},
        "regimes": {"full": {}},
    }
    ids = arm_ids(with_sanity_baseline(parse_study(data)), tmp_path)
    assert "features_gbm-base-full-s0" in ids and "custom_cnn-flip-full-s0" in ids
    assert len(ids) == 2 * (2 * 2 + 1)  # 2 models x 2 augmentations, + the baseline, x 2 seeds


def test_off_switch_embedded_data_and_an_existing_features_arm_change_nothing():
    off = parse_study(USER_STUDY | {"study": {"seeds": [0], "sanity_baseline": False}})
    embedded = parse_study(USER_STUDY | {"data": {}})
    own = parse_study(
        USER_STUDY
        | {"models": {"custom_cnn": {}, "f": {"model": "features_gbm", "kind": "features"}}}
    )
    for config in (off, embedded, own):
        assert with_sanity_baseline(config) is config
    with pytest.raises(ConfigError, match="sanity_baseline"):
        parse_study(USER_STUDY | {"study": {"sanity_baselin": False}})


def test_the_dry_run_lists_the_baseline(tmp_path, tiny_cnmc):
    config = parse_study(USER_STUDY | {"data": {"source": str(tiny_cnmc)}})
    preview = preview_study(config, tmp_path / "out")
    assert {"features_gbm-none-full-s0", "features_gbm-none-full-s1"} <= {
        arm.arm_id for arm in preview.arms
    }
