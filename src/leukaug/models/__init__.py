"""Model registry: `list_models()`, `get_model(name, ...)`, `model_info(name)`.

Every entry carries its own input size and normalisation (timm's `default_cfg` idea), so
the pipeline asks the model instead of guessing. Every model takes float RGB in [0, 1]
normalised with its entry's mean/std (`normalize`), returns one logit per image, shape
(B,), and exposes `.head` (what `freeze_backbone` leaves trainable).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from leukaug.errors import ConfigError, WeightsError
from leukaug.models import custom_cnn, torchvision_models, weights
from leukaug.models.regimes import REGIMES, apply_regime
from leukaug.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInfo:
    """What the data pipeline needs to know about a model."""

    name: str
    input_size: int  # default square input side, px
    mean: tuple[float, float, float]  # per-channel, on the [0, 1] scale
    std: tuple[float, float, float]
    min_input_size: int
    description: str
    imagenet_weights: str | None  # the pinned torchvision weight enum, None if there is none
    heads: tuple[str, ...]


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    build: Callable[..., nn.Module]  # (image_size, head, state_dict, source) -> model


MODELS: Registry[_Entry] = Registry("model")


def _build_custom_cnn(
    image_size: int, head: str, state_dict: dict[str, torch.Tensor] | None, source: str
) -> nn.Module:
    if head != "linear":
        raise ConfigError(
            f"custom_cnn has its own fixed head (the seed's Dense layers); head={head!r} "
            "applies to the torchvision models only. Leave head at 'linear'."
        )
    model = custom_cnn.CustomCNN(image_size)
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            raise WeightsError(
                f"Weights from {source} do not fit custom_cnn at {image_size} px: {error}"
            ) from error
    return model


MODELS.add(
    "custom_cnn",
    _Entry(
        ModelInfo(
            name="custom_cnn",
            input_size=custom_cnn.DEFAULT_INPUT_SIZE,
            # The seed only rescales by 1/255: [0, 1] input, no further normalisation.
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            min_input_size=custom_cnn.min_input_size(),
            description="the seed paper's 25-layer SELU CNN (16.4 M parameters at 256 px)",
            imagenet_weights=None,
            heads=("linear",),
        ),
        _build_custom_cnn,
    ),
)


def _torchvision_entry(name: str, input_size: int, min_size: int, description: str) -> _Entry:
    def build(
        image_size: int, head: str, state_dict: dict[str, torch.Tensor] | None, source: str
    ) -> nn.Module:
        return torchvision_models.build_torchvision_model(
            name, image_size, head, state_dict, source
        )

    return _Entry(
        ModelInfo(
            name=name,
            input_size=input_size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            min_input_size=min_size,
            description=description,
            imagenet_weights=str(weights.IMAGENET_WEIGHTS[name]),
            heads=torchvision_models.HEADS,
        ),
        build,
    )


# Minimum sizes: torchvision's weight metadata (min_size), 32 px for ResNets (five stride-2
# stages leave a 1x1 map).
MODELS.add(
    "resnet18", _torchvision_entry("resnet18", 224, 32, "torchvision ResNet18 (quick model)")
)
MODELS.add("resnet50", _torchvision_entry("resnet50", 224, 32, "torchvision ResNet50"))
MODELS.add(
    "inception_v3",
    _torchvision_entry("inception_v3", 299, 75, "torchvision InceptionV3 (aux logits off)"),
)


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return MODELS.names()


def model_info(name: str) -> ModelInfo:
    """Input size, normalisation and description of a registered model."""
    return MODELS.get(name).info


def get_model(
    name: str,
    pretrained: bool = False,
    weights_path: str | None = None,
    head: str = "linear",
    image_size: int | None = None,
) -> nn.Module:
    """Build a fresh model returning one logit per image.

    `pretrained` loads the pinned ImageNet weights (torch hub cache, else download, else
    `WeightsError`); `weights_path` loads a local state dict instead (torchvision's
    ImageNet format for the torchvision models, the model's own state dict for
    custom_cnn) and implies pretrained. `image_size` defaults to the entry's input size;
    custom_cnn and the seed head need it at build time.
    """
    entry = MODELS.get(name)
    info = entry.info
    size = info.input_size if image_size is None else int(image_size)
    if size < info.min_input_size:
        raise ConfigError(
            f"{name} needs images of at least {info.min_input_size} px, got image_size={size}."
        )
    state_dict, source = None, ""
    if weights_path is not None:
        state_dict, source = weights.load_state_dict(weights_path), str(weights_path)
    elif pretrained:
        if info.imagenet_weights is None:
            raise ConfigError(
                f"{name} has no ImageNet weights; set pretrained = false, or start from a "
                "checkpoint trained on this task (init_from or weights_path)."
            )
        state_dict = weights.load_imagenet_state_dict(name)
        source = str(weights.expected_path(name))
    return entry.build(size, head, state_dict, source)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_parameter_count(name: str, head: str = "linear", image_size: int | None = None) -> int:
    """Parameters of a registry entry, counted on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return count_parameters(get_model(name, head=head, image_size=image_size))


def normalize(images: torch.Tensor, info: ModelInfo) -> torch.Tensor:
    """(images - mean) / std per channel for float (B, 3, H, W) in [0, 1]; a no-op for 0/1."""
    if info.mean == (0.0, 0.0, 0.0) and info.std == (1.0, 1.0, 1.0):
        return images
    mean = torch.tensor(info.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(info.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


__all__ = [
    "MODELS",
    "REGIMES",
    "ModelInfo",
    "apply_regime",
    "count_parameters",
    "get_model",
    "list_models",
    "model_info",
    "model_parameter_count",
    "normalize",
]
