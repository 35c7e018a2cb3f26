"""The augmentations as batched, per-sample, seeded transforms (torch, kornia).

Each first draws its random parameters for the whole batch from an explicit
`torch.Generator` (`sample`), then applies a pure function of images and parameters
(`apply`), albumentations style: every augmented sample can be explained (`Draw`) and
reproduced. A transform is built from the values its entry in
`leukaug.augment.settings.AUGMENTATIONS` checked (names, defaults and checks live there,
torch-free, so the study file is validated with the same code). Sizes in pixels scale with
the image size.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from kornia.color import hsv_to_rgb, rgb_to_hsv
from kornia.enhance import adjust_brightness, adjust_contrast
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import rotate, scale, translate

from leukaug.augment.settings import AUGMENTATIONS, AugmentationInfo, AugmentationSpec
from leukaug.augment.stain import hed_to_rgb, rgb_to_hed
from leukaug.core.registry import Registry

REFERENCE_SIZE = 256  # pixel sizes below are the seed's, at its 256 px input


class Augmentation:
    """Base class: `name` is its entry in `settings.AUGMENTATIONS`; subclasses implement
    `setup` (store the checked settings), `sample` and `apply`.

    `sample(batch_size, generator)` returns tensors on the generator's device: per-sample
    ones with a leading dimension `batch_size`, batch-level ones 0-dimensional.
    `apply(images, params)` is pure; `images` is float (N, 3, H, W) in [0, 1] and `params`
    hold the rows of the samples in `images`.
    """

    name: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        self.params = {**self.info.defaults, **params}
        self.setup(**self.info.settings(params))

    @property
    def info(self) -> AugmentationInfo:
        """Its name, description, defaults and parameter check."""
        return AUGMENTATIONS.get(self.name)

    def setup(self, **settings: Any) -> None:
        """Store what the entry's check returned (override when there are any)."""

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {}

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"


TRANSFORMS: Registry[type[Augmentation]] = Registry("augmentation")


def register(cls: type[Augmentation]) -> type[Augmentation]:
    """Class decorator: the transform of augmentation `cls.name` (which must have settings)."""
    if cls.name not in AUGMENTATIONS:
        raise ValueError(
            f"augmentation {cls.name!r} has no entry in leukaug.augment.settings.AUGMENTATIONS"
        )
    TRANSFORMS.add(cls.name, cls)
    return cls


def build_transform(spec: AugmentationSpec) -> Augmentation:
    """The transform of one spec (ConfigError for an unknown name or parameter)."""
    return TRANSFORMS.get(spec.name)(**spec.params)


def _uniform(bounds: tuple[float, float], shape: tuple[int, ...], generator: torch.Generator):
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)


