"""One arm: its spec (`ArmSpec`), and `run_arm`, which trains and evaluates it into its folder.

`ArmSpec` is the one source of truth for an arm's settings: its fields, defaults
(`ARM_DEFAULTS`) and allowed values (`CHOICES`, `OPTIMIZERS`) are what the study file's
sections (`config.py`) and the `leukaug train` options derive from.

The folder (`arms/<arm_id>/`, see `layout.ArmFolder`) holds `arm.json`, `history.csv`,
`predictions.csv`, `metrics.json`, `checkpoint.pt` and `last.pt`, every one written
atomically; see ARCHITECTURE.md for the contract.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from leukaug.arm import checkpoints
from leukaug.arm.batches import Pipeline, SplitImages, make_pipeline, place_store, resolve_device
from leukaug.arm.context import ArmContext
from leukaug.arm.lifecycle import (
    OPTIONAL_FAILURES,
    PREDICTION_SPLITS,
    ArmResult,
    check_folder,
    failure_record,
    now,
    running_record,
)
from leukaug.arm.loop import (
    EpochRecord,
    TrainingCallbacks,
    class_weights,
    eval_batch_size,
    evaluate,
    fit,
)
from leukaug.arm.model_card import embed_model_card, model_card
from leukaug.arm.network import build_model, make_optimizer
from leukaug.arm.spec import ArmSpec
from leukaug.arm.tracking import GuardedTracker, build_trackers
from leukaug.augment import build_augmenter
from leukaug.core import atomic
from leukaug.core.errors import ConfigError, DataError
from leukaug.core.layout import STATUS_COMPLETE, ArmFolder
from leukaug.data.cache import ImageCache
from leukaug.models import model_info
from leukaug.stats.metrics import arm_metrics


def _split(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    return frame[frame["split"] == name]


def _split_images(store: Any, cache: ImageCache, frame: pd.DataFrame) -> SplitImages:
    rows = np.asarray(cache.rows(list(frame["image_id"])), dtype=np.int64)
    return SplitImages(store, rows, frame["label"].to_numpy(dtype=np.int64))


def predict(
    model: nn.Module,
    split_manifest: pd.DataFrame,
    store: np.ndarray | torch.Tensor,
    cache: ImageCache,
    pipeline: Pipeline,
    *,
    batch_size: int,
    tta: bool = False,
) -> pd.DataFrame:
    """`predictions.csv` rows (split,image_id,subject,label,prob) for val then test, each in
    manifest order; every row's label and subject come from the manifest row of its image_id."""
    frames = []
    for split_name in PREDICTION_SPLITS:
        frame = _split(split_manifest, split_name)
        data = _split_images(store, cache, frame)
        prob = evaluate(model, data, pipeline, batch_size=batch_size, tta=tta)["prob"]
        columns = {"split": split_name, "image_id": frame["image_id"].to_numpy()}
        columns |= {"subject": frame["subject"].to_numpy(), "label": data.labels, "prob": prob}
        frames.append(pd.DataFrame(columns))
    return pd.concat(frames, ignore_index=True)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def run_arm(
    spec: ArmSpec, split_manifest: pd.DataFrame, cache: ImageCache, context: ArmContext
) -> ArmResult:
    """Train and evaluate one arm into `context.out_dir` (the arm's own folder,
    `arms/<arm_id>/` in a study).

    Returns at once when the folder is complete with the same config hash; resumes from
    `last.pt` when it was interrupted; raises ConfigError when it holds another config.
    `context.callbacks` receive the arm's per-batch and per-epoch records (labelled
    `arm_id`); of its `RunSettings`, `crop` (the data's central crop) goes into the
    checkpoint's model card, `tensorboard` and `mlflow_uri` ask for the trackers of
    `leukaug.arm.tracking`, and `checkpoint_interval_s` says how often the resume state is
    written (`checkpoints.SaveSchedule`; None: auto). A damaged `last.pt` / `checkpoint.pt`
    is set aside (listed in arm.json's `damaged_files`) and the arm restarts from its last
    good state.
    """
    out_dir, arm_id, name, settings = (
        context.out_dir,
        context.arm_id,
        context.name,
        context.settings,
    )
    folder = ArmFolder(out_dir)
    config_hash = spec.config_hash()
    previous, finished = check_folder(spec, folder, arm_id, name)
    if finished is not None:
        return finished
    if "split" not in split_manifest.columns:
        raise DataError(
            "run_arm needs a manifest with a 'split' column (see leukaug.data.split_manifest)."
        )

    info = model_info(spec.model)
    image_size = spec.resolved_image_size
    if tuple(cache.images.shape[1:]) != (image_size, image_size, 3):
        raise ConfigError(
            f"the cache holds {tuple(cache.images.shape[1:])} images but arm {arm_id!r} needs "
            f"({image_size}, {image_size}, 3); build it with load_or_build_cache(..., size={image_size})."
        )
    torch_device = resolve_device(settings.device)
    damaged = (previous or {}).get("damaged_files", []) + checkpoints.set_aside_damaged(folder)
    arm_json = running_record(spec, arm_id, name, _device_name(torch_device), previous)
    if damaged:
        arm_json["damaged_files"] = damaged

    pipeline = make_pipeline(torch_device, info.mean, info.std)
    store = place_store(cache.images, torch_device)
    train, val = (_split_images(store, cache, _split(split_manifest, s)) for s in ("train", "val"))
    model = build_model(spec, image_size).to(torch_device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, spec)
    augmenter = None
    if spec.augmentations:
        augmenter = build_augmenter(
            list(spec.augmentations), p=spec.aug_p, mode=spec.aug_mode, image_size=image_size
        )
    atomic.write_json(folder.arm_json, arm_json)  # once the model and optimiser could be built
    trackers = [
        GuardedTracker(t)
        for t in build_trackers(  # tracking is an extra
            out_dir,
            arm_id=arm_id,
            tensorboard=settings.tensorboard,
            mlflow_uri=settings.mlflow_uri or None,
        )
    ]
    history = fit(
        model, optimizer, train, val, pipeline, out_dir,
        epochs=spec.epochs, seed=spec.seed, batch_size=spec.batch_size,
        weights=class_weights(train.labels, spec.class_weighting), augmenter=augmenter,
        early_stopping_patience=spec.early_stopping_patience, config_hash=config_hash,
        callbacks=_with_trackers(context.callbacks, trackers), label=arm_id,
        checkpoint_interval_s=settings.checkpoint_interval_s, checkpoint_meta={"spec": spec.to_dict()},
    )  # fmt: skip

    best = checkpoints.read_checkpoint(folder.checkpoint)
    checkpoints.load_weights(model, best, folder.checkpoint)
    eval_batch = eval_batch_size(spec.batch_size, torch_device)
    predictions = predict(
        model, split_manifest, store, cache, pipeline, batch_size=eval_batch, tta=spec.tta
    )
    atomic.write_csv(folder.predictions, predictions)
    metrics = arm_metrics(predictions) if len(predictions) else {}
    atomic.write_json(folder.metrics, metrics)
    stain = cache.stain.to_dict() if cache.stain is not None else None
    card = model_card(spec, predictions, crop=settings.crop, stain=stain, arm_id=arm_id, name=name)
    embed_model_card(out_dir, card)
    for tracker in trackers:
        tracker.on_end(out_dir, predictions, spec)
    failures = [failure_record(t.step, t.error) for t in trackers if t.error is not None]
    if failures:  # tracking is an extra: recorded, the arm is complete
        arm_json[OPTIONAL_FAILURES] = failures
    atomic.write_json(folder.arm_json, arm_json | {"status": STATUS_COMPLETE, "finished_at": now()})
    return ArmResult(
        arm_id, name, out_dir, config_hash, history, predictions, metrics, skipped=False
    )


def _with_trackers(
    callbacks: TrainingCallbacks | None, trackers: list[GuardedTracker]
) -> TrainingCallbacks | None:
    """`callbacks` plus every tracker fed each epoch's `history.csv` row."""
    if not trackers:
        return callbacks
    on_epoch = callbacks.on_epoch if callbacks is not None else None

    def epoch_done(record: EpochRecord) -> None:
        for tracker in trackers:
            tracker.on_epoch(record.history_row())
        if on_epoch is not None:
            on_epoch(record)

    on_batch = callbacks.on_batch if callbacks is not None else None
    return TrainingCallbacks(on_epoch=epoch_done, on_batch=on_batch)
