"""Training regimes: which parameters train.

- `full`: everything trains.
- `freeze_first` K (custom_cnn only): the seed's transfer learning; Keras layers 0..K-1
  are frozen (K = 19 trains Dense128 onward, see `custom_cnn`).
- `freeze_backbone`: everything but `model.head` is frozen. BatchNorm layers of a frozen
  backbone become `FrozenBatchNorm2d` (running statistics, as Keras runs a frozen base in
  inference mode); otherwise the "frozen" features would still drift with each batch.
"""

from __future__ import annotations

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from leukaug.errors import ConfigError
from leukaug.models.custom_cnn import N_SEED_LAYERS, CustomCNN

REGIMES = ("full", "freeze_first", "freeze_backbone")


def _freeze_batchnorm(module: nn.Module) -> None:
    """Replace every BatchNorm2d under `module` by a FrozenBatchNorm2d with its statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen.to(child.weight.device))
        else:
            _freeze_batchnorm(child)


def _last_trainable_index(model: CustomCNN) -> int:
    return max(i for i, layer in enumerate(model.layers) if any(True for _ in layer.parameters()))


def apply_regime(model: nn.Module, regime: str, freeze_first: int = 0) -> list[nn.Parameter]:
    """Set `requires_grad` for `regime` and return the trainable parameters (for the optimiser).

    Call it on a freshly built (or freshly loaded) model, before creating the optimiser.
    """
    if regime not in REGIMES:
        raise ConfigError(f"Unknown regime {regime!r}; valid regimes: {', '.join(REGIMES)}.")
    if regime != "freeze_first" and freeze_first:
        raise ConfigError(
            f"freeze_first = {freeze_first} only applies to regime 'freeze_first' "
            f"(got regime {regime!r}); remove it or set regime = 'freeze_first'."
        )
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if regime == "freeze_first":
        if not isinstance(model, CustomCNN):
            raise ConfigError(
                "regime 'freeze_first' addresses the seed's Keras layer indices and applies to "
                f"custom_cnn only (got {type(model).__name__}); use 'freeze_backbone'."
            )
        last = _last_trainable_index(model)
        if not 1 <= freeze_first <= last:
            raise ConfigError(
                f"freeze_first must be between 1 and {last} for custom_cnn's {N_SEED_LAYERS} "
                f"layers (the seed used 19: Dense128 onward trains), got {freeze_first}."
            )
        for layer in model.layers[:freeze_first]:
            layer.requires_grad_(False)
    elif regime == "freeze_backbone":
        if not isinstance(getattr(model, "head", None), nn.Module):
            raise ConfigError(f"{type(model).__name__} has no .head; cannot freeze its backbone.")
        head_ids = {id(p) for p in model.head.parameters()}
        for parameter in model.parameters():
            if id(parameter) not in head_ids:
                parameter.requires_grad_(False)
        backbone = getattr(model, "backbone", None)
        if backbone is not None:
            _freeze_batchnorm(backbone)
    return [p for p in model.parameters() if p.requires_grad]