def _per_image(values: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return values.to(images.dtype).view(-1, 1, 1, 1)


@register
class HorizontalFlip(Augmentation):
    name = "hflip"

    def apply(self, images, params):
        return images.flip(-1)


@register
class VerticalFlip(Augmentation):
    name = "vflip"

    def apply(self, images, params):
        return images.flip(-2)


@register
class Flip(Augmentation):
    name = "flip"

    def sample(self, batch_size, generator):
        # 0: horizontal, 1: vertical, 2: both (albumentations' Flip)
        return {
            "axes": torch.randint(0, 3, (batch_size,), generator=generator, device=generator.device)
        }

    def apply(self, images, params):
        axes = params["axes"].view(-1, 1, 1, 1)
        out = torch.where(axes != 1, images.flip(-1), images)
        return torch.where(axes != 0, out.flip(-2), out)


@register
class Rotate(Augmentation):
    name = "rotate"

    def setup(self, bounds):
        self.bounds = bounds

    def sample(self, batch_size, generator):
        return {"angle": _uniform(self.bounds, (batch_size,), generator)}

    def apply(self, images, params):
        return rotate(images, params["angle"].to(images.dtype), padding_mode="zeros")


@register
class FlipRotate(Rotate):
    name = "flip_rotate"

    def setup(self, bounds):
        super().setup(bounds)
        self.flip = Flip()

    def sample(self, batch_size, generator):
        return {**self.flip.sample(batch_size, generator), **super().sample(batch_size, generator)}

    def apply(self, images, params):
        return super().apply(self.flip.apply(images, params), params)


@register
class Blur(Augmentation):
    name = "blur"

    def setup(self, kernel_size, bounds):
        self.kernel_size, self.bounds = kernel_size, bounds

    def sample(self, batch_size, generator):
        return {"sigma": _uniform(self.bounds, (batch_size,), generator)}

    def apply(self, images, params):
        factor = images.shape[-1] / REFERENCE_SIZE
        kernel = max(3, 2 * round((self.kernel_size * factor - 1) / 2) + 1)
        sigma = (params["sigma"] * factor).to(images.dtype)
        return gaussian_blur2d(images, (kernel, kernel), torch.stack([sigma, sigma], dim=1))


@register
class Noise(Augmentation):
    name = "noise"

    def setup(self, bounds):
        self.bounds = bounds

    def sample(self, batch_size, generator):
        # The noise itself is drawn on the images' device from this batch-level seed.
        seed = torch.randint(0, 2**62, (), generator=generator, device=generator.device)
        return {"std": _uniform(self.bounds, (batch_size,), generator), "seed": seed}

    def apply(self, images, params):
        device_generator = torch.Generator(device=images.device)
        device_generator.manual_seed(int(params["seed"]))
        noise = torch.randn(
            images.shape, generator=device_generator, device=images.device, dtype=images.dtype
        )
        return (images + noise * _per_image(params["std"], images)).clamp_(0.0, 1.0)


@register
class Shift(Augmentation):
    name = "shift"

    def setup(self, bounds):
        self.bounds = bounds

    def sample(self, batch_size, generator):
        return {"shift": _uniform(self.bounds, (batch_size, 2), generator)}  # (x, y)

    def apply(self, images, params):
        side = torch.tensor([images.shape[-1], images.shape[-2]], device=images.device)
        return translate(images, (params["shift"] * side).to(images.dtype), padding_mode="zeros")


@register
class Zoom(Augmentation):
    name = "zoom"

    def setup(self, bounds, isotropic):
        self.bounds, self.isotropic = bounds, isotropic

    def sample(self, batch_size, generator):
        factor = _uniform(self.bounds, (batch_size, 1 if self.isotropic else 2), generator)
        return {"factor": factor.expand(batch_size, 2).contiguous()}

    def apply(self, images, params):
        return scale(images, params["factor"].to(images.dtype), padding_mode="zeros")


@register
class BrightnessContrast(Augmentation):
    name = "brightness"

    def setup(self, brightness, contrast):
        self.brightness, self.contrast = brightness, contrast

    def sample(self, batch_size, generator):
        return {
            "brightness": _uniform(self.brightness, (batch_size,), generator),
            "contrast": _uniform(self.contrast, (batch_size,), generator),
        }

    def apply(self, images, params):
        out = adjust_contrast(images, params["contrast"].to(images.dtype))
        return adjust_brightness(out, params["brightness"].to(images.dtype))


def _grid(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates as fractions of the side, shaped to broadcast (1, 1, H, 1) and (1, 1, 1, W)."""
    height, width = images.shape[-2:]
    ys = (torch.arange(height, device=images.device, dtype=images.dtype) + 0.5) / height
    xs = (torch.arange(width, device=images.device, dtype=images.dtype) + 0.5) / width
    return ys.view(1, 1, -1, 1), xs.view(1, 1, 1, -1)


@register
class Cutout(Augmentation):
    name = "cutout"

    def setup(self, size, count, fill):
        self.size, self.count, self.fill = size, count, fill

    def sample(self, batch_size, generator):
        return {
            "centre": torch.rand(
                (batch_size, self.count, 2), generator=generator, device=generator.device
            )
        }

    def apply(self, images, params):
        ys, xs = _grid(images)
        masked = torch.zeros_like(images[:, :1], dtype=torch.bool)
        half = self.size / 2
        for k in range(self.count):
            cy = _per_image(params["centre"][:, k, 0], images)
            cx = _per_image(params["centre"][:, k, 1], images)
            masked |= ((ys - cy).abs() < half) & ((xs - cx).abs() < half)
        return images.masked_fill(masked, self.fill)


@register
class Border(Augmentation):
    name = "border"

    def setup(self, bounds, fill):
        self.bounds, self.fill = bounds, fill

    def sample(self, batch_size, generator):
        return {"width": _uniform(self.bounds, (batch_size,), generator)}

    def apply(self, images, params):
        width = _per_image(params["width"], images)
        factor = (1.0 - 2.0 * params["width"]).to(images.dtype)
        out = scale(images, torch.stack([factor, factor], dim=1), padding_mode="zeros")
        ys, xs = _grid(images)
        frame = (ys < width) | (ys > 1 - width) | (xs < width) | (xs > 1 - width)
        return out.masked_fill(frame, self.fill)


@register
class Stain(Augmentation):
    name = "stain"

    def setup(self, strength):
        self.strength = strength

    def sample(self, batch_size, generator):
        bounds = (-self.strength, self.strength)
        return {
            "scale": _uniform(bounds, (batch_size, 3), generator),
            "shift": _uniform(bounds, (batch_size, 3), generator),
        }

    def apply(self, images, params):
        hed = rgb_to_hed(images)
        alpha = params["scale"].to(images.dtype).view(-1, 3, 1, 1)
        beta = params["shift"].to(images.dtype).view(-1, 3, 1, 1)
        return hed_to_rgb(hed * (1.0 + alpha) + beta)


@register
class HSV(Augmentation):
    name = "hsv"

    def setup(self, hue, saturation, value):
        self.hue, self.saturation, self.value = hue, saturation, value

    def sample(self, batch_size, generator):
        return {
            "hue": _uniform(self.hue, (batch_size,), generator),
            "saturation": _uniform(self.saturation, (batch_size,), generator),
            "value": _uniform(self.value, (batch_size,), generator),
        }

    def apply(self, images, params):
        h, s, v = rgb_to_hsv(images).unbind(1)
        shape = (-1, 1, 1)
        h = torch.remainder(
            h + params["hue"].to(images.dtype).view(shape) * 2 * math.pi, 2 * math.pi
        )
        s = (s * (1 + params["saturation"].to(images.dtype).view(shape))).clamp(0.0, 1.0)
        v = (v * (1 + params["value"].to(images.dtype).view(shape))).clamp(0.0, 1.0)
        return hsv_to_rgb(torch.stack([h, s, v], dim=1)).clamp(0.0, 1.0)
