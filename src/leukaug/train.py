"""Training one arm: plain functions `train_one_epoch`, `evaluate`, `fit`, and `run_arm`.

One logit per image, `BCEWithLogits` with per-sample class weights, Adam (lr 1e-4, amsgrad)
by default as in the seed's custom CNN. Every random stream is seeded per (seed, epoch),
so a run resumed from `last.pt` ends bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from leukaug import __version__, atomic
from leukaug.augment import AugmentationSpec, build_augmenter
from leukaug.batches import (
    Augmenter,
    Pipeline,
    SplitImages,
    batch_starts,
    epoch_order,
    fetch,
    make_pipeline,
    place_store,
    prepare,
    resolve_device,
    stream_seed,
    training_batches,
)
from leukaug.errors import ConfigError, DataError, TrainingError, unknown_name_message
from leukaug.metrics import arm_metrics
from leukaug.models import REGIMES, apply_regime, get_model, model_info

if TYPE_CHECKING:
    from rich.progress import Progress

    from leukaug.data.cache import ImageCache

HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
]
# What last.pt keeps besides weights, optimiser, RNG and history: the early-stopping state.
RESUME_KEYS = ("best_val_loss", "best_epoch", "bad_epochs", "stopped")
PREDICTION_SPLITS = ("val", "test")
OPTIMIZERS = ("adam", "adamw", "sgd")
# Loss values are pulled from the device every this many batches (a sync; also the
# granularity of the progress bar). The NaN check still names the exact batch.
SYNC_EVERY = 8


@dataclass(frozen=True)
class ArmSpec:
    """Everything that defines one arm; its hash is the arm's config hash."""

    model: str
    pretrained: bool = False
    weights_path: str | None = None
    head: str = "linear"
    image_size: int | None = None  # None -> model_info(model).input_size
    augmentations: tuple[AugmentationSpec, ...] = ()
    aug_p: float = 0.33
    aug_mode: str = "together"  # or "independent"
    regime: str = "full"  # "full" | "freeze_first" | "freeze_backbone"
    freeze_first: int = 0
    init_from: str | None = None
    class_weighting: str = "balanced"  # or "none"
    epochs: int = 5
    batch_size: int = 16
    optimizer: str = "adam"  # "adam" | "adamw" | "sgd"
    lr: float = 1e-4
    weight_decay: float = 0.0
    amsgrad: bool = True
    early_stopping_patience: int | None = None
    seed: int = 0
    tta: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "augmentations", tuple(self.augmentations))
        choices = {
            "regime": REGIMES,
            "class_weighting": ("balanced", "none"),
            "optimizer": OPTIMIZERS,
            "aug_mode": ("together", "independent"),
            "head": ("linear", "seed"),
        }
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise ConfigError(unknown_name_message(key, str(getattr(self, key)), valid))
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": math.isfinite(self.lr) and self.lr > 0,
            "weight_decay": math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            "aug_p": 0.0 <= self.aug_p <= 1.0,
            "freeze_first": self.freeze_first >= 0,
            "early_stopping_patience": self.early_stopping_patience is None
            or self.early_stopping_patience >= 1,
            "image_size": self.image_size is None or self.image_size >= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"ArmSpec.{key} = {getattr(self, key)!r} is out of range.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; augmentations become [{"name", "params"}]."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["augmentations"] = [
            {"name": a.name, "params": dict(a.params or {})} for a in self.augmentations
        ]
        return out

    def config_hash(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArmSpec:
        """Inverse of `to_dict` (arm.json -> spec)."""
        data = dict(data)
        data["augmentations"] = tuple(
            AugmentationSpec(a["name"], dict(a.get("params") or {}))
            for a in data.get("augmentations", ())
        )
        return cls(**data)


@dataclass
class ArmResult:
    """What `run_arm` leaves behind, read back from the arm folder."""

    arm_id: str
    name: str
    out_dir: Path
    config_hash: str
    history: pd.DataFrame
    predictions: pd.DataFrame
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False  # True: the folder was already complete, nothing ran


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


def make_optimizer(model: nn.Module, spec: ArmSpec) -> torch.optim.Optimizer:
    """The optimiser over the trainable parameters only (frozen ones are never touched)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError(
            f"regime {spec.regime!r} left no trainable parameter in {spec.model!r}."
        )
    # fused: one kernel over all parameters; for the custom CNN's 16.4 M parameters on CPU the
    # optimiser step fell from 188 to 21 ms (+11% img/s, BENCHMARKS.md), same update within fp32 rounding.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    kwargs = {"lr": spec.lr, "weight_decay": spec.weight_decay, "fused": fused}
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, amsgrad=spec.amsgrad, **kwargs)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, amsgrad=spec.amsgrad, **kwargs)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, momentum=0.9, **kwargs)
    raise ConfigError(f"optimizer must be 'adam', 'adamw' or 'sgd', got {spec.optimizer!r}.")


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
    return torch.Generator(device=device).manual_seed(stream_seed(seed, epoch, 1))


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
    augmenter: Augmenter | None = None,
    on_batch: Callable[[int, int, float], None] | None = None,
) -> dict[str, float]:
    """One pass over `data` in a seeded order; returns mean (class-weighted) loss and accuracy.

    `weights[label]` is each sample's loss weight. `on_batch(done_images, batch, loss)` is
    called every SYNC_EVERY batches (progress bars).
    """
    set_train_mode(model)
    torch.manual_seed(stream_seed(seed, epoch, 2))  # dropout
    order = epoch_order(len(data), seed, epoch)
    generator = augment_generator(seed, epoch, pipeline.device) if augmenter else None
    weights = weights.to(pipeline.device)
    losses: list[torch.Tensor] = []
    sizes: list[int] = []
    correct = torch.zeros((), dtype=torch.int64, device=pipeline.device)
    checked = 0
    done = 0
    batches = training_batches(data, order, batch_size, pipeline, augmenter, generator)
    for batch, (size, x, labels) in enumerate(batches, start=1):
        loss, logits = train_step(model, optimizer, x, labels, weights, pipeline)
        losses.append(loss)
        sizes.append(size)
        done += size
        correct += ((logits > 0) == (labels > 0.5)).sum()
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
) -> dict[str, Any]:
    """P(ALL) per sample, in the order of `data` (never shuffled); unweighted BCE and accuracy.

    With `tta`, probabilities are averaged over the 8 dihedral views of each image.
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
    loss = -np.mean(labels * np.log(clipped) + (1 - labels) * np.log1p(-clipped))
    accuracy = float(np.mean((prob_all > 0.5) == (labels > 0.5)))
    return {"prob": prob_all, "loss": float(loss), "accuracy": accuracy}


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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
    augmenter: Augmenter | None = None,
    early_stopping_patience: int | None = None,
    config_hash: str = "",
    progress: Progress | None = None,
    label: str = "",
) -> pd.DataFrame:
    """Train for `epochs`, writing `history.csv`, `checkpoint.pt` (best validation loss) and
    `last.pt` (resume state) after every epoch; resumes from `last.pt` when present.

    Without a validation split the best checkpoint is the last epoch. `label` prefixes the
    progress bar's description (the arm id in a study).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = _resume_state(out_dir, model, optimizer, config_hash)
    history: list[dict[str, Any]] = state["history"]
    task = None
    if progress is not None:
        task = progress.add_task("train", total=len(train), batch=0, loss=float("nan"), ips=0.0)
    epoch = state["epoch"]
    while epoch < epochs and not state["stopped"]:
        epoch += 1
        started = time.perf_counter()
        on_batch = _progress_callback(progress, task, epoch, epochs, started)
        if progress is not None:
            description = f"{label} epoch {epoch}/{epochs}".strip()
            progress.reset(task, total=len(train), description=description)
        train_stats = train_one_epoch(
            model, optimizer, train, pipeline, epoch=epoch, seed=seed, batch_size=batch_size,
            weights=weights, augmenter=augmenter, on_batch=on_batch,
        )  # fmt: skip
        val_stats = evaluate(model, val, pipeline, batch_size=batch_size)
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
        weights_now = _cpu_state(model)
        if len(val) == 0 or val_stats["loss"] < state["best_val_loss"]:
            state |= {"best_val_loss": val_stats["loss"], "best_epoch": epoch, "bad_epochs": 0}
            best = {"model": weights_now, "epoch": epoch, "val_loss": val_stats["loss"]}
            atomic.torch_save(out_dir / "checkpoint.pt", best | {"config_hash": config_hash})
        else:
            state["bad_epochs"] += 1
        patience = early_stopping_patience
        state["stopped"] = patience is not None and state["bad_epochs"] >= patience
        atomic.write_csv(out_dir / "history.csv", pd.DataFrame(history, columns=HISTORY_COLUMNS))
        resume = {"epoch": epoch, "model": weights_now, "optimizer": optimizer.state_dict()}
        resume |= {"rng": _rng_state(), "history": history, "config_hash": config_hash}
        atomic.torch_save(out_dir / "last.pt", resume | {k: state[k] for k in RESUME_KEYS})
    if progress is not None and task is not None:
        progress.remove_task(task)
    return pd.DataFrame(history, columns=HISTORY_COLUMNS)


def _resume_state(
    out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, config_hash: str
) -> dict[str, Any]:
    fresh = {"epoch": 0, "history": [], "best_val_loss": math.inf, "best_epoch": 0}
    fresh |= {"bad_epochs": 0, "stopped": False}
    path = out_dir / "last.pt"
    if not path.exists():
        return fresh
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("config_hash", "") != config_hash:
        raise ConfigError(
            f"{path} belongs to another configuration (hash {saved.get('config_hash')!r}, "
            f"expected {config_hash!r}); delete the folder or train into a new one."
        )
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    _set_rng_state(saved["rng"])
    return {key: saved[key] for key in fresh} | {"history": list(saved["history"])}


def _progress_callback(
    progress: Progress | None, task: Any, epoch: int, epochs: int, started: float
) -> Callable[[int, int, float], None] | None:
    if progress is None:
        return None

    def update(done: int, batch: int, loss: float) -> None:
        rate = done / max(time.perf_counter() - started, 1e-9)
        progress.update(task, completed=done, batch=batch, loss=loss, ips=rate)

    return update


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A model state dict from a plain state-dict file or a leukaug checkpoint ({'model': ...})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"init_from checkpoint {str(path)!r} does not exist.")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
        saved = saved["model"]
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} holds no state dict (got {type(saved).__name__}).")
    return saved


def build_model(spec: ArmSpec, image_size: int) -> nn.Module:
    """The arm's model: seeded initialisation, optional `init_from` weights, then the regime."""
    torch.manual_seed(spec.seed)
    model = get_model(
        spec.model,
        pretrained=spec.pretrained,
        weights_path=spec.weights_path,
        head=spec.head,
        image_size=image_size,
    )
    if spec.init_from:
        load_init(model, spec)
    apply_regime(model, spec.regime, freeze_first=spec.freeze_first)
    return model


