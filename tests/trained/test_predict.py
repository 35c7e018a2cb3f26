"""`leukaug predict`: the model card, loading an arm (checkpoint card or arm.json), collecting
inputs, and predictions that reproduce the arm's own predictions.csv."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from leukaug.arm.context import ArmContext, RunSettings
from leukaug.arm.model_card import MODEL_CARD_KEY, embed_model_card, model_card
from leukaug.arm.single import run_arm
from leukaug.arm.spec import ArmSpec
from leukaug.cli import app
from leukaug.core.errors import DataError
from leukaug.data import load_or_build_cache, read_dataset, split_manifest
from leukaug.stats.metrics import operating_threshold
from leukaug.trained.loader import load_trained_arm, read_arm_predictions
from leukaug.trained.predict import OUTPUT_COLUMNS, collect_inputs, predict_images

ARM_SIZE = 72  # custom_cnn's minimum


def train_tiny_arm(data_root: Path, work: Path) -> tuple[Path, pd.DataFrame]:
    """A one-epoch custom_cnn arm on the tiny synthetic tree; returns (arm folder, manifest)."""
    manifest = split_manifest(read_dataset(data_root).manifest, "subject", val_fraction=0.3, seed=0)
    cache = load_or_build_cache(manifest, ARM_SIZE, work / "cache")
    spec = ArmSpec(model="custom_cnn", image_size=ARM_SIZE, epochs=1, batch_size=8, lr=1e-3)
    arm_dir = work / "arms" / "tiny-arm"
    run_arm(
        spec, manifest, cache, ArmContext(arm_dir, "tiny-arm", "tiny", RunSettings(device="cpu"))
    )
    return arm_dir, manifest


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_cnmc) -> tuple[Path, pd.DataFrame]:
    return train_tiny_arm(tiny_cnmc, tmp_path_factory.mktemp("predict"))


def arm_copy(trained, tmp_path: Path, *, with_card: bool) -> Path:
    """A private copy of the trained arm: its checkpoint with the card `run_arm` embedded, or
    without one (as in arm folders written before checkpoints carried cards)."""
    arm_dir = tmp_path / "arms" / "tiny-arm"
    shutil.copytree(trained[0], arm_dir)
    if not with_card:
        checkpoint = arm_dir / "checkpoint.pt"
        saved = torch.load(checkpoint, weights_only=True)
        del saved[MODEL_CARD_KEY]
        torch.save(saved, checkpoint)
    return arm_dir


def test_run_arm_embeds_the_model_card_it_would_be_given(trained, tmp_path):
    arm_dir = arm_copy(trained, tmp_path, with_card=True)
    spec = ArmSpec.from_dict(json.loads((arm_dir / "arm.json").read_text())["spec"])
    expected = model_card(spec, read_arm_predictions(arm_dir), arm_id="tiny-arm", name="tiny")
    embedded = torch.load(arm_dir / "checkpoint.pt", weights_only=True)[MODEL_CARD_KEY]
    assert embedded == expected
    card = embedded | {"name": "renamed"}
    embed_model_card(arm_dir, card)  # replaces the card, keeps the weights
    saved = torch.load(arm_dir / "checkpoint.pt", weights_only=True)
    assert saved[MODEL_CARD_KEY]["name"] == "renamed" and "model" in saved


def own_images(arm_dir: Path, manifest: pd.DataFrame, split: str) -> tuple[list[Path], np.ndarray]:
    predictions = read_arm_predictions(arm_dir)
    rows = predictions[predictions["split"] == split]
    paths = manifest.set_index("image_id").loc[rows["image_id"], "path"]
    return [Path(p) for p in paths], rows["prob"].to_numpy()


@pytest.mark.parametrize("with_card", [True, False], ids=["checkpoint-card", "arm-json"])
def test_predicting_an_arms_test_images_reproduces_its_predictions(trained, tmp_path, with_card):
    arm_dir = arm_copy(trained, tmp_path, with_card=with_card)
    arm = load_trained_arm(arm_dir)
    assert arm.card_source == ("checkpoint" if with_card else "arm.json")
    paths, expected = own_images(arm_dir, trained[1], "test")
    table = predict_images(arm, paths, batch_size=5)  # another batch size than in training
    assert list(table.columns) == list(OUTPUT_COLUMNS)
    assert table["path"].tolist() == [str(p) for p in paths]
    np.testing.assert_allclose(table["prob"].to_numpy(), expected, rtol=0, atol=1e-5)
    assert (table["predicted"] == (table["prob"] >= arm.threshold)).all()


def test_tta_follows_the_card_unless_asked(trained, tmp_path):
    arm = load_trained_arm(arm_copy(trained, tmp_path, with_card=True))
    paths = own_images(tmp_path / "arms" / "tiny-arm", trained[1], "test")[0][:6]
    plain = predict_images(arm, paths)["prob"].to_numpy()
    views = predict_images(arm, paths, tta=True)["prob"].to_numpy()
    assert np.abs(plain - views).max() > 1e-6  # the 8 dihedral views change P(ALL)
    arm.card["tta"] = True  # an arm evaluated with TTA predicts with TTA by default
    np.testing.assert_array_equal(predict_images(arm, paths)["prob"].to_numpy(), views)


def test_the_card_is_the_reports_operating_threshold_and_the_arms_settings(trained, tmp_path):
    arm_dir = arm_copy(trained, tmp_path, with_card=True)
    card = torch.load(arm_dir / "checkpoint.pt", weights_only=True)[MODEL_CARD_KEY]
    predictions = read_arm_predictions(arm_dir)
    assert card["threshold"] == pytest.approx(operating_threshold(predictions))
    assert card["threshold_source"] == "val (Youden's J)"
    assert (card["model"], card["image_size"], card["head"]) == ("custom_cnn", ARM_SIZE, "linear")
    assert card["mean"] == [0.0, 0.0, 0.0] and card["std"] == [1.0, 1.0, 1.0]
    assert card["spec"]["epochs"] == 1 and card["leukaug_version"]
    without_val = model_card(ArmSpec(model="resnet18"), predictions[predictions["split"] == "test"])
    assert without_val["threshold"] == 0.5 and "no val" in without_val["threshold_source"]
    assert without_val["image_size"] == 224 and without_val["mean"] == pytest.approx(
        [0.485, 0.456, 0.406]
    )


def test_a_carded_checkpoint_needs_nothing_else(trained, tmp_path):
    arm_dir = arm_copy(trained, tmp_path, with_card=True)
    for name in ("arm.json", "predictions.csv", "history.csv", "metrics.json", "last.pt"):
        (arm_dir / name).unlink()
    arm = load_trained_arm(arm_dir)
    assert arm.card_source == "checkpoint" and arm.card["arm_id"] == "tiny-arm"


def test_an_arm_folder_without_checkpoint_or_arm_json_is_a_data_error(trained, tmp_path):
    with pytest.raises(DataError, match=r"checkpoint\.pt"):
        load_trained_arm(tmp_path)
    arm_dir = arm_copy(trained, tmp_path, with_card=False)
    (arm_dir / "arm.json").unlink()
    with pytest.raises(DataError, match=r"arm\.json"):
        load_trained_arm(arm_dir)
    (arm_dir / "arm.json").write_text(json.dumps({"spec": {"model": "custom_cnn", "colour": 1}}))
    with pytest.raises(DataError, match="does not fit this leukaug version"):
        load_trained_arm(arm_dir)


def test_collect_inputs_from_files_folders_and_csv(tmp_path, tiny_cnmc):
    images = sorted(tiny_cnmc.rglob("*.bmp"))[:3]
    folder = tmp_path / "folder" / "nested"
    folder.mkdir(parents=True)
    shutil.copy(images[0], folder / "a.bmp")
    (folder / "notes.txt").write_text("not an image")
    (tmp_path / "list").mkdir()
    shutil.copy(images[1], tmp_path / "list" / "b.bmp")
    csv = tmp_path / "list" / "inputs.csv"
    csv.write_text(f"path\nb.bmp\n{images[2]}\n")
    paths, ignored = collect_inputs([images[0], tmp_path / "folder", csv])
    assert paths == [images[0], folder / "a.bmp", tmp_path / "list" / "b.bmp", images[2]]
    assert ignored == [folder / "notes.txt"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.bmp", "no such file"),
        (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "not an image"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "no image files"),
        (lambda d: (d / "l.csv").write_text("file\na.bmp\n") and d / "l.csv", "path"),
        (lambda d: (d / "l.csv").write_text("path\ngone.bmp\n") and d / "l.csv", "line 2"),
    ],
    ids=["missing", "not-an-image", "empty-folder", "csv-without-path", "csv-missing-image"],
)
def test_bad_inputs_name_the_file_and_the_fix(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        collect_inputs([make(tmp_path)])


def test_predict_command_writes_the_csv_and_states_the_threshold(trained, tmp_path):
    arm_dir = arm_copy(trained, tmp_path, with_card=True)
    paths, expected = own_images(arm_dir, trained[1], "val")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for path in paths:
        shutil.copy(path, inputs / path.name)
    (inputs / "Thumbs.db").write_bytes(b"\0")
    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(app, ["predict", str(arm_dir), str(inputs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    threshold = load_trained_arm(arm_dir).threshold
    assert f"operating threshold {threshold:.4f}" in output
    assert "Thumbs.db" in output  # ignored files are reported
    table = pd.read_csv(out)
    assert list(table.columns) == list(OUTPUT_COLUMNS)
    by_name = dict(zip([p.name for p in paths], expected, strict=True))
    got = dict(zip(table["path"].map(lambda p: Path(p).name), table["prob"], strict=True))
    assert got == pytest.approx(by_name, abs=1e-5)
    missing = CliRunner().invoke(
        app, ["predict", str(arm_dir), str(tmp_path / "nope"), "-o", str(out)]
    )
    assert isinstance(missing.exception, DataError)  # main() maps it to exit status 2


def test_predict_without_out_writes_the_csv_to_stdout_and_counts_in_words(trained, tmp_path):
    arm_dir = arm_copy(trained, tmp_path, with_card=True)
    paths, expected = own_images(arm_dir, trained[1], "test")
    result = CliRunner().invoke(app, ["predict", str(arm_dir), str(paths[0])])
    assert result.exit_code == 0, result.stderr
    table = pd.read_csv(io.StringIO(result.stdout))  # stdout is the CSV alone
    assert list(table.columns) == list(OUTPUT_COLUMNS) and len(table) == 1
    assert table["prob"].iloc[0] == pytest.approx(expected[0], abs=1e-5)
    assert table["threshold"].iloc[0] == pytest.approx(load_trained_arm(arm_dir).threshold)
    assert "1 image:" in result.stderr and "-> stdout" in result.stderr
