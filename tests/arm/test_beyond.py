"""Issue 12 in studies: the arm kinds (region-bagged networks, cell features + boosting),
Grad-CAM artefacts of every CNN arm, and the report's 'looks at the background' flag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leukaug.arm.bagged import combine_members, member_history, member_seed, region_cache
from leukaug.arm.kinds import ARM_KINDS, check_kind_options, check_spec, expand_regions
from leukaug.arm.loop import HISTORY_COLUMNS
from leukaug.arm.spec import ArmSpec
from leukaug.core.errors import ConfigError
from leukaug.core.layout import ArmFolder, StudyFolder
from leukaug.data.cache import ImageCache
from leukaug.data.regions import QUADRANTS
from leukaug.data.synth import sample_cells
from leukaug.models import get_model
from leukaug.report.cams import cam_notes, cam_summary, cam_table
from leukaug.report.figures import FOREST_METRICS, forest_plot
from leukaug.stats.metrics import PREDICTION_COLUMNS
from leukaug.stats.pairs import plan_references
from leukaug.stats.study_results import ArmResults, Study, load_study_results
from leukaug.study.plan import expand_arms
from leukaug.study.run import run_study
from leukaug.study.study_file import read_study_file
from leukaug.trained.arm_cams import CAM_GROUP_CELLS, cam_cells, cam_layer
from leukaug.trained.explain import target_layer

ROOT = Path(__file__).resolve().parents[2]

TINY_BEYOND = """
[study]
name = "tiny_beyond"
seeds = [0]
baseline = "none"
device = "cpu"
pairs = [
  {{ arm = "bagged-none-full", reference = "custom_cnn-none-full" }},
  {{ arm = "features_gbm-none-full", reference = "custom_cnn-none-full" }},
]

[data]
dir = "{data_dir}"
cache_dir = "{cache_dir}"

[data.synth]
size = 72
subjects_per_class = 3
test_subjects_per_class = 2
cells_per_subject = 4

[training]
image_size = 72
epochs = 1
batch_size = 16

[models.custom_cnn]

[models.bagged]
model = "custom_cnn"
kind = "bagged_regions"
regions = ["nucleus", "perimeter"]

[models.features_gbm]
kind = "features"

[augmentations]
none = []
flip = ["flip"]

