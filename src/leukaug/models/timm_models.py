"""`timm:NAME`: any timm model (e.g. `timm:efficientnet_b0`, `timm:convnext_tiny.fb_in1k`).

timm's pretrained config supplies the input size and mean/std (as `model_info` reports
them); its ImageNet weights come from a local file (`weights_path`, timm's own loader,
classifier dropped) or from the Hugging Face cache, downloaded only when online and
allowed, with the same `WeightsError` as torchvision models otherwise. The backbone is
built without timm's classifier (`num_classes=0`); leukaug's heads go on top:

- `linear`: timm's own pooling (`forward_head(pre_logits=True)`), then one linear layer;
- `seed`: the seed's Keras head on the un-pooled `forward_features` map (see torchvision_models).

`freeze_first = K` freezes the model's first K top-level stages as timm groups them for
layer-wise learning rates (`group_matcher(coarse=True)`: the stem, then each stage; a final
norm belongs to the last stage). `leukaug models` and `model_info` name them.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import get_pretrained_cfg, group_modules
from torch import nn

from leukaug.core.errors import ConfigError, WeightsError
from leukaug.models.catalog import (
    HEADS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PREFIXES,
    ModelBuilder,
    ModelInfo,
)
from leukaug.models.torchvision_models import seed_head

PREFIX = "timm"
DEFAULT_INPUT_SIZE = 224
DEFAULT_REDUCTION = 32  # total stride of most CNN backbones, when timm's feature_info is silent


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at each call (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "huggingface"
    )
    return Path(home) / "hub"


@dataclass(frozen=True)
class TimmWeights:
    """A timm model's pretrained weights on the Hugging Face hub (`timm/<arch>.<tag>`)."""

    model: str  # the leukaug name, "timm:..."
    hub_id: str
    filename: str = "model.safetensors"

    def __str__(self) -> str:
        return f"hf-hub:{self.hub_id}"

    def _repo_dir(self) -> Path:
        return hf_cache_dir() / ("models--" + self.hub_id.replace("/", "--"))

    def expected_path(self) -> Path:
        return self._repo_dir() / "snapshots" / "<revision>" / self.filename

    def cached_path(self) -> Path | None:
        """The cached file of the revision `refs/main` points to, without any network call."""
        ref = self._repo_dir() / "refs" / "main"
        if not ref.is_file():
            return None
        path = self._repo_dir() / "snapshots" / ref.read_text().strip() / self.filename
        return path if path.is_file() else None

    def download(self, dest: Path | None = None) -> Path:
        from huggingface_hub import hf_hub_download

        try:
            return Path(
                hf_hub_download(
                    self.hub_id,
                    self.filename,
                    cache_dir=None if dest is not None else hf_cache_dir(),
                    local_dir=dest,
                )
            )
        except Exception as error:  # hub errors derive from OSError, requests' or httpx' errors
            raise WeightsError(
                f"Could not download the ImageNet weights of {self.model} ({self}): {error}. "
                f"On a machine with internet access run `leukaug weights fetch {self.model}` "
                f"and copy the file to {self.expected_path()}."
            ) from error

    def missing_message(self, reason: str) -> str:
        return (
            f"ImageNet weights for {self.model} ({self}) are not cached and {reason}. "
            f"Expected file: {self.expected_path()} (the Hugging Face cache; set HF_HOME or "
            f"HF_HUB_CACHE to move it). Fix: on a machine with internet access run `leukaug "
            f"weights fetch {self.model}` (it fills that cache; copy the models--... folder), "
            f'or pass weights_path=<file> (in a study file: weights_path = "...") with timm\'s '
            f"state dict of the same model; or train without pretrained weights."
        )


class TimmClassifier(nn.Module):
    """A timm backbone without its classifier, then leukaug's one-logit `head`."""

    def __init__(
        self, backbone: nn.Module, head: nn.Module, pooled: bool, stages: list[list[str]]
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.pooled = pooled
        self._stages = stages

    @property
    def freeze_units(self) -> list[nn.Module]:
        """What `freeze_first` counts: timm's coarse groups (stem, then each stage)."""
        modules = dict(self.backbone.named_modules())
        return [nn.ModuleList([modules[name] for name in stage]) for stage in self._stages]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_features(images)
        if self.pooled:
            features = self.backbone.forward_head(features, pre_logits=True)
        return self.head(features.flatten(1)).squeeze(-1)


def _suggestions(arch: str) -> str:
    close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.7)
    return f" Did you mean {' or '.join(repr(f'{PREFIX}:{c}') for c in close)}?" if close else ""


