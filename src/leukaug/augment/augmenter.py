"""The batched per-sample augmenter of one arm: draw, then apply.

`build_augmenter(specs, p, mode)` checks the specs (`settings.check_augmentations`) and
builds their transforms (`transforms.TRANSFORMS`). The augmenter draws every random choice
of a batch first (which samples, which parameters: `Draw`), then applies it, so every
augmented sample can be read back (`Draw.for_sample`) and reproduced. Parameters are drawn
on the generator's device and moved to the images'.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from leukaug.augment.settings import DEFAULT_P, AugmentationSpec, check_augmentations
from leukaug.augment.transforms import Augmentation, build_transform
from leukaug.core.errors import ConfigError


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
    specs: Iterable[AugmentationSpec | str],
    p: float = DEFAULT_P,
    mode: str = "together",
    image_size: int | None = None,
) -> Augmenter:
    """The augmenter of one arm (no specs: the identity). Validates names and parameters."""
    checked = check_augmentations(specs, p, mode)
    return Augmenter([build_transform(spec) for spec in checked], float(p), mode, image_size)
