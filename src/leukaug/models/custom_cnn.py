"""The seed paper's custom CNN ("cnn_model_1" from a public Kaggle notebook), layer for layer.

The Keras model is a `Sequential` of 25 layers; activations, pools, dropouts and the
flatten are layers of their own. `CustomCNN.layers[i]` is Keras layer `i`:

    idx  layer             idx  layer             idx  layer
     0   Conv2D 32 3x3      9   Conv2D 256 3x3    18   Dropout 0.8
     1   SELU              10   SELU              19   Dense 128
     2   MaxPool 2         11   Dropout 0.6       20   SELU
     3   Conv2D 64 3x3     12   Flatten           21   Dropout 0.7
     4   SELU              13   Dense 512         22   Dense 64 (linear)
     5   MaxPool 3         14   SELU              23   Dense 1
     6   Conv2D 128 3x3    15   Dropout 0.8       24   sigmoid (identity here)
     7   SELU              16   Dense 256
     8   MaxPool 3         17   SELU

so "freeze the first 19 layers" (the seed's transfer learning) freezes indices 0-18 and
trains Dense128 onward (the last 6 layers). Layer 24 is the seed's sigmoid; the module
returns the logit and `BCEWithLogitsLoss` applies the sigmoid, so that slot holds an
`nn.Identity` to keep the seed's numbering.

Convolutions are 'valid'; Keras `MaxPool2D(pool_size=k)` has stride k (floor). Weights
use Keras' `lecun_uniform` (U(+-sqrt(3 / fan_in))) and zero biases. At 256x256x3 the
flatten has 11 * 11 * 256 = 30,976 features and the model 16,421,185 parameters, as in
the seed. Keras flattens NHWC, PyTorch NCHW: the same model up to a permutation of the
Dense512 inputs.

Speed: `forward` runs each "SELU > MaxPool" pair as "MaxPool > SELU". SELU is strictly
increasing, so max(selu(x)) == selu(max(x)) exactly (same outputs and gradients), and the
SELU then touches 4x (pool 2) or 9x (pool 3) fewer values; on CPU this more than halves
the cost of the first block. The layer list and indices stay the seed's.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from leukaug.core.errors import ConfigError, WeightsError
from leukaug.models.catalog import BUILDERS, SEED_INPUT_SIZE, ModelBuilder
from leukaug.models.weights import load_state_dict

# (kind, argument) per Keras layer, in the seed's order.
SEED_LAYERS: tuple[tuple[str, float], ...] = (
    ("conv", 32), ("selu", 0), ("pool", 2),
    ("conv", 64), ("selu", 0), ("pool", 3),
    ("conv", 128), ("selu", 0), ("pool", 3),
    ("conv", 256), ("selu", 0), ("dropout", 0.6), ("flatten", 0),
    ("dense", 512), ("selu", 0), ("dropout", 0.8),
    ("dense", 256), ("selu", 0), ("dropout", 0.8),
    ("dense", 128), ("selu", 0), ("dropout", 0.7),
    ("dense", 64), ("dense", 1), ("sigmoid", 0),
)  # fmt: skip
N_SEED_LAYERS = len(SEED_LAYERS)  # 25
DEFAULT_INPUT_SIZE = SEED_INPUT_SIZE  # 256, the seed's input


def feature_map_size(image_size: int) -> int:
    """Side of the last convolution's output for a square input (0 if the input is too small)."""
    side = image_size
    for kind, arg in SEED_LAYERS:
        if kind == "conv":
            side -= 2
        elif kind == "pool":
            side //= int(arg)
        if side < 1:
            return 0
    return side


def min_input_size() -> int:
    """Smallest square input the network accepts (72 px: the last convolution needs 3x3)."""
    size = 1
    while feature_map_size(size) < 1:
        size += 1
    return size


