"""The training loop: plain functions `train_one_epoch`, `evaluate` and `fit`.

One logit per image, `BCEWithLogits` with per-sample class weights (the optimiser is the
arm's; see `arm.OPTIMIZERS`). The validation loss that selects the best checkpoint is the
same class-weighted loss. Every random stream is seeded per (seed, epoch), so a run resumed
from `last.pt` ends bit-identical to an uninterrupted one on CPU. `leukaug.arm` builds one
arm's model and data and calls these.

`fit` reports progress only through `TrainingCallbacks`: `on_batch(BatchProgress)` every
SYNC_EVERY batches and `on_epoch(EpochRecord)` after each epoch. `EpochRecord` is the public
per-epoch record that progress displays, log lines and experiment trackers consume.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from leukaug.arm import checkpoints
from leukaug.arm.batches import (
    AUGMENT_STREAM,
    DROPOUT_STREAM,
    AugmentFn,
    Pipeline,
    SplitImages,
    batch_starts,
    epoch_order,
    fetch,
    prepare,
    stream_seed,
    training_batches,
)
from leukaug.arm.callbacks import (  # re-exported: fit's callback types live there
    HISTORY_COLUMNS,
    BatchProgress,
    EpochRecord,
    TrainingCallbacks,
)
from leukaug.arm.checkpoints import FrozenWeights, SaveSchedule, weights_entry
from leukaug.core import atomic
from leukaug.core.errors import ConfigError, DataError, TrainingError
from leukaug.core.layout import ArmFolder
from leukaug.stats.metrics import DEFAULT_THRESHOLD, predicted_all

# What last.pt keeps besides weights, optimiser, RNG and history: the early-stopping state.
RESUME_KEYS = ("best_val_loss", "best_epoch", "bad_epochs", "stopped")


# Loss values are pulled from the device every this many batches (a sync; also the
# granularity of `on_batch`). The NaN check still names the exact batch.
SYNC_EVERY = 8

# Evaluation batch on CUDA: without gradients a larger batch costs little memory and launches
# far fewer kernels (issue 9: batch 16 left an H100 20-41% busy). Not yet measured on a GPU
# (benchmarks/gpu_paper.py). On CPU evaluation keeps the training batch, so CPU results stay
# bit-identical to those of earlier versions.
CUDA_EVAL_BATCH = 256


def eval_batch_size(batch_size: int, device: torch.device) -> int:
    """The evaluation batch: the training batch on CPU, at least CUDA_EVAL_BATCH on CUDA."""
    return max(batch_size, CUDA_EVAL_BATCH) if device.type == "cuda" else batch_size


def class_weights(labels: np.ndarray, mode: str = "balanced") -> torch.Tensor:
    """Loss weight per class, indexed by label: 'balanced' = n / (2 n_class) (scikit-learn),
    so the minority class weighs more; 'none' = 1 for both."""
    labels = np.asarray(labels)
    if mode == "none":
        return torch.ones(2)
    if mode != "balanced":
        raise ConfigError(f"class_weighting must be 'balanced' or 'none', got {mode!r}.")
    counts = np.bincount(labels, minlength=2)[:2]
    if (counts == 0).any():
        raise DataError(
            f"the training split has {counts[0]} HEM and {counts[1]} ALL images; "
            "'balanced' class weighting needs both classes (use class_weighting='none')."
        )
    return torch.tensor(len(labels) / (2.0 * counts), dtype=torch.float32)


def set_train_mode(model: nn.Module) -> None:
    """model.train(), except batch-norm layers whose parameters are all frozen stay in eval
    mode (their running statistics stay fixed, as Keras does for trainable=False).
    Dropout keeps its training behaviour everywhere, as in the seed's Keras model."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def _forward_logits(model: nn.Module, x: torch.Tensor, pipeline: Pipeline) -> torch.Tensor:
    dtype = pipeline.autocast_dtype
    with torch.autocast(pipeline.device.type, dtype=dtype, enabled=dtype is not None):
        logits = model(x)
    return logits.reshape(len(x)).float()


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    pipeline: Pipeline,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a ready batch; returns the detached loss and logits."""
    logits = _forward_logits(model, x, pipeline)
    loss = F.binary_cross_entropy_with_logits(logits, labels, weight=weights[labels.long()])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


def _check_finite(losses: list[torch.Tensor], first_batch: int, epoch: int) -> None:
    values = torch.stack(losses).cpu()
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):
        index = int(bad[0, 0])
        raise TrainingError(
            f"non-finite training loss ({float(values[index])}) at epoch {epoch}, "
            f"batch {first_batch + index}; lower the learning rate or check the inputs."
        )


def augment_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The augmentation parameter stream of one epoch, on the device the images are on."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, epoch, AUGMENT_STREAM))


def has_batch_norm(model: nn.Module) -> bool:
    """Whether `model` has a batch-normalisation layer that trains on batch statistics."""
    return any(
        isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training
        for module in model.modules()
    )


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: SplitImages,
    pipeline: Pipeline,
    *,
    epoch: int,
    seed: int,
    batch_size: int,
    weights: torch.Tensor,
    augmenter: AugmentFn | None = None,
    on_batch: Callable[[int, int, float], None] | None = None,
) -> dict[str, float]:
    """One pass over `data` in a seeded order; returns mean (class-weighted) loss and accuracy.

    `weights[label]` is each sample's loss weight. `on_batch(done_images, batch, loss)` is
    called every SYNC_EVERY batches (progress displays).
    """
    set_train_mode(model)
    torch.manual_seed(stream_seed(seed, epoch, DROPOUT_STREAM))
    order = epoch_order(len(data), seed, epoch)
    generator = augment_generator(seed, epoch, pipeline.device) if augmenter else None
    weights = weights.to(pipeline.device)
    losses: list[torch.Tensor] = []
    sizes: list[int] = []
    correct = torch.zeros((), dtype=torch.int64, device=pipeline.device)
    checked = 0
    done = 0
    batches = training_batches(
        data, order, batch_size, pipeline, augmenter, generator,
        no_single_last=has_batch_norm(model),  # a batch of one would crash it
    )  # fmt: skip
    for batch, (size, x, labels) in enumerate(batches, start=1):
        loss, logits = train_step(model, optimizer, x, labels, weights, pipeline)
        losses.append(loss)
        sizes.append(size)
        done += size
        # the one "predicted ALL" rule (metrics.predicted_all): P(ALL) >= threshold
        correct += ((torch.sigmoid(logits) >= DEFAULT_THRESHOLD) == (labels > 0.5)).sum()
        if batch % SYNC_EVERY == 0 or done == len(data):
            _check_finite(losses[checked:], checked + 1, epoch)
            checked = len(losses)
            if on_batch is not None:
                on_batch(done, batch, float(losses[-1]))
    if not losses:
        raise DataError("the training split is empty.")
    per_batch = torch.stack(losses).double().cpu().numpy()
    return {
        "loss": float(np.dot(per_batch, sizes) / len(data)),
        "accuracy": int(correct) / len(data),
    }


def dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 rotations/flips of a square batch (test-time augmentation)."""
    views = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
    return views + [torch.flip(v, dims=(3,)) for v in views]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: SplitImages,
    pipeline: Pipeline,
    *,
    batch_size: int,
    tta: bool = False,
    weights: torch.Tensor | None = None,
) -> dict[str, Any]:
    """P(ALL) per sample, in the order of `data` (never shuffled); BCE and accuracy.

    `weights[label]` weighs each sample's loss as in training (`fit` passes the training
    split's class weights, so the validation loss is the objective training optimises);
    None: unweighted. With `tta`, probabilities are averaged over the 8 dihedral views.
    """
    model.eval()
    probs: list[torch.Tensor] = []
    for start in batch_starts(len(data), batch_size):
        positions = np.arange(start, min(start + batch_size, len(data)))
        images, _ = fetch(data, positions, pipeline)
        x = prepare(images, pipeline)
        if tta:
            layout = torch.channels_last if pipeline.channels_last else torch.contiguous_format
            views = [v.contiguous(memory_format=layout) for v in dihedral_views(x)]
            prob = torch.stack(
                [torch.sigmoid(_forward_logits(model, v, pipeline)) for v in views]
            ).mean(0)
        else:
            prob = torch.sigmoid(_forward_logits(model, x, pipeline))
        probs.append(prob.double())
    prob_all = torch.cat(probs).cpu().numpy() if probs else np.zeros(0)
    labels = data.labels.astype(np.float64)
    if len(labels) == 0:
        return {"prob": prob_all, "loss": math.nan, "accuracy": math.nan}
    clipped = np.clip(prob_all, 1e-12, 1 - 1e-12)
    per_sample = -(labels * np.log(clipped) + (1 - labels) * np.log1p(-clipped))
    if weights is not None:
        per_sample = per_sample * weights.double().cpu().numpy()[data.labels]
    loss = np.mean(per_sample)
    accuracy = float(np.mean(predicted_all(prob_all) == (labels > 0.5)))
    return {"prob": prob_all, "loss": float(loss), "accuracy": accuracy}


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: SplitImages,
    val: SplitImages,
    pipeline: Pipeline,
    out_dir: str | Path,
    *,
    epochs: int,
    seed: int,
    batch_size: int,
    weights: torch.Tensor,
    augmenter: AugmentFn | None = None,
    early_stopping_patience: int | None = None,
    config_hash: str = "",
    callbacks: TrainingCallbacks | None = None,
    label: str = "",
    checkpoint_interval_s: float | None = None,
    checkpoint_meta: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Train for `epochs`, writing `history.csv` after every epoch and `checkpoint.pt` (best
    validation loss) and `last.pt` (resume state) when `checkpoints.SaveSchedule` says
    (`checkpoint_interval_s`; None: auto, every epoch on small runs) and after the last
    epoch; resumes from `last.pt` when present (a damaged one is set aside).

    Both files are slim (`leukaug.arm.checkpoints`): the frozen parameters are left out and
    checked by hash on load; `checkpoint_meta` (the arm's spec) is stored beside the weights.

    `history.csv`: `train_loss` is the mean class-weighted BCE over the epoch's batches,
    `val_loss` the same class-weighted BCE (the training split's `weights`) on the
    validation split after the epoch; `checkpoint.pt` is the epoch with the lowest
    `val_loss`. Without a validation split the best checkpoint is the last epoch.
    `label` names the run in the callbacks' records (the arm id in a study).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = ArmFolder(out_dir)
    frozen = FrozenWeights.of(model)
    state = _resume_state(folder, model, optimizer, config_hash, frozen)
    history: list[dict[str, Any]] = state["history"]
    callbacks = callbacks or TrainingCallbacks()
    schedule = SaveSchedule(checkpoint_interval_s)
    meta = dict(checkpoint_meta or {}) | {"config_hash": config_hash}
    unsaved_best: dict[str, Any] | None = None  # the best epoch's weights, not yet written
    epoch = state["epoch"]
    while epoch < epochs and not state["stopped"]:
        epoch += 1
        started = time.perf_counter()
        on_batch = _batch_callback(callbacks, label, epoch, epochs, len(train), started)
        train_stats = train_one_epoch(
            model, optimizer, train, pipeline, epoch=epoch, seed=seed, batch_size=batch_size,
            weights=weights, augmenter=augmenter, on_batch=on_batch,
        )  # fmt: skip
        eval_batch = eval_batch_size(batch_size, pipeline.device)
        val_stats = evaluate(model, val, pipeline, batch_size=eval_batch, weights=weights)
        row = {
            "epoch": epoch,
            "train_loss": train_stats["loss"],
            "train_accuracy": train_stats["accuracy"],
            "val_loss": val_stats["loss"],
            "val_accuracy": val_stats["accuracy"],
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
        }
        history.append(row)
        if len(val) == 0 or val_stats["loss"] < state["best_val_loss"]:
            state |= {"best_val_loss": val_stats["loss"], "best_epoch": epoch, "bad_epochs": 0}
            unsaved_best = {"epoch": epoch, "val_loss": val_stats["loss"]}
            unsaved_best |= weights_entry(model, frozen)
        else:
            state["bad_epochs"] += 1
        patience = early_stopping_patience
        state["stopped"] = patience is not None and state["bad_epochs"] >= patience
        atomic.write_csv(folder.history, pd.DataFrame(history, columns=HISTORY_COLUMNS))
        if epoch >= epochs or state["stopped"] or schedule.due():
            save_started = time.perf_counter()
            if unsaved_best is not None:  # first: last.pt never refers to an unwritten best
                checkpoints.torch_save(folder.checkpoint, unsaved_best | meta)
                unsaved_best = None
            resume = {"epoch": epoch, "optimizer": optimizer.state_dict(), "rng": _rng_state()}
            resume |= weights_entry(model, frozen) | {"history": history} | meta
            checkpoints.torch_save(folder.last, resume | {k: state[k] for k in RESUME_KEYS})
            schedule.saved(save_started, time.perf_counter())
        if callbacks.on_epoch is not None:
            callbacks.on_epoch(EpochRecord.from_history_row(row, label, epochs, len(train)))
    return pd.DataFrame(history, columns=HISTORY_COLUMNS)


def _resume_state(
    folder: ArmFolder,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config_hash: str,
    frozen: FrozenWeights,
) -> dict[str, Any]:
    fresh = {"epoch": 0, "history": [], "best_val_loss": math.inf, "best_epoch": 0}
    fresh |= {"bad_epochs": 0, "stopped": False}
    saved = checkpoints.resume_state(folder, config_hash)
    if saved is None:
        return fresh
    checkpoints.load_weights(model, saved, folder.last, frozen)
    optimizer.load_state_dict(saved["optimizer"])
    _set_rng_state(saved["rng"])
    return {key: saved[key] for key in fresh} | {"history": list(saved["history"])}


def _batch_callback(
    callbacks: TrainingCallbacks, label: str, epoch: int, epochs: int, total: int, started: float
) -> Callable[[int, int, float], None] | None:
    """`train_one_epoch`'s (done, batch, loss) hook as `BatchProgress` records."""
    if callbacks.on_batch is None:
        return None
    on_batch = callbacks.on_batch

    def update(done: int, batch: int, loss: float) -> None:
        rate = done / max(time.perf_counter() - started, 1e-9)
        on_batch(BatchProgress(label, epoch, epochs, batch, done, total, loss, rate))

    return update
