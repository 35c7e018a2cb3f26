"""The one way leukaug reads a PyTorch file (checkpoints, `weights_path`, `init_from`):
`torch.load(weights_only=True)` on the CPU, with one set of messages.

- A file the safe unpickler refuses (a pickle that calls a function or builds an object
  other than tensors, containers and numbers) is `RefusedFileError`: "refused: it holds
  code, not only weights". It is not called damaged, and no message ever suggests
  `weights_only=False` (PyTorch's own text does: it is never passed on).
- A file that is no PyTorch file or a damaged one (truncated, text) is `NotATorchFileError`
  with the unpickler's reason; callers name their own fix (set it aside, retrain, ...).
- A missing file is FileNotFoundError; other OS errors (permissions) propagate.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from leukaug.core.errors import DataError

# Lines of PyTorch's refusal text that are advice, not the reason (one suggests running
# the file's code with weights_only=False).
_ADVICE = ("weights only load failed", "weights_only", "please file an issue", "documentation")


class RefusedFileError(DataError):
    """The file holds code or objects other than weights; the safe loader refused it."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(
            f"{path} refused: it holds code, not only weights ({detail}). leukaug reads weights "
            "files with PyTorch's safe loader and never runs code from them. Fix: use a "
            "checkpoint.pt written by leukaug, or a state dict saved with "
            "torch.save(model.state_dict(), PATH); delete this file if you did not make it."
        )
        self.path = path
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (errors cross process boundaries)
        return (type(self), (self.path, self.detail))


class NotATorchFileError(DataError):
    """The file is not a PyTorch file, or a damaged one (truncated, overwritten)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} is not a PyTorch file, or a damaged one ({reason}).")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason))


def refusal_detail(text: str) -> str:
    """What PyTorch's refusal says about the file, without its advice."""
    lines = [line.strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not any(a in line.lower() for a in _ADVICE)]
    kept = [line for line in kept if not line.lower().startswith("weightsunpickler error")]
    return " ".join(kept) or "objects other than tensors"


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """The object in a PyTorch file, read with `weights_only=True` onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4 ..." on plain pickles
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError as error:
        text = str(error)
        if "weights only load failed" in text.lower() and _holds_code(path):
            raise RefusedFileError(path, refusal_detail(text)) from None
        raise NotATorchFileError(path, f"UnpicklingError: {_first_line(text)}") from None
    except Exception as error:  # truncated zip, garbage: the unpickler fails in any way
        reason = f"{type(error).__name__}: {_first_line(str(error))}".rstrip(": ")
        raise NotATorchFileError(path, reason) from None


# Pickle opcodes that name or call a Python object: what a pickle needs to run code.
_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"}


def _holds_code(path: Path) -> bool:
    """Whether the file's pickle stream (a zip archive's data.pkl, or the whole legacy file)
    parses and names Python objects; read with `pickletools`, which runs nothing. Garbage
    that the safe unpickler also refuses ("Unsupported operand") is not code."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                stream = archive.read(name)
        else:
            stream = path.read_bytes()
        return any(op.name in _CODE_OPCODES for op, _, _ in pickletools.genops(stream))
    except Exception:  # not a parseable pickle at all: damaged, not code
        return False


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else ""