def _pool_before_selu_order() -> tuple[int, ...]:
    """Layer indices in execution order, each SELU directly followed by a pool swapped with it."""
    order = list(range(N_SEED_LAYERS))
    for i in range(N_SEED_LAYERS - 1):
        if SEED_LAYERS[i][0] == "selu" and SEED_LAYERS[i + 1][0] == "pool":
            order[i], order[i + 1] = order[i + 1], order[i]
    return tuple(order)


def lecun_uniform_(layer: nn.Conv2d | nn.Linear) -> None:
    """Keras `lecun_uniform`: U(-limit, limit) with limit = sqrt(3 / fan_in); zero bias."""
    fan_in = layer.weight[0].numel()
    limit = math.sqrt(3.0 / fan_in)
    nn.init.uniform_(layer.weight, -limit, limit)
    nn.init.zeros_(layer.bias)


class CustomCNN(nn.Module):
    """The seed's 25-layer SELU network for square RGB inputs; returns one logit (ALL)."""

    name = "custom_cnn"

    def __init__(self, image_size: int = DEFAULT_INPUT_SIZE) -> None:
        super().__init__()
        side = feature_map_size(image_size)
        if side < 1:
            raise ConfigError(
                f"{self.name} needs images of at least {min_input_size()} px (its four 'valid' "
                f"convolutions and three pools leave nothing of {image_size} px); "
                f"use image_size >= {min_input_size()}."
            )
        self.image_size = image_size
        layers: list[nn.Module] = []
        channels, features = 3, 0
        for kind, arg in SEED_LAYERS:
            if kind == "conv":
                layers.append(self.make_conv(channels, int(arg)))
                channels = int(arg)
            elif kind == "selu":
                layers.append(nn.SELU(inplace=True))
            elif kind == "pool":
                layers.append(nn.MaxPool2d(int(arg)))
            elif kind == "dropout":
                layers.append(nn.Dropout(arg))
            elif kind == "flatten":
                layers.append(nn.Flatten())
                features = channels * side * side
            elif kind == "dense":
                layers.append(nn.Linear(features, int(arg)))
                features = int(arg)
            else:  # the sigmoid: applied by the loss (BCEWithLogits) and by whoever reads probs
                layers.append(nn.Identity())
        self.layers = nn.Sequential(*layers)
        self._execution_order = _pool_before_selu_order()
        for module in self.layers.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                lecun_uniform_(module)

    def make_conv(self, in_channels: int, out_channels: int) -> nn.Module:
        """One of the seed's 3x3 'valid' convolutions (subclasses add a skip connection)."""
        return nn.Conv2d(in_channels, out_channels, kernel_size=3)

    @property
    def freeze_units(self) -> list[nn.Module]:
        """What `freeze_first` counts: the seed's 25 Keras layers."""
        return list(self.layers)

    @property
    def head(self) -> nn.Linear:
        """The output layer (Dense 1, Keras index 23): what `freeze_backbone` leaves trainable."""
        return self.layers[23]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ConfigError(
                f"{self.name} was built for {self.image_size} px inputs but got "
                f"{tuple(images.shape[-2:])}; build it with get_model('{self.name}', "
                f"image_size={images.shape[-1]})."
            )
        out = images
        for index in self._execution_order:
            out = self.layers[index](out)
        return out.squeeze(-1)


def build_seed_cnn(
    model_class: type[CustomCNN], image_size: int, weights_file: Path | None
) -> CustomCNN:
    """A seed-style network, with its own state dict (`weights_path`) loaded strictly."""
    model = model_class(image_size)
    if weights_file is not None:
        try:
            model.load_state_dict(load_state_dict(weights_file), strict=True)
        except RuntimeError as error:
            raise WeightsError(
                f"Weights from {weights_file} do not fit {model_class.name} at {image_size} px: "
                f"{error}"
            ) from error
    return model


BUILDERS.add(
    "custom_cnn",
    ModelBuilder(
        lambda image_size, head, weights_file: build_seed_cnn(CustomCNN, image_size, weights_file)
    ),
)