[regimes.full]
"""


def tiny_config(tmp_path: Path, text: str = TINY_BEYOND) -> Path:
    path = tmp_path / "beyond.toml"
    body = text.format(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    path.write_text(body, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- config


def test_the_three_kinds_are_registered() -> None:
    assert ARM_KINDS.names() == ["bagged_regions", "features", "single"]
    assert [ARM_KINDS.get(k).cnn for k in ("bagged_regions", "features", "single")] == [
        True,
        False,
        True,
    ]


def test_regions_expand_and_refuse_unknown_or_repeated_names() -> None:
    assert expand_regions(["quadrants", "nucleus"]) == (*QUADRANTS, "nucleus")
    with pytest.raises(ConfigError, match="Did you mean 'nucleus'"):
        expand_regions(["nucleos"])
    with pytest.raises(ConfigError, match="top_left more than once"):
        expand_regions(["quadrants", "top_left"])


@pytest.mark.parametrize(
    ("kind", "model", "regions", "stacker", "message"),
    [
        ("bagged_regions", "custom_cnn", [], "mean", "needs regions"),
        ("single", "custom_cnn", ["nucleus"], "mean", "regions only apply"),
        ("single", "custom_cnn", [], "logistic", "stacker only applies"),
        ("features", "custom_cnn", [], "mean", "its model is 'features_gbm'"),
        ("bagged", "custom_cnn", [], "mean", "Did you mean 'bagged_regions'"),
    ],
)
def test_kind_options_are_checked(
    kind: str, model: str, regions: list[str], stacker: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_kind_options(kind, model, regions, stacker)


def test_features_arm_refuses_cnn_settings_it_would_ignore() -> None:
    spec = ArmSpec(model="features_gbm", kind="features", image_size=72, regime="freeze_backbone")
    with pytest.raises(ConfigError, match="regime = 'freeze_backbone' would be ignored"):
        check_spec(spec)
    with pytest.raises(ConfigError, match="needs an image size"):
        check_spec(ArmSpec(model="features_gbm", kind="features"))


def test_single_network_hash_is_unchanged_by_the_kind_fields() -> None:
    spec = ArmSpec(model="custom_cnn")
    assert "kind" not in spec.to_dict() and "regions" not in spec.to_dict()
    bagged = ArmSpec(model="custom_cnn", kind="bagged_regions", regions=["nucleus"])
    assert bagged.regions == ("nucleus",)
    assert ArmSpec.from_dict(bagged.to_dict()) == bagged
    assert bagged.config_hash() != spec.config_hash()


def test_study_file_accepts_timm_names_and_kinds(tmp_path: Path) -> None:
    text = TINY_BEYOND.replace(
        "[models.custom_cnn]", '[models.custom_cnn]\n\n[models.timm]\nmodel = "timm:resnet18"'
    )
    config = read_study_file(tiny_config(tmp_path, text))
    assert config.model_name("timm") == "timm:resnet18"
    arms = {arm.name: arm for arm in expand_arms(config, tmp_path / "arms")}
    assert arms["bagged-flip-full"].spec.kind == "bagged_regions"
    assert arms["bagged-flip-full"].spec.regions == ("nucleus", "perimeter")
    assert arms["features_gbm-none-full"].image_size == 72


def test_study_file_rejects_bad_kind_options(tmp_path: Path) -> None:
    text = TINY_BEYOND.replace('regions = ["nucleus", "perimeter"]', 'regions = ["nucleos"]')
    with pytest.raises(ConfigError, match=r"models\.bagged.*Did you mean 'nucleus'"):
        read_study_file(tiny_config(tmp_path, text))
    text = TINY_BEYOND.replace('kind = "features"', 'kind = "feature"')
    with pytest.raises(ConfigError, match="Did you mean 'features'"):
        read_study_file(tiny_config(tmp_path, text))


def test_packaged_beyond_study_is_valid_and_linked(tmp_path: Path) -> None:
    link = ROOT / "studies" / "beyond.toml"
    assert link.is_symlink() and link.resolve() == ROOT / "src/leukaug/studies/beyond.toml"
    config = read_study_file(link)
    arms = expand_arms(config, tmp_path / "arms")
    kinds = {arm.spec.kind for arm in arms}
    assert kinds == {"single", "bagged_regions", "features"}
    assert {arm.spec.model for arm in arms} >= {"custom_cnn", "custom_resnet", "features_gbm"}
    assert any(arm.spec.model.startswith("timm:") for arm in arms)
    assert len(config.study.seeds) == 3


# --------------------------------------------------------------------------- pieces


def test_member_seeds_differ_per_member_and_arm_seed() -> None:
    seeds = {member_seed(seed, index) for seed in range(3) for index in range(6)}
    assert len(seeds) == 18


def test_region_cache_resizes_every_region_to_the_arm_size(tmp_path: Path) -> None:
    images, _ = sample_cells(2, 72, seed=0)
    cache = ImageCache(images, [f"c{i}" for i in range(len(images))], 72, None, "fp", tmp_path)
    for region in (*QUADRANTS, "nucleus", "perimeter"):
        out = region_cache(cache, region)
        assert out.images.shape == images.shape and out.images.dtype == np.uint8
        assert out.image_ids == cache.image_ids and not out.images.flags.writeable
    perimeter = region_cache(cache, "perimeter").images
    assert (perimeter.max(axis=-1) > 10).sum() < (images.max(axis=-1) > 10).sum()


def test_cam_cells_takes_each_class_and_correctness_group() -> None:
    rng = np.random.default_rng(0)
    n = 200
    predictions = pd.DataFrame(
        {
            "split": ["test"] * n,
            "image_id": [f"i{k:03d}" for k in range(n)],
            "subject": "s",
            "label": rng.integers(0, 2, n),
            "prob": rng.random(n),
        }
    )
    cells = cam_cells(predictions)
    counts = cells.groupby(["label", "correct"]).size()
    assert len(counts) == 4 and (counts == CAM_GROUP_CELLS).all()
    only_right = predictions.assign(prob=predictions["label"].astype(float))
    assert cam_cells(only_right)["correct"].all()


def test_member_history_is_the_mean_per_epoch() -> None:
    one = pd.DataFrame([[1, 1.0, 0.5, 2.0, 0.5, 1e-4, 3.0]], columns=HISTORY_COLUMNS)
    two = one.assign(train_loss=3.0, seconds=5.0)
    history = member_history([one, two])
    assert list(history.columns) == HISTORY_COLUMNS
    assert history.loc[0, "train_loss"] == 2.0 and history.loc[0, "seconds"] == 8.0


def test_combine_means_or_stacks_on_validation_only() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 20)
    frames = []
    for split in ("val", "test"):
        frame = pd.DataFrame({"split": split, "image_id": [f"{split}{k}" for k in range(40)],
                              "subject": "s", "label": labels})  # fmt: skip
        good = np.clip(labels * 0.6 + 0.2 + rng.normal(0, 0.05, 40), 0, 1)
        frames.append((frame, {"a": good, "b": rng.random(40)}))
    mean = combine_members(
        ArmSpec(model="custom_cnn", kind="bagged_regions", regions=["a"]), frames
    )
    assert list(mean.columns) == list(PREDICTION_COLUMNS)
    np.testing.assert_allclose(
        mean["prob"], np.concatenate([(f[1]["a"] + f[1]["b"]) / 2 for f in frames])
    )
    spec = ArmSpec(model="custom_cnn", kind="bagged_regions", regions=["a"], stacker="logistic")
    stacked = combine_members(spec, frames)
    test = stacked[stacked["split"] == "test"]
    assert ((test["prob"] >= 0.5) == (test["label"] == 1)).mean() > 0.9
    shuffled = [
        (frames[0][0], frames[0][1]),
        (frames[1][0], {"a": frames[1][1]["b"], "b": frames[1][1]["a"]}),
    ]
    moved = combine_members(spec, shuffled)
    np.testing.assert_allclose(moved["prob"][:40], stacked["prob"][:40])  # fitted on val only


def test_cam_layer_keeps_a_map_of_several_pixels() -> None:
    model = get_model("custom_cnn", image_size=72)
    name, layer = cam_layer(model, 72)  # the last convolution is 1 x 1 at 72 px
    assert name == "layers.6" and layer is model.layers[6] and layer is not target_layer(model)
    model = get_model("custom_cnn", image_size=128)
    assert cam_layer(model, 128)[1] is target_layer(model)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def beyond_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study's folder: single, region-bagged and feature arms, with and without flips."""
    folder = tmp_path_factory.mktemp("beyond")
    result = run_study(read_study_file(tiny_config(folder)), folder / "out")
    if result.failed:
        raise RuntimeError(f"the tiny beyond study failed: {result.failed}")
    return folder / "out"