def _pretrained_cfg(name: str) -> dict[str, Any] | None:
    arch = name.partition(".")[0]
    if not timm.is_model(arch):
        raise ConfigError(
            f"Unknown timm model {name!r}.{_suggestions(arch)} List them with "
            "`python -c \"import timm; print(timm.list_models('*net*'))\"`; write them as "
            f"'{PREFIX}:NAME' (e.g. '{PREFIX}:efficientnet_b0')."
        )
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:
        tags = ", ".join(timm.list_pretrained(f"{arch}.*")) or "none"
        raise ConfigError(
            f"timm model {arch!r} has no pretrained tag {name.partition('.')[2]!r}; valid: {tags}."
        ) from None
    return None if cfg is None else cfg.to_dict()


def _create(name: str, cfg: dict[str, Any] | None, image_size: int, **kwargs: Any) -> nn.Module:
    if cfg is not None and cfg.get("fixed_input_size"):
        kwargs["img_size"] = image_size  # e.g. ViTs: position embeddings sized at build
    return timm.create_model(name, num_classes=0, **kwargs)


def _stage_names(backbone: nn.Module) -> list[list[str]]:
    groups = group_modules(backbone, backbone.group_matcher(coarse=True))
    return [list(groups[key]) for key in sorted(groups)]


def _stage_labels(stages: list[list[str]]) -> list[str]:
    """Readable stage names: module paths cut at the shallowest depth that keeps stages apart
    (ResNet: layer1..layer4; EfficientNet: blocks.0..blocks.6 + conv_head + bn2)."""
    for depth in range(1, max(len(n.split(".")) for names in stages for n in names) + 1):
        cut = [
            list(dict.fromkeys(".".join(n.split(".")[:depth]) for n in names)) for names in stages
        ]
        seen = [prefix for prefixes in cut for prefix in prefixes]
        if len(seen) == len(set(seen)):
            break
    return ["stem", *(" + ".join(prefixes) for prefixes in cut[1:])]


def _min_input_size(cfg: dict[str, Any] | None, backbone: nn.Module) -> int:
    if cfg is not None and cfg.get("min_input_size"):
        return int(cfg["min_input_size"][-1])
    feature_info = getattr(backbone, "feature_info", None)
    if feature_info:
        return int(feature_info[-1].get("reduction", DEFAULT_REDUCTION))
    return DEFAULT_REDUCTION


def _build(
    name: str, cfg: dict[str, Any] | None, image_size: int, head: str, weights_file: Path | None
) -> TimmClassifier:
    kwargs: dict[str, Any] = {}
    if weights_file is not None:
        kwargs = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(weights_file)}}
    try:
        backbone = _create(name, cfg, image_size, **kwargs)
    except RuntimeError as error:  # load_state_dict: missing keys or shape mismatch
        raise WeightsError(
            f"Weights from {weights_file} do not fit {PREFIX}:{name}; expected timm's state "
            f"dict of the same architecture. {error}"
        ) from error
    stages = _stage_names(backbone)
    if head == "linear":
        # pre_logits width: a hidden head layer (MobileNetV3's conv_head) makes it differ from num_features
        width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        return TimmClassifier(backbone, nn.Linear(width, 1), True, stages)
    with torch.device("meta"):  # the un-pooled map's shape, on a structure-only copy
        probe = _create(name, cfg, image_size)
        shape = probe.forward_features(torch.empty(1, 3, image_size, image_size)).shape
    return TimmClassifier(backbone, seed_head(shape[1:].numel()), False, stages)


@lru_cache(maxsize=64)
def timm_entry(name: str) -> tuple[ModelInfo, ModelBuilder]:
    """Settings and builder of `timm:NAME` (from timm's pretrained config); ConfigError if unknown."""
    cfg = _pretrained_cfg(name)
    settings = cfg or {}  # an architecture without pretrained weights: ImageNet defaults
    input_size = int(settings.get("input_size", (3, DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE))[-1])
    with torch.device("meta"):  # structure only: stages and minimum size, no memory
        backbone = _create(name, cfg, input_size)
    stages = _stage_names(backbone)
    full_name = f"{PREFIX}:{name}"
    weights = None
    if settings.get("hf_hub_id"):
        filename = settings.get("hf_hub_filename") or "model.safetensors"
        weights = TimmWeights(full_name, settings["hf_hub_id"], filename)
    info = ModelInfo(
        name=full_name,
        input_size=input_size,
        mean=tuple(float(v) for v in settings.get("mean", IMAGENET_MEAN)),
        std=tuple(float(v) for v in settings.get("std", IMAGENET_STD)),
        min_input_size=_min_input_size(cfg, backbone),
        description=f"timm {backbone.__class__.__name__} {name}",
        imagenet_weights=None if weights is None else str(weights),
        heads=HEADS,
        freeze_first_units=f"{len(stages)} timm stages: {', '.join(_stage_labels(stages))}",
    )
    builder = ModelBuilder(
        lambda image_size, head, weights_file: _build(name, cfg, image_size, head, weights_file),
        weights,
    )
    return info, builder


PREFIXES[PREFIX] = timm_entry
