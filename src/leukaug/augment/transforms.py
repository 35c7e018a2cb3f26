"""The registered augmentations. Sizes are given at 256 px (the seed's input) or as
fractions of the image side, and scale with the actual image size."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from kornia.color import hsv_to_rgb, rgb_to_hsv
from kornia.enhance import adjust_brightness, adjust_contrast
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import rotate, scale, translate

from leukaug.augment.augmenter import Augmentation, register
from leukaug.augment.stain import STAIN_PRESETS, hed_to_rgb, rgb_to_hed
from leukaug.core.errors import ConfigError

REFERENCE_SIZE = 256  # pixel sizes below are the seed's, at its 256 px input


def _number(aug: str, key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(
            f"Parameter {key!r} of augmentation {aug!r} must be a number in [{low}, {high}], "
            f"got {value!r}."
        )
    return float(value)


def _range(aug: str, key: str, value: Any, low: float, high: float) -> tuple[float, float]:
    """A number m means [-m, m] (m >= 0); a pair [a, b] means [a, b]; both within [low, high]."""
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ConfigError(f"Parameter {key!r} of {aug!r} must be a number or [low, high].")
        a, b = (_number(aug, key, v, low, high) for v in value)
        if a > b:
            raise ConfigError(f"Parameter {key!r} of {aug!r}: low {a} is above high {b}.")
        return a, b
    m = _number(aug, key, value, 0.0, high)
    return -m, m


def _uniform(bounds: tuple[float, float], shape: tuple[int, ...], generator: torch.Generator):
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)


def _per_image(values: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return values.to(images.dtype).view(-1, 1, 1, 1)


@register
class HorizontalFlip(Augmentation):
    name = "hflip"
    description = "mirror left-right"

    def apply(self, images, params):
        return images.flip(-1)


@register
class VerticalFlip(Augmentation):
    name = "vflip"
    description = "mirror top-bottom"

    def apply(self, images, params):
        return images.flip(-2)


@register
class Flip(Augmentation):
    name = "flip"
    description = "horizontal, vertical or both flips, one chosen uniformly (never the identity)"

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
    description = "rotation about the centre by a uniform angle, black fill"
    defaults: ClassVar[dict[str, Any]] = {"degrees": 180.0}  # the seed's rotation_range 180

    def setup(self, degrees):
        self.bounds = _range(self.name, "degrees", degrees, -360.0, 360.0)

    def sample(self, batch_size, generator):
        return {"angle": _uniform(self.bounds, (batch_size,), generator)}

    def apply(self, images, params):
        return rotate(images, params["angle"].to(images.dtype), padding_mode="zeros")


@register
class FlipRotate(Augmentation):
    name = "flip_rotate"
    description = "flip (as 'flip') then rotate (as 'rotate')"
    defaults: ClassVar[dict[str, Any]] = dict(Rotate.defaults)

    def setup(self, degrees):
        self.flip, self.rotate = Flip(), Rotate(degrees=degrees)

    def sample(self, batch_size, generator):
        return {
            **self.flip.sample(batch_size, generator),
            **self.rotate.sample(batch_size, generator),
        }

    def apply(self, images, params):
        return self.rotate.apply(self.flip.apply(images, params), params)


@register
class Blur(Augmentation):
    name = "blur"
    description = "Gaussian blur; kernel and sigma given at 256 px, scaled with the image"
    # cv2.GaussianBlur(img, (21, 21), 0): sigma = 0.3 * ((21 - 1) / 2 - 1) + 0.8 = 3.5 px
    defaults: ClassVar[dict[str, Any]] = {"kernel_size": 21, "sigma": 3.5}

    def setup(self, kernel_size, sigma):
        if (
            isinstance(kernel_size, bool)
            or not isinstance(kernel_size, int)
            or kernel_size < 3
            or kernel_size % 2 == 0
        ):
            raise ConfigError(
                f"kernel_size of 'blur' must be an odd integer >= 3, got {kernel_size!r}."
            )
        self.kernel_size = kernel_size
        if isinstance(sigma, list | tuple):
            self.bounds = _range(self.name, "sigma", sigma, 0.1, 100.0)
        else:
            value = _number(self.name, "sigma", sigma, 0.1, 100.0)
            self.bounds = (value, value)

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
    description = "additive Gaussian noise, std on the [0, 1] scale (0.316 = variance 0.1), clamped"
    # The seed paper: mean 0, variance 0.1 on [0, 1] -> std sqrt(0.1) = 0.316 (a std, not a variance).
    defaults: ClassVar[dict[str, Any]] = {"std": 0.316}

    def setup(self, std):
        if isinstance(std, list | tuple):
            self.bounds = _range(self.name, "std", std, 0.0, 1.0)
        else:
            value = _number(self.name, "std", std, 0.0, 1.0)
            self.bounds = (value, value)

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
    description = "translation by up to a fraction of the side along each axis, black fill"
    defaults: ClassVar[dict[str, Any]] = {"fraction": 0.1}

    def setup(self, fraction):
        self.bounds = _range(self.name, "fraction", fraction, -1.0, 1.0)

    def sample(self, batch_size, generator):
        return {"shift": _uniform(self.bounds, (batch_size, 2), generator)}  # (x, y)

    def apply(self, images, params):
        side = torch.tensor([images.shape[-1], images.shape[-2]], device=images.device)
        return translate(images, (params["shift"] * side).to(images.dtype), padding_mode="zeros")


@register
class Zoom(Augmentation):
    name = "zoom"
    description = "scaling about the centre by a factor in [1 - range, 1 + range], black fill"
    # Keras zoom_range 0.2 as in the seed; Keras draws the two axes independently.
    defaults: ClassVar[dict[str, Any]] = {"range": 0.2, "isotropic": False}

    def setup(self, range, isotropic):
        if isinstance(range, list | tuple):
            self.bounds = _range(self.name, "range", range, 0.05, 20.0)
        else:
            r = _number(self.name, "range", range, 0.0, 0.95)
            self.bounds = (1.0 - r, 1.0 + r)
        if not isinstance(isotropic, bool):
            raise ConfigError(f"isotropic of 'zoom' must be true or false, got {isotropic!r}.")
        self.isotropic = isotropic

    def sample(self, batch_size, generator):
        factor = _uniform(self.bounds, (batch_size, 1 if self.isotropic else 2), generator)
        return {"factor": factor.expand(batch_size, 2).contiguous()}

    def apply(self, images, params):
        return scale(images, params["factor"].to(images.dtype), padding_mode="zeros")


@register
class BrightnessContrast(Augmentation):
    name = "brightness"
    description = "contrast factor in [1 - contrast, 1 + contrast], then brightness offset"
    defaults: ClassVar[dict[str, Any]] = {"brightness": 0.2, "contrast": 0.2}

    def setup(self, brightness, contrast):
        self.brightness = _range(self.name, "brightness", brightness, -1.0, 1.0)
        c = _range(self.name, "contrast", contrast, -1.0, 1.0)
        self.contrast = (1.0 + c[0], 1.0 + c[1])

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
    description = "masks square(s) of a fraction of the side at uniform centres (DeVries & Taylor)"
    defaults: ClassVar[dict[str, Any]] = {"size": 0.25, "count": 1, "fill": 0.0}

    def setup(self, size, count, fill):
        self.size = _number(self.name, "size", size, 0.0, 1.0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"count of 'cutout' must be an integer >= 1, got {count!r}.")
        self.count = count
        self.fill = _number(self.name, "fill", fill, 0.0, 1.0)

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
    description = "padding frame: shrinks the image and frames it (width a fraction of the side)"
    defaults: ClassVar[dict[str, Any]] = {"width": [0.02, 0.1], "fill": 1.0}

    def setup(self, width, fill):
        if isinstance(width, list | tuple):
            self.bounds = _range(self.name, "width", width, 0.0, 0.45)
        else:
            fixed = _number(self.name, "width", width, 0.0, 0.45)
            self.bounds = (fixed, fixed)
        self.fill = _number(self.name, "fill", fill, 0.0, 1.0)

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
    description = "HED stain jitter (Tellez et al. 2019): c -> c (1 + a) + b, a, b ~ U[-s, s]"
    defaults: ClassVar[dict[str, Any]] = {"strength": "light"}

    def setup(self, strength):
        if isinstance(strength, str):
            if strength not in STAIN_PRESETS:
                raise ConfigError(
                    f"strength of 'stain' must be a number or one of {', '.join(STAIN_PRESETS)}, got {strength!r}."
                )
            strength = STAIN_PRESETS[strength]
        self.strength = _number(self.name, "strength", strength, 0.0, 1.0)

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
    description = "hue shift (fraction of the colour circle), saturation and value scaling"
    defaults: ClassVar[dict[str, Any]] = {
        "hue": 0.1,
        "saturation": 0.1,
        "value": 0.0,
    }  # Tellez et al.'s HSV-light

    def setup(self, hue, saturation, value):
        self.hue = _range(self.name, "hue", hue, -0.5, 0.5)
        self.saturation = _range(self.name, "saturation", saturation, -1.0, 1.0)
        self.value = _range(self.name, "value", value, -1.0, 1.0)

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
