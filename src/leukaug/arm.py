"""One arm: its spec (`ArmSpec`), and `run_arm`, which trains and evaluates it into its folder.

`ArmSpec` is the one source of truth for an arm's settings: its fields, defaults
(`ARM_DEFAULTS`) and allowed values (`CHOICES`, `OPTIMIZERS`) are what the study file's
sections (`config.py`) and the `leukaug train` options derive from.

The folder (`arms/<arm_id>/`, see `layout.ArmFolder`) holds `arm.json`, `history.csv`,
`predictions.csv`, `metrics.json`, `checkpoint.pt` and `last.pt`, every one written
atomically; see ARCHITECTURE.md for the contract.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from leukaug import __version__, atomic, checkpoints
from leukaug.augment import DEFAULT_P, AugmentationSpec, build_augmenter
from leukaug.batches import Pipeline, SplitImages, make_pipeline, place_store, resolve_device
from leukaug.data.cache import ImageCache
from leukaug.determinism import execution_record
from leukaug.errors import ConfigError, DataError, TrainingError, unknown_name_message
from leukaug.layout import STATUS_COMPLETE, STATUS_RUNNING, ArmFolder
from leukaug.metrics import arm_metrics
from leukaug.model_card import embed_model_card, model_card
from leukaug.models import REGIMES, apply_regime, get_model, model_info
from leukaug.tracking import Tracker, build_trackers
from leukaug.train import (
    HISTORY_COLUMNS,
    EpochRecord,
    TrainingCallbacks,
    class_weights,
    eval_batch_size,
    evaluate,
    fit,
)

PREDICTION_SPLITS = ("val", "test")

DEFAULT_LR = 1e-4  # the seed's custom CNN: Adam, lr 1e-4, amsgrad
SGD_MOMENTUM = 0.9  # the usual ImageNet-recipe momentum (torchvision references)

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def _adam(params: Iterable[nn.Parameter], spec: ArmSpec, **kwargs: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, amsgrad=spec.amsgrad, **kwargs)


def _adamw(params: Iterable[nn.Parameter], spec: ArmSpec, **kwargs: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, amsgrad=spec.amsgrad, **kwargs)


def _sgd(params: Iterable[nn.Parameter], spec: ArmSpec, **kwargs: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, momentum=SGD_MOMENTUM, **kwargs)


# Optimiser name -> constructor(params, spec, lr=, weight_decay=, fused=); the valid names.
OPTIMIZERS: dict[str, OptimizerFactory] = {"adam": _adam, "adamw": _adamw, "sgd": _sgd}

# Allowed values of ArmSpec's enumerated fields (the config and the CLI use these).
CHOICES: dict[str, tuple[str, ...]] = {
    "regime": tuple(REGIMES),
    "class_weighting": ("balanced", "none"),
    "optimizer": tuple(OPTIMIZERS),
    "aug_mode": ("together", "independent"),
    "head": ("linear", "seed"),
    "stacker": ("mean", "logistic"),  # how a bagged_regions arm combines its members
}

# The arm-kind fields (arm_kinds.py), left out of `to_dict` at these defaults: a single
# network's spec and config hash stay what they were before arm kinds existed.
KIND_DEFAULTS: dict[str, Any] = {"kind": "single", "regions": (), "stacker": "mean"}


def resolve_image_size(model: str, image_size: int | None) -> int:
    """The side the arm trains at: `image_size`, else the model's own input size."""
    return int(image_size) if image_size is not None else int(model_info(model).input_size)