def load_init(model: nn.Module, spec: ArmSpec) -> None:
    """Load `spec.init_from` strictly, except BatchNorm's `num_batches_tracked` counters
    (absent from a checkpoint whose backbone was frozen: FrozenBatchNorm2d has none)."""
    try:
        result = model.load_state_dict(load_state_file(spec.init_from), strict=False)
    except RuntimeError as error:
        raise ConfigError(
            f"init_from {spec.init_from!r} does not fit model {spec.model!r}: {error}"
        ) from None
    mismatched = [
        k
        for k in (*result.missing_keys, *result.unexpected_keys)
        if not k.endswith("num_batches_tracked")
    ]
    if mismatched:
        raise ConfigError(
            f"init_from {spec.init_from!r} does not fit model {spec.model!r} (head {spec.head!r}): "
            f"missing or unexpected keys {mismatched[:5]}{' ...' if len(mismatched) > 5 else ''}."
        )


def _split(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    return frame[frame["split"] == name]


def _split_images(store: Any, cache: ImageCache, frame: pd.DataFrame) -> SplitImages:
    rows = np.asarray(cache.rows(list(frame["image_id"])), dtype=np.int64)
    return SplitImages(store, rows, frame["label"].to_numpy(dtype=np.int64))


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "leukaug": __version__}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _load_result(
    out_dir: Path, arm_id: str, name: str, config_hash: str, skipped: bool
) -> ArmResult:
    return ArmResult(
        arm_id=arm_id,
        name=name,
        out_dir=out_dir,
        config_hash=config_hash,
        history=pd.read_csv(out_dir / "history.csv"),
        predictions=pd.read_csv(
            out_dir / "predictions.csv", dtype={"image_id": str, "subject": str}
        ),
        metrics=_read_json(out_dir / "metrics.json") or {},
        skipped=skipped,
    )


