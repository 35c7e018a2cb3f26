"""Checks made before any work starts (no data read, no cache built, nothing written), so a
run that cannot finish fails at once with the culprit named: the output folder, the device.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import torch

from leukaug.core.errors import ConfigError


def check_output_folder(folder: str | Path, option: str = "--out") -> Path:
    """`folder` (absolute) if results can be written there: it is a folder or can be made
    one, and a file can be created in it (or in the nearest folder above that exists)."""
    folder = Path(folder).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"{option} {folder} is a file, not a folder; choose a folder for {option}."
        )
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{option} {folder} cannot be created: {existing} is a file, not a folder; "
            f"choose another {option}."
        )
    try:
        with tempfile.TemporaryFile(dir=existing):  # never a visible file (O_TMPFILE on Linux)
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        where = "" if existing == folder else f" ({existing}, where it would be created)"
        raise ConfigError(
            f"{option} {folder} is not writable{where}: {reason}. Choose a folder you can write "
            "to, or fix its permissions."
        ) from None
    return folder


def check_device(device: str, key: str = "study.device") -> None:
    """A named accelerator must exist on this machine ('auto' and 'cpu' always do)."""
    match = re.fullmatch(r"(cuda|mps)(?::(\d+))?", device)
    if match is None:
        return
    kind, index = match.group(1), match.group(2)
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(
                f"{key} = {device!r}, but this machine has no MPS (Apple GPU) device; "
                "use 'cpu' or 'auto'."
            )
        return
    if not torch.cuda.is_available():
        raise ConfigError(
            f"{key} = {device!r}, but this machine has no CUDA device (torch "
            f"{torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
            "use 'cpu' or 'auto'."
        )
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise ConfigError(
            f"{key} = {device!r}, but this machine has {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1})."
        )