@dataclass(frozen=True)
class ArmSpec:
    """Everything that defines one arm; its hash is the arm's config hash."""

    model: str
    pretrained: bool = False
    weights_path: str | None = None
    head: str = "linear"
    image_size: int | None = None  # None -> model_info(model).input_size
    augmentations: tuple[AugmentationSpec, ...] = ()
    aug_p: float = DEFAULT_P
    aug_mode: str = "together"  # or "independent"
    regime: str = "full"  # "full" | "freeze_first" | "freeze_backbone"
    freeze_first: int = 0
    init_from: str | None = None
    class_weighting: str = "balanced"  # or "none"
    epochs: int = 5
    batch_size: int = 16
    optimizer: str = "adam"  # a key of OPTIMIZERS
    lr: float = DEFAULT_LR
    weight_decay: float = 0.0
    amsgrad: bool = True
    early_stopping_patience: int | None = None
    seed: int = 0
    tta: bool = False
    kind: str = "single"  # a name of arm_kinds.ARM_KINDS: single | bagged_regions | features
    regions: tuple[str, ...] = ()  # bagged_regions: the regions its members see
    stacker: str = "mean"  # bagged_regions: "mean" | "logistic" (fitted on val)

    def __post_init__(self) -> None:
        object.__setattr__(self, "augmentations", tuple(self.augmentations))
        object.__setattr__(self, "regions", tuple(self.regions))
        for key, valid in CHOICES.items():
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

    @property
    def resolved_image_size(self) -> int:
        """`image_size`, else the model's input size (`resolve_image_size`)."""
        return resolve_image_size(self.model, self.image_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; augmentations become [{"name", "params"}]."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["augmentations"] = [
            {"name": a.name, "params": dict(a.params or {})} for a in self.augmentations
        ]
        for key, default in KIND_DEFAULTS.items():
            if out[key] == default:
                del out[key]
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


# Every field's default (the model has none): what the config sections and CLI options use.
ARM_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(ArmSpec) if f.name != "model"}


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
    factory = OPTIMIZERS[spec.optimizer]  # ArmSpec checked the name
    return factory(params, spec, lr=spec.lr, weight_decay=spec.weight_decay, fused=fused)


def _not_weights_reason(error: Exception) -> str:
    if isinstance(error, pickle.UnpicklingError):
        return "it holds objects other than tensors, which the safe loader refuses"
    return "it is not a PyTorch file, or a damaged one"


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A model state dict from a plain state-dict file or a leukaug checkpoint ({'model': ...})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"init_from checkpoint {str(path)!r} does not exist.")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}.") from None
    except Exception as error:  # garbage makes the unpickler fail in any way (IndexError, ...)
        # PyTorch's own message suggests turning the safe loader off (running the file's
        # code): it is never passed on
        raise ConfigError(
            f"not a weights file: {path} ({_not_weights_reason(error)}). Give a leukaug "
            "checkpoint.pt or a state dict saved with torch.save(model.state_dict(), PATH)."
        ) from None
    if isinstance(saved, dict) and checkpoints.is_slim(saved):
        return checkpoint_state(saved, path)
    if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
        saved = saved["model"]
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} holds no state dict (got {type(saved).__name__}).")
    return saved


def checkpoint_state(saved: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's whole state dict. A slim checkpoint (`leukaug.checkpoints`) leaves the
    frozen parameters out: they are rebuilt from the arm's initialisation (its spec, stored
    beside the weights: seeded init, pretrained weights, init_from) and checked by hash."""
    if not checkpoints.is_slim(saved):
        return saved["model"]
    try:
        spec = ArmSpec.from_dict(saved["spec"])
    except (KeyError, TypeError, ConfigError) as error:
        raise DataError(
            f"{path} leaves its frozen weights out but its arm spec cannot be read ({error}). "
            "Fix: load it with the leukaug version that trained the arm."
        ) from None
    model = build_model(spec, spec.resolved_image_size)
    checkpoints.load_weights(model, saved, path)
    return model.state_dict()


def load_arm_weights(model: nn.Module, arm_dir: str | Path) -> dict[str, Any]:
    """Load an arm's best weights (`arm_dir/checkpoint.pt`) into `model`, which is built as
    the arm's (model, head, image size, regime; its own weights do not matter). Returns the
    checkpoint's dict. A missing or damaged file is a DataError naming it."""
    path = ArmFolder(Path(arm_dir)).checkpoint
    try:
        saved = checkpoints.read_checkpoint(path)
    except FileNotFoundError:
        raise DataError(
            f"{path} does not exist. Fix: pass a finished arm folder (it holds checkpoint.pt)."
        ) from None
    checkpoints.load_weights(model, {"model": checkpoint_state(saved, path)}, path)
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


def _versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "leukaug": __version__}


