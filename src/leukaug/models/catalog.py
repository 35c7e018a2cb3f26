"""The model registry and its API: `list_models()`, `model_info(name)`, `get_model(name, ...)`.

Each model family lives in one file of this package that registers its entries, every
entry carrying its input size, normalisation, ImageNet weights and constructor together
(timm's `default_cfgs` idea), so the pipeline asks the model instead of guessing. A name
with a registered prefix (`timm:NAME`) is resolved by that prefix's resolver on demand.

Every model takes float RGB in [0, 1] normalised with its entry's mean/std, returns one
logit per image, shape (B,), and exposes `.head` (what `freeze_backbone` leaves trainable).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from leukaug.core.errors import ConfigError, WeightsError
from leukaug.core.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEADS = ("linear", "seed")


@dataclass(frozen=True)
class ModelInfo:
    """What the data pipeline and the study need to know about a model."""

    name: str
    input_size: int  # default square input side, px
    mean: tuple[float, float, float]  # per-channel, on the [0, 1] scale
    std: tuple[float, float, float]
    min_input_size: int
    description: str
    imagenet_weights: str | None  # the pinned weights' name, None if there are none
    heads: tuple[str, ...]
    freeze_first_units: str | None = None  # what `freeze_first` counts; None: unsupported


class ImagenetWeights(Protocol):
    """Where a family keeps an entry's pretrained weights (torchvision enum, timm/HF hub)."""

    def expected_path(self) -> Path: ...
    def cached_path(self) -> Path | None: ...
    def download(self, dest: Path | None = None) -> Path: ...
    def missing_message(self, reason: str) -> str: ...


# (image_size, head, weights file or None) -> a freshly initialised model (weights loaded).
Builder = Callable[[int, str, "Path | None"], nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """One model: its settings, its constructor and its ImageNet weights (None: none)."""

    info: ModelInfo
    build: Builder
    imagenet: ImagenetWeights | None = None


MODELS: Registry[ModelEntry] = Registry("model")
# prefix (e.g. "timm") -> resolver of "prefix:NAME" into an entry (ConfigError if unknown).
PREFIXES: dict[str, Callable[[str], ModelEntry]] = {}
OFFLINE_ENV = "LEUKAUG_OFFLINE"


def offline() -> bool:
    """True when `LEUKAUG_OFFLINE` forbids downloading weights."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def model_entry(name: str) -> ModelEntry:
    """The entry of a registered name or of a prefixed one (`timm:efficientnet_b0`)."""
    prefix, sep, rest = name.partition(":")
    if sep:
        if prefix not in PREFIXES:
            raise ConfigError(
                f"Unknown model prefix {prefix!r} in {name!r}; valid prefixes: "
                f"{', '.join(sorted(PREFIXES))} (e.g. 'timm:efficientnet_b0')."
            )
        return PREFIXES[prefix](rest)
    return MODELS.get(name)


def list_models() -> list[str]:
    """Registered model names, sorted (prefixed families such as `timm:NAME` come on top)."""
    return MODELS.names()


def is_model_name(name: str) -> bool:
    """True for a registered name or a resolvable prefixed name."""
    try:
        model_entry(name)
    except ConfigError:
        return False
    return True


def model_info(name: str) -> ModelInfo:
    """Input size, normalisation and description of a model."""
    return model_entry(name).info


def _weights_file(
    name: str, entry: ModelEntry, pretrained: bool, weights_path: str | None
) -> Path | None:
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise WeightsError(f"Weights file {path} does not exist; check weights_path.")
        return path
    if not pretrained:
        return None
    if entry.imagenet is None:
        raise ConfigError(
            f"{name} has no ImageNet weights; set pretrained = false, or start from a "
            "checkpoint trained on this task (init_from or weights_path)."
        )
    return fetch_imagenet(entry.imagenet)


def fetch_imagenet(weights: ImagenetWeights) -> Path:
    """The cached weights file, else downloaded (unless offline), else `WeightsError`."""
    cached = weights.cached_path()
    if cached is not None:
        return cached
    if offline():
        raise WeightsError(weights.missing_message(f"{OFFLINE_ENV} forbids downloading"))
    try:
        return weights.download()
    except WeightsError as error:
        cause = error.__cause__ or error
        raise WeightsError(weights.missing_message(f"the download failed ({cause})")) from error


def get_model(
    name: str,
    pretrained: bool = False,
    weights_path: str | None = None,
    head: str = "linear",
    image_size: int | None = None,
) -> nn.Module:
    """Build a fresh model returning one logit per image.

    `pretrained` loads the entry's ImageNet weights (cache, else download, else
    `WeightsError`); `weights_path` loads a local file instead (the family's ImageNet
    format, or the model's own state dict for the custom CNNs) and implies pretrained.
    `image_size` defaults to the entry's input size.
    """
    entry = model_entry(name)
    info = entry.info
    size = info.input_size if image_size is None else int(image_size)
    if size < info.min_input_size:
        raise ConfigError(
            f"{name} needs images of at least {info.min_input_size} px, got image_size={size}."
        )
    if head not in info.heads:
        raise ConfigError(
            f"Unknown head {head!r} for {name}; valid heads: {', '.join(info.heads)}."
        )
    return entry.build(size, head, _weights_file(name, entry, pretrained, weights_path))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_parameter_count(name: str, head: str = "linear", image_size: int | None = None) -> int:
    """Parameters of a model, counted on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return count_parameters(get_model(name, head=head, image_size=image_size))
