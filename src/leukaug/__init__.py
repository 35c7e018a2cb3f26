"""leukaug: augmentation studies for ALL-vs-HEM white-blood-cell image classification."""

import importlib

__version__ = "0.1.0"

# Label encoding used everywhere (see ARCHITECTURE.md): ALL (leukemic) is the positive class.
LABEL_ALL = 1
LABEL_HEM = 0
CLASS_NAMES = {LABEL_HEM: "HEM", LABEL_ALL: "ALL"}

# The Python API (leukaug.api), imported on first use (PEP 562) so `import leukaug` stays
# torch-free and the package's own modules, which read `__version__` here, need no api.
_API = ("run_study", "open_study", "load_arm")
__all__ = ["CLASS_NAMES", "LABEL_ALL", "LABEL_HEM", "__version__", *_API]


def __getattr__(name: str) -> object:
    if name in _API:
        return getattr(importlib.import_module("leukaug.api"), name)
    raise AttributeError(f"module 'leukaug' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