def now() -> str:
    """The UTC time stamp of `arm.json`'s `started_at` / `finished_at`."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_folder(
    spec: ArmSpec, folder: ArmFolder, arm_id: str, name: str
) -> tuple[dict[str, Any] | None, ArmResult | None]:
    """The folder's previous `arm.json` and, when it is complete, its result (skipped).

    A folder holding another configuration -> ConfigError (the study decides `--force`)."""
    config_hash = spec.config_hash()
    previous = folder.read_info()
    if previous is None:
        return None, None
    if previous.get("config_hash") != config_hash:
        raise ConfigError(
            f"{folder.path} holds arm {previous.get('arm_id')!r} with config hash "
            f"{previous.get('config_hash')!r}, not {config_hash!r}; use a new folder, or --force to replace it."
        )
    if folder.is_complete():
        return previous, load_result(folder, arm_id, name, config_hash, skipped=True)
    return previous, None


def running_record(
    spec: ArmSpec, arm_id: str, name: str, device: str, previous: dict[str, Any] | None
) -> dict[str, Any]:
    """`arm.json` of an arm being run (`status` running; `started_at` kept on resume)."""
    return {
        "arm_id": arm_id,
        "name": name,
        "seed": spec.seed,
        "spec": spec.to_dict(),
        "config_hash": spec.config_hash(),
        "status": STATUS_RUNNING,
        "started_at": (previous or {}).get("started_at") or now(),
        "finished_at": None,
        "device": device,
        "execution": execution_record(),  # CPU threads, CUDA determinism (results depend on them)
        "versions": _versions(),
    }


def load_result(
    folder: ArmFolder, arm_id: str, name: str, config_hash: str, skipped: bool
) -> ArmResult:
    """An arm folder's result, read back."""
    return ArmResult(
        arm_id=arm_id,
        name=name,
        out_dir=folder.path,
        config_hash=config_hash,
        history=(
            pd.read_csv(folder.history)
            if folder.history.is_file()
            else pd.DataFrame(columns=HISTORY_COLUMNS)
        ),
        predictions=pd.read_csv(folder.predictions, dtype={"image_id": str, "subject": str}),
        metrics=atomic.read_json(folder.metrics) or {},
        skipped=skipped,
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
    callbacks: TrainingCallbacks | None = None,
    crop: float | None = None,
    tensorboard: bool = False,
    mlflow_uri: str = "",
    checkpoint_interval_s: float | None = None,
) -> ArmResult:
    """Train and evaluate one arm into `out_dir` (the arm's own folder, `arms/<arm_id>/`).

    Returns at once when the folder is complete with the same config hash; resumes from
    `last.pt` when it was interrupted; raises ConfigError when it holds another config.
    `callbacks` receive the arm's per-batch and per-epoch records (labelled `arm_id`).
    `crop` (the data's central crop) goes into the checkpoint's model card; `tensorboard`
    and `mlflow_uri` (a study's [tracking]) ask for the trackers of `leukaug.tracking`.
    A damaged `last.pt` / `checkpoint.pt` is set aside (listed in arm.json's
    `damaged_files`) and the arm restarts from its last good state; `checkpoint_interval_s`:
    how often the resume state is written (`checkpoints.SaveSchedule`; None: auto).
    """
    out_dir = Path(out_dir)
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
    torch_device = resolve_device(device)
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
    trackers = build_trackers(
        out_dir, arm_id=arm_id, tensorboard=tensorboard, mlflow_uri=mlflow_uri or None
    )
    history = fit(
        model, optimizer, train, val, pipeline, out_dir,
        epochs=spec.epochs, seed=spec.seed, batch_size=spec.batch_size,
        weights=class_weights(train.labels, spec.class_weighting), augmenter=augmenter,
        early_stopping_patience=spec.early_stopping_patience, config_hash=config_hash,
        callbacks=_with_trackers(callbacks, trackers), label=arm_id,
        checkpoint_interval_s=checkpoint_interval_s, checkpoint_meta={"spec": spec.to_dict()},
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
    embed_model_card(out_dir, model_card(spec, predictions, crop=crop, arm_id=arm_id, name=name))
    for tracker in trackers:
        tracker.on_end(out_dir, predictions, spec)
    atomic.write_json(folder.arm_json, arm_json | {"status": STATUS_COMPLETE, "finished_at": now()})
    return ArmResult(
        arm_id, name, out_dir, config_hash, history, predictions, metrics, skipped=False
    )


def _with_trackers(
    callbacks: TrainingCallbacks | None, trackers: list[Tracker]
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
