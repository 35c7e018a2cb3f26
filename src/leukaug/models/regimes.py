"""Training regimes: which parameters train.

- `full`: everything trains.
- `freeze_first` K: the first K of the model's `freeze_units` are frozen. For custom_cnn
  and custom_resnet these are the seed's 25 Keras layers (K = 19 trains Dense128 onward,
  the seed's transfer learning); for timm models its top-level stages (stem first).
- `freeze_backbone`: everything but `model.head` is frozen.

BatchNorm layers of whatever is frozen become frozen BatchNorms (running statistics, as
Keras runs a frozen base in inference mode); otherwise the "frozen" features would still
drift with each batch. timm's BatchNormAct2d (norm + activation in one module) becomes
timm's FrozenBatchNormAct2d, so its activation stays.
"""

from __future__ import annotations

from timm.layers import BatchNormAct2d, freeze_batch_norm_2d
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from leukaug.core.errors import ConfigError
from leukaug.models.catalog import REGIMES


def _frozen_copy(norm: nn.BatchNorm2d) -> nn.Module:
    if isinstance(norm, BatchNormAct2d):
        return freeze_batch_norm_2d(norm)
    frozen = FrozenBatchNorm2d(norm.num_features, eps=norm.eps)
    frozen.weight.copy_(norm.weight.detach())
    frozen.bias.copy_(norm.bias.detach())
    frozen.running_mean.copy_(norm.running_mean)
    frozen.running_var.copy_(norm.running_var)
    return frozen.to(norm.weight.device)


def _freeze_batchnorm(module: nn.Module, only: set[int] | None = None) -> None:
    """Replace BatchNorm2d children under `module` (those whose id is in `only`, if given)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and (only is None or id(child) in only):
            setattr(module, name, _frozen_copy(child))
        else:
            _freeze_batchnorm(child, only)


def _max_freeze_first(model: nn.Module, units: list[nn.Module]) -> int:
    """The largest K that leaves the head trainable: the index of the unit holding it, if any."""
    head_ids = {id(p) for p in model.head.parameters()}
    for index, unit in enumerate(units):
        if any(id(p) in head_ids for p in unit.parameters()):
            return index
    return len(units)


def _freeze_first(model: nn.Module, freeze_first: int) -> None:
    units = getattr(model, "freeze_units", None)
    if units is None:
        raise ConfigError(
            "regime 'freeze_first' counts layers or stages, which "
            f"{type(model).__name__} does not define; it applies to custom_cnn, custom_resnet "
            "and timm:NAME models (e.g. timm:resnet18). Use 'freeze_backbone'."
        )
    last = _max_freeze_first(model, units)
    if not 1 <= freeze_first <= last:
        raise ConfigError(
            f"freeze_first must be between 1 and {last} for {type(model).__name__} "
            f"({len(units)} units; custom_cnn: the seed used 19, Dense128 onward trains), "
            f"got {freeze_first}."
        )
    frozen_norms: set[int] = set()
    for unit in units[:freeze_first]:
        unit.requires_grad_(False)
        frozen_norms |= {id(m) for m in unit.modules() if isinstance(m, nn.BatchNorm2d)}
    if frozen_norms:
        _freeze_batchnorm(model, frozen_norms)


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
        _freeze_first(model, freeze_first)
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
