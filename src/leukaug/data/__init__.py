"""The data layer: read a data set into a manifest, split it, cache its images, synthesise one.

The names below load their module on first use (PEP 562), so that importing one light
module (e.g. `leukaug.data.cache` in the cache's worker processes) does not import
scikit-learn and pandas through this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leukaug.data.cache import ImageCache, load_or_build_cache
    from leukaug.data.read import Dataset, read_dataset
    from leukaug.data.split import split_manifest, split_report

_MODULE_OF = {
    "Dataset": "leukaug.data.read",
    "ImageCache": "leukaug.data.cache",
    "load_or_build_cache": "leukaug.data.cache",
    "read_dataset": "leukaug.data.read",
    "split_manifest": "leukaug.data.split",
    "split_report": "leukaug.data.split",
}
__all__ = [
    "Dataset",
    "ImageCache",
    "load_or_build_cache",
    "read_dataset",
    "split_manifest",
    "split_report",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