ARM_FILES = (
    "arm.json",
    "history.csv",
    "predictions.csv",
    "metrics.json",
    "checkpoint.pt",
    "last.pt",
)


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
    spec: ArmSpec,
    split_manifest: pd.DataFrame,
    cache: ImageCache,
    out_dir: str | Path,
    *,
    arm_id: str,
    name: str,
    device: str = "auto",
    progress: Progress | None = None,
) -> ArmResult:
    """Train and evaluate one arm into `out_dir` (the arm's own folder, `arms/<arm_id>/`).

    Returns at once when the folder is complete with the same config hash; resumes from
    `last.pt` when it was interrupted; raises ConfigError when it holds another config.
    """
    out_dir = Path(out_dir)
    config_hash = spec.config_hash()
    previous = _read_json(out_dir / "arm.json")
    if previous is not None:
        if previous.get("config_hash") != config_hash:
            raise ConfigError(
                f"{out_dir} holds arm {previous.get('arm_id')!r} with config hash "
                f"{previous.get('config_hash')!r}, not {config_hash!r}; use a new folder (or --force in a study)."
            )
        if previous.get("status") == "complete" and all((out_dir / f).exists() for f in ARM_FILES):
            return _load_result(out_dir, arm_id, name, config_hash, skipped=True)
    if "split" not in split_manifest.columns:
        raise DataError(
            "run_arm needs a manifest with a 'split' column (see leukaug.data.split_manifest)."
        )

    info = model_info(spec.model)
    image_size = spec.image_size or info.input_size
    if tuple(cache.images.shape[1:]) != (image_size, image_size, 3):
        raise ConfigError(
            f"the cache holds {tuple(cache.images.shape[1:])} images but arm {arm_id!r} needs "
            f"({image_size}, {image_size}, 3); build it with load_or_build_cache(..., size={image_size})."
        )
    torch_device = resolve_device(device)
    arm_json = {
        "arm_id": arm_id,
        "name": name,
        "seed": spec.seed,
        "spec": spec.to_dict(),
        "config_hash": config_hash,
        "status": "running",
        "started_at": (previous or {}).get("started_at") or _now(),
        "finished_at": None,
        "device": _device_name(torch_device),
        "versions": _versions(),
    }
    atomic.write_json(out_dir / "arm.json", arm_json)

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
    history = fit(
        model, optimizer, train, val, pipeline, out_dir,
        epochs=spec.epochs, seed=spec.seed, batch_size=spec.batch_size,
        weights=class_weights(train.labels, spec.class_weighting), augmenter=augmenter,
        early_stopping_patience=spec.early_stopping_patience, config_hash=config_hash, progress=progress,
        label=arm_id,
    )  # fmt: skip

    best = torch.load(out_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(best["model"])
    predictions = predict(
        model, split_manifest, store, cache, pipeline, batch_size=spec.batch_size, tta=spec.tta
    )
    atomic.write_csv(out_dir / "predictions.csv", predictions)
    metrics = arm_metrics(predictions) if len(predictions) else {}
    atomic.write_json(out_dir / "metrics.json", metrics)
    atomic.write_json(
        out_dir / "arm.json", arm_json | {"status": "complete", "finished_at": _now()}
    )
    return ArmResult(
        arm_id, name, out_dir, config_hash, history, predictions, metrics, skipped=False
    )
