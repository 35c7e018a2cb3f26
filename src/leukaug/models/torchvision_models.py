"""torchvision backbones (ResNet18, ResNet50, InceptionV3) with a one-logit head: entries.

`head="linear"` (default): global average pooling, then one linear layer to the logit.
`head="seed"`: the seed's Keras head on the un-pooled feature map: Flatten > Dense1024 ReLU
> Dropout 0.3 > Dense512 (linear, as in the seed) > Dropout 0.3 > Dense1; its size follows
the input size (ResNet50 at 224 px: 7 * 7 * 2048 inputs to Dense1024).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_weight, inception_v3, resnet18, resnet50

from leukaug.core.errors import ConfigError, WeightsError
from leukaug.models.catalog import BUILDERS, HEADS, MODELS, ModelBuilder
from leukaug.models.weights import TorchvisionWeights, load_state_dict


class TorchvisionClassifier(nn.Module):
    """`backbone` (features, flattened) followed by `head` (-> one logit per image)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images)).squeeze(-1)


def seed_head(in_features: int) -> nn.Sequential:
    """The seed's transfer-learning head (after its Flatten)."""
    return nn.Sequential(
        nn.Linear(in_features, 1024),
        nn.ReLU(inplace=True),
        nn.Dropout(0.3),
        nn.Linear(1024, 512),
        nn.Dropout(0.3),
        nn.Linear(512, 1),
    )


def _build_inception(with_weights: bool) -> nn.Module:
    # The Google weights expect inputs scaled to [-1, 1]; with transform_input the model
    # turns ImageNet-normalised inputs into that, as torchvision does for these weights.
    return inception_v3(
        weights=None, aux_logits=False, transform_input=with_weights, init_weights=not with_weights
    )


# torchvision's constructors (with_weights -> the bare network) of the catalogued models.
ARCHITECTURES: dict[str, Callable[[bool], nn.Module]] = {
    "resnet18": lambda with_weights: resnet18(),
    "resnet50": lambda with_weights: resnet50(),
    "inception_v3": _build_inception,
}


def _feature_shape(name: str, image_size: int) -> torch.Size:
    """Shape of the un-pooled feature map for one image, computed on the meta device (free)."""
    with torch.device("meta"):
        net = ARCHITECTURES[name](False)
        net.avgpool = nn.Identity()
        net.fc = nn.Identity()
        if hasattr(net, "dropout"):
            net.dropout = nn.Identity()
        net.eval()
        return net(torch.empty(1, 3, image_size, image_size)).shape


def _load_backbone_weights(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    # Auxiliary classifier weights (InceptionV3) are not used: aux logits are off.
    state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise WeightsError(
            f"Weights from {source} do not fit this backbone; expected torchvision's ImageNet "
            f"state dict of the same architecture. {error}"
        ) from error


def build_torchvision_model(
    name: str,
    image_size: int,
    head: str = "linear",
    state_dict: dict[str, torch.Tensor] | None = None,
    source: str = "",
) -> TorchvisionClassifier:
    """Build `name` with ImageNet-format `state_dict` loaded (if given) and a one-logit head."""
    if head not in HEADS:
        raise ConfigError(f"Unknown head {head!r} for {name}; valid heads: {', '.join(HEADS)}.")
    net = ARCHITECTURES[name](state_dict is not None)
    if state_dict is not None:
        _load_backbone_weights(net, state_dict, source)
    in_features = net.fc.in_features
    net.fc = nn.Identity()
    if head == "linear":
        return TorchvisionClassifier(net, nn.Linear(in_features, 1))
    net.avgpool = nn.Identity()
    if hasattr(net, "dropout"):  # InceptionV3's dropout before fc belongs to its own head
        net.dropout = nn.Identity()
    return TorchvisionClassifier(net, seed_head(_feature_shape(name, image_size)[-1]))


def _builder(name: str) -> ModelBuilder:
    """`name`'s builder, with the catalogue's pinned weights (`ModelInfo.imagenet_weights`)."""

    def build(image_size: int, head: str, weights_file: Path | None) -> nn.Module:
        state = None if weights_file is None else load_state_dict(weights_file)
        return build_torchvision_model(name, image_size, head, state, str(weights_file))

    weights = get_weight(MODELS.get(name).imagenet_weights)
    return ModelBuilder(build, TorchvisionWeights(name, weights))


for _name in ARCHITECTURES:
    BUILDERS.add(_name, _builder(_name))