@pytest.mark.slow
def test_new_kinds_write_ordinary_arm_folders(beyond_study: Path) -> None:
    study = StudyFolder(beyond_study)
    for arm_id in ("bagged-none-full-s0", "bagged-flip-full-s0", "features_gbm-flip-full-s0"):
        folder = study.arm(arm_id)
        assert folder.is_complete()
        predictions = pd.read_csv(folder.predictions)
        assert list(predictions.columns) == list(PREDICTION_COLUMNS)
        assert set(predictions["split"]) == {"val", "test"}
        assert predictions["prob"].between(0, 1).all()
    bagged = study.arm("bagged-none-full-s0")
    members = sorted(p.name for p in (bagged.path / "members").iterdir())
    assert members == ["nucleus", "perimeter"]
    assert list(pd.read_csv(bagged.history).columns) == HISTORY_COLUMNS
    info = bagged.read_info()
    assert [m["region"] for m in info["members"]] == ["nucleus", "perimeter"]
    assert len({m["seed"] for m in info["members"]}) == 2
    member_probs = [
        pd.read_csv(ArmFolder(bagged.path / "members" / r).predictions)["prob"] for r in members
    ]
    np.testing.assert_allclose(
        pd.read_csv(bagged.predictions)["prob"], (member_probs[0] + member_probs[1]) / 2
    )
    features = study.arm("features_gbm-flip-full-s0").read_info()
    plain = study.arm("features_gbm-none-full-s0").read_info()
    assert features["classifier"]["training_cells"] == 2 * plain["classifier"]["training_cells"]


