"""Models: the catalogue (`list_models()`, `model_info(name)`: names and settings, no torch)
and the factory (`get_model(name, ...)`), regimes (`apply_regime`).

Adding a model takes its `ModelInfo` in `catalog.MODELS` and a family module that
registers its builder in `catalog.BUILDERS` under the same name (imported by `factory`),
or a name prefix in `catalog.PREFIX_MODULES` (as `timm_models` does for `timm:NAME`).

The names below load their module on first use (PEP 562): asking the catalogue, as the
study file does, imports no torch; building a model imports the factory and every family.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leukaug.models.catalog import (
        MODELS,
        REGIMES,
        ModelInfo,
        is_model_name,
        list_models,
        model_info,
    )
    from leukaug.models.factory import (
        count_parameters,
        get_model,
        model_builder,
        model_parameter_count,
    )
    from leukaug.models.regimes import apply_regime

_CATALOG = "leukaug.models.catalog"
_FACTORY = "leukaug.models.factory"
_MODULE_OF = {
    "MODELS": _CATALOG,
    "REGIMES": _CATALOG,
    "ModelInfo": _CATALOG,
    "is_model_name": _CATALOG,
    "list_models": _CATALOG,
    "model_info": _CATALOG,
    "count_parameters": _FACTORY,
    "get_model": _FACTORY,
    "model_builder": _FACTORY,
    "model_parameter_count": _FACTORY,
    "apply_regime": "leukaug.models.regimes",
}
__all__ = [
    "MODELS",
    "REGIMES",
    "ModelInfo",
    "apply_regime",
    "count_parameters",
    "get_model",
    "is_model_name",
    "list_models",
    "model_builder",
    "model_info",
    "model_parameter_count",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
