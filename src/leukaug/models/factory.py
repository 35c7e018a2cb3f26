"""Building models: `get_model(name, ...)` from the catalogue's settings and the builders
every family registers (this module imports each family, so all of them are registered),
and the by-name lookups of ImageNet weights that `leukaug weights fetch` uses.

Every model takes float RGB in [0, 1] normalised with its entry's mean/std, returns one
logit per image, shape (B,), and exposes `.head` (what `freeze_backbone` leaves trainable).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from leukaug.core.errors import ConfigError, WeightsError
from leukaug.models import (  # noqa: F401 - each family registers its builders
    custom_cnn,
    custom_resnet,
    timm_models,
    torchvision_models,
)
from leukaug.models.catalog import (
    BUILDERS,
    MODELS,
    ImagenetWeights,
    ModelBuilder,
    model_info,
    resolve_prefixed,
)
from leukaug.models.weights import fetch_imagenet


def model_builder(name: str) -> ModelBuilder:
    """The builder of a catalogued name or of a prefixed one (`timm:efficientnet_b0`)."""
    if ":" in name:
        return resolve_prefixed(name)[1]
    MODELS.get(name)  # an unknown name: the catalogue's "did you mean"
    return BUILDERS.get(name)


def _weights_file(
    name: str, builder: ModelBuilder, pretrained: bool, weights_path: str | None
) -> Path | None:
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise WeightsError(f"Weights file {path} does not exist; check weights_path.")
        return path
    if not pretrained:
        return None
    if builder.imagenet is None:
        raise ConfigError(
            f"{name} has no ImageNet weights; set pretrained = false, or start from a "
            "checkpoint trained on this task (init_from or weights_path)."
        )
    return fetch_imagenet(builder.imagenet)


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
    info = model_info(name)
    builder = model_builder(name)
    size = info.input_size if image_size is None else int(image_size)
    if size < info.min_input_size:
        raise ConfigError(
            f"{name} needs images of at least {info.min_input_size} px, got image_size={size}."
        )
    if head not in info.heads:
        raise ConfigError(
            f"Unknown head {head!r} for {name}; valid heads: {', '.join(info.heads)}."
        )
    return builder.build(size, head, _weights_file(name, builder, pretrained, weights_path))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_parameter_count(name: str, head: str = "linear", image_size: int | None = None) -> int:
    """Parameters of a model, counted on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return count_parameters(get_model(name, head=head, image_size=image_size))


def imagenet_weights(model: str) -> ImagenetWeights:
    """The ImageNet weights of a model (ConfigError if it has none)."""
    weights = model_builder(model).imagenet
    if weights is None:
        with_weights = [n for n in MODELS.names() if MODELS.get(n).imagenet_weights is not None]
        raise ConfigError(
            f"{model} has no ImageNet weights; models with weights: "
            f"{', '.join(with_weights)}, and timm:NAME."
        )
    return weights


def expected_path(model: str) -> Path:
    """Where the ImageNet weights of `model` are looked for."""
    return imagenet_weights(model).expected_path()


def download_weights(model: str, dest: str | os.PathLike[str] | None = None) -> Path:
    """Download the ImageNet weights of `model` into `dest` (default: its cache);
    `WeightsError` when the download fails (offline, proxy, ...)."""
    return imagenet_weights(model).download(Path(dest) if dest is not None else None)
