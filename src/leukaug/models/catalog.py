"""The model catalogue: every model's name and settings, as data, without torch.

`list_models()`, `is_model_name(name)` and `model_info(name)` answer from `MODELS`, so a
study file is validated (names, image sizes against each model's minimum, heads, ImageNet
weights) without importing torch. Each entry carries its input size, normalisation,
minimum size and ImageNet weights together (timm's `default_cfgs` idea), so the pipeline
asks the model instead of guessing.

The builders are torch: each family module (`custom_cnn`, `custom_resnet`,
`torchvision_models`) registers its models' `ModelBuilder` in `BUILDERS` under the
catalogued names, and `leukaug.models.factory` (which imports every family) builds them;
a test checks that both name lists agree and that the torchvision entries' minimum sizes,
input sizes and weight names are torchvision's own.

A name with a registered prefix (`timm:NAME`) is resolved on demand by its family module
(`PREFIX_MODULES`), imported on first use: its settings come from timm's pretrained config
and a structure-only build, so resolving one imports timm, and with it torch. A study that
names a timm model imports torch when it is validated; a study without one does not.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from leukaug.core.errors import ConfigError
from leukaug.core.registry import Registry

if TYPE_CHECKING:
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEADS = ("linear", "seed")
# Which parameters train (`leukaug.models.regimes.apply_regime` applies each).
REGIMES = ("full", "freeze_first", "freeze_backbone")
OFFLINE_ENV = "LEUKAUG_OFFLINE"


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
Builder = Callable[[int, str, "Path | None"], "nn.Module"]


@dataclass(frozen=True)
class ModelBuilder:
    """How a family builds one catalogued model, and its ImageNet weights (None: none)."""

    build: Builder
    imagenet: ImagenetWeights | None = None


MODELS: Registry[ModelInfo] = Registry("model")
BUILDERS: Registry[ModelBuilder] = Registry("model builder")  # filled by the family modules
# prefix -> the family module resolving "prefix:NAME", imported when first needed.
PREFIX_MODULES = {"timm": "leukaug.models.timm_models"}
# prefix -> NAME -> (settings, builder); ConfigError for an unknown NAME. Each family
# module in PREFIX_MODULES registers its resolver here when imported.
PREFIXES: dict[str, Callable[[str], tuple[ModelInfo, ModelBuilder]]] = {}


def offline() -> bool:
    """True when `LEUKAUG_OFFLINE` forbids downloading weights."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def resolve_prefixed(name: str) -> tuple[ModelInfo, ModelBuilder]:
    """Settings and builder of a prefixed name (`timm:efficientnet_b0`); imports its family."""
    prefix, _, rest = name.partition(":")
    if prefix not in PREFIX_MODULES:
        raise ConfigError(
            f"Unknown model prefix {prefix!r} in {name!r}; valid prefixes: "
            f"{', '.join(sorted(PREFIX_MODULES))} (e.g. 'timm:efficientnet_b0')."
        )
    if prefix not in PREFIXES:
        importlib.import_module(PREFIX_MODULES[prefix])  # registers PREFIXES[prefix]
    return PREFIXES[prefix](rest)


def list_models() -> list[str]:
    """Catalogued model names, sorted (prefixed families such as `timm:NAME` come on top)."""
    return MODELS.names()


def is_model_name(name: str) -> bool:
    """True for a catalogued name or a resolvable prefixed name."""
    try:
        model_info(name)
    except ConfigError:
        return False
    return True


def model_info(name: str) -> ModelInfo:
    """Input size, normalisation, minimum size, heads and weights of a model."""
    if ":" in name:
        return resolve_prefixed(name)[0]
    return MODELS.get(name)


# ---------------------------------------------------------------- the built-in models

# custom_cnn and custom_resnet: the seed's 25 Keras layers (see custom_cnn). The seed only
# rescales by 1/255: [0, 1] input, no further normalisation. 72 px is the smallest input
# its four 'valid' convolutions and three pools leave a 1x1 map of (custom_cnn.min_input_size).
SEED_INPUT_SIZE = 256
SEED_MIN_INPUT_SIZE = 72
SEED_FREEZE_UNITS = "Keras layers 0-23 (the seed froze 19: Dense128 onward trains)"
MODELS.add(
    "custom_cnn",
    ModelInfo(
        name="custom_cnn",
        input_size=SEED_INPUT_SIZE,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        min_input_size=SEED_MIN_INPUT_SIZE,
        description="the seed paper's 25-layer SELU CNN (16.4 M parameters at 256 px)",
        imagenet_weights=None,
        heads=("linear",),
        freeze_first_units=SEED_FREEZE_UNITS,
    ),
)
MODELS.add(
    "custom_resnet",
    ModelInfo(
        name="custom_resnet",
        input_size=SEED_INPUT_SIZE,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        min_input_size=SEED_MIN_INPUT_SIZE,
        description=(
            "custom_cnn with 1x1 projection shortcuts around its four convolutions "
            "(16.46 M parameters at 256 px, +43,584)"
        ),
        imagenet_weights=None,
        heads=("linear",),
        freeze_first_units=SEED_FREEZE_UNITS,
    ),
)


def _torchvision(
    name: str, input_size: int, min_size: int, weights: str, description: str
) -> ModelInfo:
    return ModelInfo(
        name=name,
        input_size=input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        min_input_size=min_size,
        description=description,
        imagenet_weights=weights,
        heads=HEADS,
    )


# torchvision's weights metadata: input size = the weights' crop size; minimum size = their
# min_size, at least 32 px for ResNets (five stride-2 stages leave a 1x1 map). Weights
# pinned, not DEFAULT: an upgrade cannot change a study. torchvision_models loads these
# names (`torchvision.models.get_weight`).
MODELS.add(
    "resnet18",
    _torchvision(
        "resnet18", 224, 32, "ResNet18_Weights.IMAGENET1K_V1", "torchvision ResNet18 (quick)"
    ),
)
MODELS.add(
    "resnet50",
    _torchvision("resnet50", 224, 32, "ResNet50_Weights.IMAGENET1K_V2", "torchvision ResNet50"),
)
MODELS.add(
    "inception_v3",
    _torchvision(
        "inception_v3",
        299,
        75,
        "Inception_V3_Weights.IMAGENET1K_V1",
        "torchvision InceptionV3 (aux logits off)",
    ),
)
