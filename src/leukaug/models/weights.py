"""ImageNet weights through torchvision's weight enums, safe offline.

Weights live where torchvision puts them: `$TORCH_HOME/hub/checkpoints/<file>` (the torch
hub cache). A cached file is loaded without touching the network; a missing one is
downloaded (unless `LEUKAUG_OFFLINE=1`), and if that fails a `WeightsError` says which
file is expected where, and how to get it there: `leukaug weights fetch NAME` on a
connected machine, then copy the file, or pass `weights_path`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision.models import (
    Inception_V3_Weights,
    ResNet18_Weights,
    ResNet50_Weights,
    WeightsEnum,
)

from leukaug.errors import ConfigError, WeightsError, unknown_name_message

# Pinned (not DEFAULT) so that a torchvision upgrade cannot change a study's weights.
IMAGENET_WEIGHTS: dict[str, WeightsEnum] = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": ResNet50_Weights.IMAGENET1K_V2,
    "inception_v3": Inception_V3_Weights.IMAGENET1K_V1,
}
OFFLINE_ENV = "LEUKAUG_OFFLINE"
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's convention: name-<sha256 prefix>.pth


def imagenet_weights(model: str) -> WeightsEnum:
    """The pinned torchvision weight enum of a model (ConfigError if it has none)."""
    if model not in IMAGENET_WEIGHTS:
        raise ConfigError(
            unknown_name_message("model with ImageNet weights", model, IMAGENET_WEIGHTS)
        )
    return IMAGENET_WEIGHTS[model]


def cache_dir() -> Path:
    """The torch hub checkpoint folder (honours TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_file_name(model: str) -> str:
    return os.path.basename(urlparse(imagenet_weights(model).url).path)


def expected_path(model: str) -> Path:
    """Where the ImageNet weights of `model` are looked for."""
    return cache_dir() / weights_file_name(model)


def download_weights(model: str, dest: str | os.PathLike[str] | None = None) -> Path:
    """Download the pinned ImageNet weights of `model` into `dest` (default: the hub cache).

    Checks the SHA-256 prefix in the file name as torch.hub does. Raises `WeightsError`
    when the download fails (offline, proxy, ...).
    """
    weights = imagenet_weights(model)
    folder = Path(dest) if dest is not None else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / weights_file_name(model)
    if target.exists():
        return target
    match = _HASH_IN_NAME.search(target.name)
    try:
        torch.hub.download_url_to_file(
            weights.url, str(target), hash_prefix=match.group(1) if match else None
        )
    except (OSError, RuntimeError) as error:  # URLError is an OSError; hash mismatch a RuntimeError
        raise WeightsError(
            f"Could not download the ImageNet weights of {model} ({weights}) from "
            f"{weights.url}: {error}. On a machine with internet access run "
            f"`leukaug weights fetch {model}` (or download that URL) and copy the file to "
            f"{target}."
        ) from error
    return target


def _missing_message(model: str, reason: str) -> str:
    weights = imagenet_weights(model)
    return (
        f"ImageNet weights for {model} ({weights}) are not cached and {reason}. "
        f"Expected file: {expected_path(model)} (the torch hub cache; set TORCH_HOME to move it). "
        f"Fix: on a machine with internet access run `leukaug weights fetch {model}` "
        f"(or download {weights.url}) and copy the file to that path; or pass "
        f'weights_path=<file> (in a study file: weights_path = "..."); or train without '
        f"pretrained weights."
    )


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a state dict file safely (`weights_only=True`, on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist; check weights_path.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"Could not read weights file {path}: {error}") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(
            f"Weights file {path} is not a state dict (name -> tensor); save one with "
            f"torch.save(model.state_dict(), path)."
        )
    return state


def load_imagenet_state_dict(model: str) -> dict[str, torch.Tensor]:
    """The ImageNet state dict of `model`: from the cache, else downloaded, else WeightsError."""
    path = expected_path(model)
    if not path.is_file():
        if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
            raise WeightsError(_missing_message(model, f"{OFFLINE_ENV} forbids downloading"))
        try:
            download_weights(model)
        except WeightsError as error:
            cause = error.__cause__ or error
            raise WeightsError(_missing_message(model, f"the download failed ({cause})")) from error
    return load_state_dict(path)
