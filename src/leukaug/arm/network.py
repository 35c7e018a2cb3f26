"""An arm's network: the model built from its spec (seeded initialisation, `init_from`,
regime), its optimiser, and loading an arm's weights back (slim checkpoints rebuilt).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leukaug.arm import checkpoints
from leukaug.arm.spec import SGD_MOMENTUM, ArmSpec
from leukaug.core.errors import ConfigError, DataError, TrainingError
from leukaug.core.layout import ArmFolder
from leukaug.models import apply_regime, get_model
from leukaug.models.safe_load import NotATorchFileError, RefusedFileError, safe_torch_load

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def _adam(params: Iterable[nn.Parameter], spec: ArmSpec, **kwargs: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, amsgrad=spec.amsgrad, **kwargs)


def _adamw(params: Iterable[nn.Parameter], spec: ArmSpec, **kwargs: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, amsgrad=spec.amsgrad, **kwargs)


def _sgd(params: Iterable[nn.Parameter], spec: ArmSpec, **kwargs: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, momentum=SGD_MOMENTUM, **kwargs)


# Optimiser name -> constructor(params, spec, lr=, weight_decay=, fused=); the valid names.
OPTIMIZERS: dict[str, OptimizerFactory] = {"adam": _adam, "adamw": _adamw, "sgd": _sgd}


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


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A model state dict from a plain state-dict file or a leukaug checkpoint ({'model': ...})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"init_from checkpoint {str(path)!r} does not exist.")
    try:
        saved = safe_torch_load(path)
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}.") from None
    except RefusedFileError as error:
        raise ConfigError(f"not a weights file: {error}") from None
    except NotATorchFileError:
        raise ConfigError(
            f"not a weights file: {path} (it is not a PyTorch file, or a damaged one). Give a "
            "leukaug checkpoint.pt or a state dict saved with torch.save(model.state_dict(), PATH)."
        ) from None
    if isinstance(saved, dict) and checkpoints.is_slim(saved):
        return checkpoint_state(saved, path)
    if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
        saved = saved["model"]
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} holds no state dict (got {type(saved).__name__}).")
    return saved


def checkpoint_state(saved: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's whole state dict. A slim checkpoint (`leukaug.arm.checkpoints`) leaves the
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
