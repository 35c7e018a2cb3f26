"""ImageNet weights, safe offline: torchvision's weight enums, the cache-then-download rule
(`fetch_imagenet`) and safe loading of state dict files. Looking weights up by model name
(`expected_path`, `download_weights`) is `leukaug.models.factory`'s, which knows every family.

torchvision weights live where torchvision puts them: `$TORCH_HOME/hub/checkpoints/<file>`
(the torch hub cache). A cached file is loaded without touching the network; a missing one
is downloaded (unless `LEUKAUG_OFFLINE=1`), and if that fails a `WeightsError` says which
file is expected where, and how to get it there: `leukaug weights fetch NAME` on a
connected machine, then copy the file, or pass `weights_path`. timm models keep theirs in
the Hugging Face cache (`timm_models.TimmWeights`), with the same rules.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision.models import WeightsEnum

from leukaug.core.errors import WeightsError
from leukaug.models.catalog import OFFLINE_ENV, ImagenetWeights, offline
from leukaug.models.safe_load import NotATorchFileError, safe_torch_load

_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's convention: name-<sha256 prefix>.pth

__all__ = ["OFFLINE_ENV", "TorchvisionWeights", "fetch_imagenet", "load_state_dict"]


def cache_dir() -> Path:
    """The torch hub checkpoint folder (honours TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


@dataclass(frozen=True)
class TorchvisionWeights:
    """A pinned torchvision weight enum (pinned, not DEFAULT: an upgrade cannot change them)."""

    model: str
    enum: WeightsEnum

    def __str__(self) -> str:
        return str(self.enum)

    def expected_path(self) -> Path:
        return cache_dir() / os.path.basename(urlparse(self.enum.url).path)

    def cached_path(self) -> Path | None:
        path = self.expected_path()
        return path if path.is_file() else None

    def download(self, dest: Path | None = None) -> Path:
        """Download into `dest` (default: the hub cache), checking torch.hub's hash prefix."""
        folder = Path(dest) if dest is not None else cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / self.expected_path().name
        if target.exists():
            return target
        match = _HASH_IN_NAME.search(target.name)
        try:
            torch.hub.download_url_to_file(
                self.enum.url, str(target), hash_prefix=match.group(1) if match else None
            )
        except (OSError, RuntimeError) as error:  # URLError is an OSError; bad hash a RuntimeError
            raise WeightsError(
                f"Could not download the ImageNet weights of {self.model} ({self.enum}) from "
                f"{self.enum.url}: {error}. On a machine with internet access run "
                f"`leukaug weights fetch {self.model}` (or download that URL) and copy the "
                f"file to {target}."
            ) from error
        return target

    def missing_message(self, reason: str) -> str:
        return (
            f"ImageNet weights for {self.model} ({self.enum}) are not cached and {reason}. "
            f"Expected file: {self.expected_path()} (the torch hub cache; set TORCH_HOME to "
            f"move it). Fix: on a machine with internet access run `leukaug weights fetch "
            f"{self.model}` (or download {self.enum.url}) and copy the file to that path; or "
            f'pass weights_path=<file> (in a study file: weights_path = "..."); or train '
            f"without pretrained weights."
        )


def fetch_imagenet(weights: ImagenetWeights) -> Path:
    """The cached weights file, else downloaded (unless offline), else `WeightsError`."""
    cached = weights.cached_path()
    if cached is not None:
        return cached
    if offline():
        raise WeightsError(weights.missing_message(f"{OFFLINE_ENV} forbids downloading"))
    try:
        return weights.download()
    except WeightsError as error:
        cause = error.__cause__ or error
        raise WeightsError(weights.missing_message(f"the download failed ({cause})")) from error


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a state dict file safely (`weights_only=True`, on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist; check weights_path.")
    try:
        state = safe_torch_load(path)  # a file holding code: RefusedFileError, as it is
    except NotATorchFileError as error:
        raise WeightsError(
            f"Could not read weights file {path}: {error.reason}. Fix: check weights_path; "
            "save a state dict with torch.save(model.state_dict(), path)."
        ) from None
    except OSError as error:
        raise WeightsError(
            f"Could not read weights file {path}: {error.strerror or error}."
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(
            f"Weights file {path} is not a state dict (name -> tensor); save one with "
            f"torch.save(model.state_dict(), path)."
        )
    return state
