"""Model registry: `list_models()`, `get_model(name, ...)`, `model_info(name)`.

Adding a model takes one file in this package: its `ModelEntry` (input size,
normalisation, ImageNet weights and constructor together) registered with
`MODELS.add(name, entry)`, or a name prefix in `PREFIXES` (as `timm_models` does for
`timm:NAME`). Every module of the package is imported here, so a new file registers itself.
"""

from __future__ import annotations

import importlib
import pkgutil

from leukaug.models.catalog import (
    MODELS,
    PREFIXES,
    ModelEntry,
    ModelInfo,
    count_parameters,
    get_model,
    is_model_name,
    list_models,
    model_entry,
    model_info,
    model_parameter_count,
)
from leukaug.models.regimes import REGIMES, apply_regime

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "MODELS",
    "PREFIXES",
    "REGIMES",
    "ModelEntry",
    "ModelInfo",
    "apply_regime",
    "count_parameters",
    "get_model",
    "is_model_name",
    "list_models",
    "model_entry",
    "model_info",
    "model_parameter_count",
]
