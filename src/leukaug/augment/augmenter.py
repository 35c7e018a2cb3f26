"""The augmentation machinery: specs, the registry, the batched per-sample augmenter.

Each augmentation first draws its random parameters for the whole batch from an explicit
`torch.Generator` (`sample`), then applies a pure function of images and parameters
(`apply`), albumentations style: every augmented sample can be explained (`Draw`) and
reproduced. Parameters are drawn on the generator's device and moved to the images'.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from leukaug.core.errors import ConfigError
from leukaug.core.registry import Registry

DEFAULT_P = 0.33  # the seed paper: each image replaced by its augmented version w.p. 0.33
MODES = ("together", "independent")


class Augmentation:
    """Base class: `defaults` names the parameters; subclasses implement `sample` and `apply`.

    `sample(batch_size, generator)` returns tensors on the generator's device: per-sample
    ones with a leading dimension `batch_size`, batch-level ones 0-dimensional.
    `apply(images, params)` is pure; `images` is float (N, 3, H, W) in [0, 1] and `params`
    hold the rows of the samples in `images`. Sizes in pixels scale with the image size.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise ConfigError(
                f"Unknown parameter(s) {', '.join(map(repr, unknown))} for augmentation "
                f"{self.name!r}; valid parameters: {valid}."
            )
        self.params = {**self.defaults, **params}
        self.setup(**self.params)

    def setup(self, **params: Any) -> None:
        """Validate and store the parameters (override when there are any)."""

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {}

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"


AUGMENTATIONS: Registry[type[Augmentation]] = Registry("augmentation")


def register(cls: type[Augmentation]) -> type[Augmentation]:
    """Class decorator: add an augmentation to the registry under `cls.name`."""
    AUGMENTATIONS.add(cls.name, cls)
    return cls


def list_augmentations() -> list[str]:
    """Registered augmentation names, sorted."""
    return AUGMENTATIONS.names()