@pytest.mark.slow
def test_new_kinds_are_matched_and_reported(beyond_study: Path) -> None:
    plan = plan_references(load_study_results(beyond_study))
    pairs = {(p.arm, p.reference) for p in plan.pairs}
    assert ("bagged-flip-full", "bagged-none-full") in pairs
    assert ("features_gbm-flip-full", "features_gbm-none-full") in pairs
    assert ("bagged-none-full", "custom_cnn-none-full") in pairs
    assert ("features_gbm-none-full", "custom_cnn-none-full") in pairs
    verdicts = pd.read_csv(beyond_study / "verdicts.csv")
    assert {"bagged-none-full", "features_gbm-none-full"} <= set(verdicts["arm"])
    page = (beyond_study / "report.html").read_text(encoding="utf-8")
    assert "Where custom_cnn-none-full looks" in page and "Share on cell" in page
    assert "Where features_gbm-none-full looks" not in page  # no network, no CAM


@pytest.mark.slow
def test_cnn_arms_get_cam_artefacts(beyond_study: Path) -> None:
    study = StudyFolder(beyond_study)
    single = study.arm("custom_cnn-none-full-s0")
    cams = pd.read_csv(single.cam_csv)
    columns = ["image_id", "label", "prob", "correct", "foreground_share", "layer", "cell_mask"]
    assert list(cams.columns) == columns and set(cams["layer"]) == {"layers.6"}
    assert 0 < len(cams) <= 64 and cams["foreground_share"].between(0, 1).all()
    assert single.cam_overlays.is_file()
    bagged = pd.read_csv(study.arm("bagged-none-full-s0").cam_csv)
    assert set(bagged["member"]) == {"nucleus", "perimeter"}
    assert not study.arm("features_gbm-none-full-s0").cam_csv.exists()


# --------------------------------------------------------------------------- the report


def planted_study(tmp_path: Path, shares: dict[str, list[float]]) -> Study:
    """A study whose arms' cam.csv hold the given foreground shares (one arm per name)."""
    arms = []
    for name, values in shares.items():
        folder = StudyFolder(tmp_path).arm(f"{name}-s0")
        folder.path.mkdir(parents=True)
        pd.DataFrame({"image_id": [f"i{k}" for k in range(len(values))], "label": 1,
                      "prob": 0.9, "correct": True, "foreground_share": values,
                      "layer": "layers.6"}).to_csv(folder.cam_csv, index=False)  # fmt: skip
        arms.append(ArmResults(f"{name}-s0", name, 0, {}, pd.DataFrame(), None))
    return Study(tmp_path, arms)


def test_an_arm_looking_at_the_background_is_flagged(tmp_path: Path) -> None:
    study = planted_study(tmp_path, {"on_cell": [0.9, 0.8], "on_background": [0.3, 0.2, np.nan]})
    summary = cam_summary(study).set_index("name")
    assert summary.loc["on_cell", "mean_foreground_share"] == pytest.approx(0.85)
    assert summary.loc["on_background", "cells"] == 2  # an all-zero map has no share
    assert list(summary["flagged"]) == [False, True]
    (note,) = cam_notes(cam_summary(study))
    assert "'on_background' looks mostly at the background" in note and "0.25" in note
    table = cam_table(cam_summary(study))
    assert [row[-1] for row in table.rows] == ["", "looks mostly at the background"]
    assert cam_table(cam_summary(planted_study(tmp_path / "none", {}))) is None


def test_forest_plot_shows_an_arm_with_two_references_twice() -> None:
    """A bagged arm is compared with its unaugmented twin and with the single network."""
    rows = [
        {"arm": "bagged-flip", "reference": reference, "test": test, "metric": metric,
         "effect": 0.01, "ci_low": -0.02, "ci_high": 0.04, "p_adjusted": 0.5}
        for reference in ("bagged-none", "cnn-flip")
        for test, metric in FOREST_METRICS
    ]  # fmt: skip
    figure = forest_plot(pd.DataFrame(rows), "matched reference")
    labels = [tick.get_text() for tick in figure.axes[0].get_yticklabels()]
    assert sorted(labels) == ["bagged-flip vs bagged-none", "bagged-flip vs cnn-flip"]
