"""Experiment tracking: TensorBoard event files read back with EventAccumulator, and an
MLflow run in a local file store, from plain per-epoch records and an arm's predictions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from leukaug.arm.spec import ArmSpec
from leukaug.arm.tracking import (
    MLflowTracker,
    TensorBoardTracker,
    build_trackers,
    final_metrics,
    flat_params,
)
from leukaug.augment import AugmentationSpec
from leukaug.core.errors import ConfigError

SPEC = ArmSpec(
    model="custom_cnn",
    image_size=72,
    epochs=3,
    augmentations=(AugmentationSpec("flip"), AugmentationSpec("rotate", {"degrees": 90})),
)
RECORDS = [
    {"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5 + 0.1 * e, "val_loss": 1.5 / e,
     "val_accuracy": 0.4 + 0.1 * e, "lr": 1e-4, "seconds": 2.0 + e}
    for e in (1, 2, 3)
]  # fmt: skip


def fake_predictions(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for split, n in (("val", 20), ("test", 30)):
        label = np.arange(n) % 2
        prob = np.clip(0.3 + 0.4 * label + rng.normal(0, 0.2, n), 0.01, 0.99)
        frames.append(
            pd.DataFrame({"split": split, "image_id": [f"{split}/{i}.bmp" for i in range(n)],
                          "subject": [f"s{i % 5}" for i in range(n)], "label": label, "prob": prob})
        )  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def write_arm_files(arm_dir, predictions):
    arm_dir.mkdir(parents=True, exist_ok=True)
    (arm_dir / "arm.json").write_text(json.dumps({"arm_id": arm_dir.name, "spec": SPEC.to_dict()}))
    pd.DataFrame(RECORDS).to_csv(arm_dir / "history.csv", index=False)
    predictions.to_csv(arm_dir / "predictions.csv", index=False)


def test_flat_params_are_scalars_and_name_the_augmentations():
    params = flat_params(SPEC)
    assert params["augmentations"] == "flip+rotate:degrees=90"
    assert params["init_from"] == "none" and params["epochs"] == 3
    assert all(isinstance(v, str | int | float | bool) for v in params.values())


def test_final_metrics_per_split_with_the_operating_threshold():
    predictions = fake_predictions()
    metrics = final_metrics(predictions)
    test = predictions[predictions["split"] == "test"]
    assert metrics["test/accuracy"] == pytest.approx(
        ((test["prob"] >= 0.5) == test["label"]).mean()
    )
    assert {"val/auc", "test/auc", "operating_threshold"} <= set(metrics)


def test_tensorboard_event_files_hold_scalars_curves_and_hparams(tmp_path):
    arm_dir = tmp_path / "arms" / "arm-0"
    predictions = fake_predictions()
    write_arm_files(arm_dir, predictions)
    tracker = TensorBoardTracker(arm_dir)
    for record in RECORDS:
        tracker.on_epoch(record)
    tracker.on_end(arm_dir, predictions, SPEC)
    assert list(arm_dir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(arm_dir), size_guidance={"tensors": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    val_loss = events.Scalars("loss/val")
    assert [e.step for e in val_loss] == [1, 2, 3]
    assert [e.value for e in val_loss] == pytest.approx([r["val_loss"] for r in RECORDS])
    assert {"accuracy/train", "optim/lr", "time/epoch_seconds"} <= set(tags["scalars"])
    assert {"pr_curve/val", "pr_curve/test"} <= set(tags["tensors"])
    assert tags["images"] == ["curves/roc_pr"]
    assert events.Scalars("test/auc")[0].value == pytest.approx(
        final_metrics(predictions)["test/auc"]
    )
    hparams = events.PluginTagToContent("hparams")
    assert hparams and any(b"augmentations" in content for content in hparams.values())


@pytest.mark.slow
def test_mlflow_file_store_run_holds_metrics_params_and_artefacts(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    arm_dir = tmp_path / "arms" / "arm-0"
    predictions = fake_predictions()
    write_arm_files(arm_dir, predictions)
    uri = f"file:{tmp_path / 'mlruns'}"
    tracker = MLflowTracker(uri, run_name="arm-0", experiment="tiny")
    for record in RECORDS:
        tracker.on_epoch(record)
    tracker.on_end(arm_dir, predictions, SPEC)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "arm-0"
    history = sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)
    assert [m.step for m in history] == [r["epoch"] for r in RECORDS]
    assert [m.value for m in history] == pytest.approx([r["val_loss"] for r in RECORDS])
    assert run.data.metrics["test/accuracy"] == pytest.approx(
        final_metrics(predictions)["test/accuracy"]
    )
    assert run.data.params["augmentations"] == "flip+rotate:degrees=90"
    artefacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"arm.json", "history.csv", "predictions.csv", "curves_roc_pr.png"} <= artefacts


def test_build_trackers_follows_the_settings(tmp_path):
    assert build_trackers(tmp_path, arm_id="a", tensorboard=False) == []
    trackers = build_trackers(tmp_path, arm_id="a", mlflow_uri=f"file:{tmp_path / 'mlruns'}")
    assert [type(t) for t in trackers] == [TensorBoardTracker, MLflowTracker]


def test_mlflow_missing_names_the_extra(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"leukaug\[mlflow\]"):
        MLflowTracker("file:/tmp/never", run_name="a")