@dataclass(frozen=True)
class AugmentationSpec:
    """One augmentation of an arm: a registry name and parameter overrides."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(
                f"An augmentation name must be a non-empty string, got {self.name!r}."
            )
        if not isinstance(self.params, Mapping):
            raise ConfigError(
                f"Parameters of augmentation {self.name!r} must be a table/dict, got {self.params!r}."
            )
        object.__setattr__(self, "params", dict(self.params))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))

    def build(self) -> Augmentation:
        """The configured augmentation (ConfigError for an unknown name or parameter)."""
        return AUGMENTATIONS.get(self.name)(**self.params)


def _parse_value(text: str) -> Any:
    if ".." in text:
        low, high = text.split("..", 1)
        return [_parse_value(low), _parse_value(high)]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_augmentations(text: str) -> tuple[AugmentationSpec, ...]:
    """Parse the CLI form 'flip,rotate:degrees=90,stain:strength=strong,zoom:range=0.8..1.2'.

    Items are separated by ',', parameters by ':' as key=value; 'a..b' is a range [a, b].
    An empty string or 'none' gives no augmentation.
    """
    specs = []
    for item in (part.strip() for part in text.split(",")):
        if not item or item.lower() == "none":
            continue
        name, *assignments = item.split(":")
        params: dict[str, Any] = {}
        for assignment in assignments:
            key, sep, value = assignment.partition("=")
            if not sep or not key:
                raise ConfigError(
                    f"Cannot parse {assignment!r} in augmentation {item!r}; write name:key=value."
                )
            params[key.strip()] = _parse_value(value.strip())
        spec = AugmentationSpec(name.strip(), params)
        spec.build()  # validate early
        specs.append(spec)
    return tuple(specs)


@dataclass(frozen=True)
class DrawGroup:
    """Augmentations applied together to the samples where `selected` is True."""

    selected: torch.Tensor  # (B,) bool
    names: tuple[str, ...]
    params: tuple[dict[str, torch.Tensor], ...]  # one per name, drawn for all B samples


@dataclass(frozen=True)
class Draw:
    """Everything random about one augmented batch: read it back to explain a sample."""

    batch_size: int
    groups: tuple[DrawGroup, ...]

    def for_sample(self, index: int) -> dict[str, dict[str, Any]]:
        """The augmentations applied to sample `index` and their parameters (plain Python)."""
        applied: dict[str, dict[str, Any]] = {}
        for group in self.groups:
            if not bool(group.selected[index]):
                continue
            for name, params in zip(group.names, group.params, strict=True):
                applied[name] = {
                    key: (value[index] if value.dim() else value).tolist()
                    for key, value in params.items()
                }
        return applied


def _rows(params: dict[str, torch.Tensor], index: torch.Tensor, device: torch.device) -> dict:
    """The parameter rows of the selected samples (`index` on the parameters' device), moved
    to the images' device; batch-level (0-dim) parameters stay where they were drawn."""
    return {
        key: value.index_select(0, index).to(device, non_blocking=True) if value.dim() else value
        for key, value in params.items()
    }


class Augmenter:
    """`augmenter(images, generator) -> images`: replaces each image with probability `p`.

    mode "together" (the paper's): a selected image gets all of the arm's augmentations,
    in the given order. mode "independent": each augmentation selects its own images.
    The last draw is kept in `last_draw`.
    """

    def __init__(
        self,
        augmentations: Sequence[Augmentation],
        p: float = DEFAULT_P,
        mode: str = "together",
        image_size: int | None = None,
    ) -> None:
        self.augmentations = tuple(augmentations)
        self.p = p
        self.mode = mode
        self.image_size = image_size
        self.last_draw: Draw | None = None

    def draw(self, batch_size: int, generator: torch.Generator) -> Draw:
        """Draw the selection and every augmentation's parameters for a batch."""
        device = generator.device
        groups: list[DrawGroup] = []
        if self.mode == "together" and self.augmentations:
            selected = torch.rand(batch_size, generator=generator, device=device) < self.p
            params = tuple(aug.sample(batch_size, generator) for aug in self.augmentations)
            names = tuple(aug.name for aug in self.augmentations)
            groups.append(DrawGroup(selected, names, params))
        else:
            for aug in self.augmentations:
                selected = torch.rand(batch_size, generator=generator, device=device) < self.p
                groups.append(
                    DrawGroup(selected, (aug.name,), (aug.sample(batch_size, generator),))
                )
        return Draw(batch_size, tuple(groups))

    def apply(self, images: torch.Tensor, draw: Draw) -> torch.Tensor:
        """Apply a draw; only the selected samples are computed. Does not modify `images`."""
        by_name = {aug.name: aug for aug in self.augmentations}
        out = images
        for group in draw.groups:
            index = group.selected.nonzero().squeeze(1)  # on the generator's device
            if index.numel() == 0:
                continue
            image_index = index.to(images.device, non_blocking=True)
            subset = out.index_select(0, image_index)
            for name, params in zip(group.names, group.params, strict=True):
                subset = by_name[name].apply(subset, _rows(params, index, images.device))
            out = out.index_copy(0, image_index, subset)
        return out

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ConfigError(
                f"Augmentation expects float images (B, 3, H, W) in [0, 1], got "
                f"{images.dtype} {tuple(images.shape)}."
            )
        if self.image_size is not None and images.shape[-2:] != (self.image_size, self.image_size):
            raise ConfigError(
                f"The augmenter was built for {self.image_size} px images but got "
                f"{tuple(images.shape[-2:])}; pass the arm's image_size to build_augmenter."
            )
        if not self.augmentations or self.p == 0:
            return images
        draw = self.draw(images.shape[0], generator)
        self.last_draw = draw
        return self.apply(images, draw)


def build_augmenter(
    specs: Iterable[AugmentationSpec],
    p: float = DEFAULT_P,
    mode: str = "together",
    image_size: int | None = None,
) -> Augmenter:
    """The augmenter of one arm (no specs: the identity). Validates names and parameters."""
    if not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"Augmentation probability p must be in [0, 1], got {p}.")
    if mode not in MODES:
        raise ConfigError(f"Unknown augmentation mode {mode!r}; valid modes: {', '.join(MODES)}.")
    augmentations = []
    for spec in specs:
        if isinstance(spec, str):
            spec = AugmentationSpec(spec)
        augmentations.append(spec.build())
    names = [aug.name for aug in augmentations]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"Augmentation(s) {', '.join(duplicates)} listed twice in one arm; list each once "
            "(set its parameters instead)."
        )
    return Augmenter(augmentations, float(p), mode, image_size)
