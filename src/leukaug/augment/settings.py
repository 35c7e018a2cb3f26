"""What each augmentation is and accepts, without torch: its name, description, defaults and
the check of its parameters, and an arm's augmentation specs.

The study file and `leukaug train --aug` are validated here (`check_augmentations`), with
the messages a built augmenter gives, because the augmentations are built from the same
check: each transform in `leukaug.augment.transforms` is constructed from the values its
entry's `check` returns (`AugmentationInfo.settings`) and applies them, nothing else.
Sizes are given at 256 px (the seed's input) or as fractions of the image side.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from leukaug.core.errors import ConfigError
from leukaug.core.registry import Registry

DEFAULT_P = 0.33  # the seed paper: each image replaced by its augmented version w.p. 0.33
MODES = ("together", "independent")
STAIN_PRESETS = {"light": 0.05, "strong": 0.2}  # Tellez et al. 2019, HED-light / HED-strong


@dataclass(frozen=True)
class AugmentationInfo:
    """One augmentation: `check` takes every parameter (defaults filled in) and returns the
    values its transform applies, or raises `ConfigError` naming the parameter."""

    name: str
    description: str
    defaults: dict[str, Any]
    check: Callable[..., dict[str, Any]]

    def settings(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """`params` over the defaults, checked: what the transform is built from."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise ConfigError(
                f"Unknown parameter(s) {', '.join(map(repr, unknown))} for augmentation "
                f"{self.name!r}; valid parameters: {valid}."
            )
        return self.check(**{**self.defaults, **params})


AUGMENTATIONS: Registry[AugmentationInfo] = Registry("augmentation")


def augmentation(
    name: str, description: str, **defaults: Any
) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Decorator: register `check` as the parameter check of augmentation `name`."""

    def register(check: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        AUGMENTATIONS.add(name, AugmentationInfo(name, description, defaults, check))
        return check

    return register


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

    def settings(self) -> dict[str, Any]:
        """The checked values its transform applies (ConfigError for an unknown name or parameter)."""
        return AUGMENTATIONS.get(self.name).settings(self.params)


def check_augmentations(
    specs: Iterable[AugmentationSpec | str], p: float = DEFAULT_P, mode: str = "together"
) -> tuple[AugmentationSpec, ...]:
    """One arm's augmentations: p, mode, names, parameters, each augmentation once.
    Returns the specs (a bare name becomes a spec without parameters)."""
    if not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"Augmentation probability p must be in [0, 1], got {p}.")
    if mode not in MODES:
        raise ConfigError(f"Unknown augmentation mode {mode!r}; valid modes: {', '.join(MODES)}.")
    checked = tuple(AugmentationSpec(s) if isinstance(s, str) else s for s in specs)
    for spec in checked:
        spec.settings()
    names = [spec.name for spec in checked]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"Augmentation(s) {', '.join(duplicates)} listed twice in one arm; list each once "
            "(set its parameters instead)."
        )
    return checked


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
        spec.settings()  # validate early
        specs.append(spec)
    return tuple(specs)


# ------------------------------------------------------------------- parameter checks


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


def _fixed_or_range(aug: str, key: str, value: Any, low: float, high: float) -> tuple[float, float]:
    """A number v means exactly v; a pair [a, b] means [a, b]; both within [low, high]."""
    if isinstance(value, list | tuple):
        return _range(aug, key, value, low, high)
    fixed = _number(aug, key, value, low, high)
    return fixed, fixed


@augmentation("hflip", "mirror left-right")
@augmentation("vflip", "mirror top-bottom")
@augmentation(
    "flip", "horizontal, vertical or both flips, one chosen uniformly (never the identity)"
)
def _no_parameters() -> dict[str, Any]:
    return {}


# The seed's rotation_range 180. flip_rotate's parameters are rotate's.
@augmentation("rotate", "rotation about the centre by a uniform angle, black fill", degrees=180.0)
@augmentation("flip_rotate", "flip (as 'flip') then rotate (as 'rotate')", degrees=180.0)
def _rotate(degrees: Any) -> dict[str, Any]:
    return {"bounds": _range("rotate", "degrees", degrees, -360.0, 360.0)}


# cv2.GaussianBlur(img, (21, 21), 0): sigma = 0.3 * ((21 - 1) / 2 - 1) + 0.8 = 3.5 px
@augmentation(
    "blur",
    "Gaussian blur; kernel and sigma given at 256 px, scaled with the image",
    kernel_size=21,
    sigma=3.5,
)
def _blur(kernel_size: Any, sigma: Any) -> dict[str, Any]:
    if (
        isinstance(kernel_size, bool)
        or not isinstance(kernel_size, int)
        or kernel_size < 3
        or kernel_size % 2 == 0
    ):
        raise ConfigError(
            f"kernel_size of 'blur' must be an odd integer >= 3, got {kernel_size!r}."
        )
    return {
        "kernel_size": kernel_size,
        "bounds": _fixed_or_range("blur", "sigma", sigma, 0.1, 100.0),
    }


# The seed paper: mean 0, variance 0.1 on [0, 1] -> std sqrt(0.1) = 0.316 (a std, not a variance).
@augmentation(
    "noise",
    "additive Gaussian noise, std on the [0, 1] scale (0.316 = variance 0.1), clamped",
    std=0.316,
)
def _noise(std: Any) -> dict[str, Any]:
    return {"bounds": _fixed_or_range("noise", "std", std, 0.0, 1.0)}


@augmentation(
    "shift", "translation by up to a fraction of the side along each axis, black fill", fraction=0.1
)
def _shift(fraction: Any) -> dict[str, Any]:
    return {"bounds": _range("shift", "fraction", fraction, -1.0, 1.0)}


# Keras zoom_range 0.2 as in the seed; Keras draws the two axes independently.
@augmentation(
    "zoom",
    "scaling about the centre by a factor in [1 - range, 1 + range], black fill",
    range=0.2,
    isotropic=False,
)
def _zoom(range: Any, isotropic: Any) -> dict[str, Any]:
    if isinstance(range, list | tuple):
        bounds = _range("zoom", "range", range, 0.05, 20.0)
    else:
        r = _number("zoom", "range", range, 0.0, 0.95)
        bounds = (1.0 - r, 1.0 + r)
    if not isinstance(isotropic, bool):
        raise ConfigError(f"isotropic of 'zoom' must be true or false, got {isotropic!r}.")
    return {"bounds": bounds, "isotropic": isotropic}


@augmentation(
    "brightness",
    "contrast factor in [1 - contrast, 1 + contrast], then brightness offset",
    brightness=0.2,
    contrast=0.2,
)
def _brightness(brightness: Any, contrast: Any) -> dict[str, Any]:
    checked_brightness = _range("brightness", "brightness", brightness, -1.0, 1.0)
    low, high = _range("brightness", "contrast", contrast, -1.0, 1.0)
    return {"brightness": checked_brightness, "contrast": (1.0 + low, 1.0 + high)}


@augmentation(
    "cutout",
    "masks square(s) of a fraction of the side at uniform centres (DeVries & Taylor)",
    size=0.25,
    count=1,
    fill=0.0,
)
def _cutout(size: Any, count: Any, fill: Any) -> dict[str, Any]:
    checked_size = _number("cutout", "size", size, 0.0, 1.0)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"count of 'cutout' must be an integer >= 1, got {count!r}.")
    return {"size": checked_size, "count": count, "fill": _number("cutout", "fill", fill, 0.0, 1.0)}


@augmentation(
    "border",
    "padding frame: shrinks the image and frames it (width a fraction of the side)",
    width=[0.02, 0.1],
    fill=1.0,
)
def _border(width: Any, fill: Any) -> dict[str, Any]:
    return {
        "bounds": _fixed_or_range("border", "width", width, 0.0, 0.45),
        "fill": _number("border", "fill", fill, 0.0, 1.0),
    }


@augmentation(
    "stain",
    "HED stain jitter (Tellez et al. 2019): c -> c (1 + a) + b, a, b ~ U[-s, s]",
    strength="light",
)
def _stain(strength: Any) -> dict[str, Any]:
    if isinstance(strength, str):
        if strength not in STAIN_PRESETS:
            raise ConfigError(
                f"strength of 'stain' must be a number or one of {', '.join(STAIN_PRESETS)}, got {strength!r}."
            )
        strength = STAIN_PRESETS[strength]
    return {"strength": _number("stain", "strength", strength, 0.0, 1.0)}


# Tellez et al.'s HSV-light
@augmentation(
    "hsv",
    "hue shift (fraction of the colour circle), saturation and value scaling",
    hue=0.1,
    saturation=0.1,
    value=0.0,
)
def _hsv(hue: Any, saturation: Any, value: Any) -> dict[str, Any]:
    return {
        "hue": _range("hsv", "hue", hue, -0.5, 0.5),
        "saturation": _range("hsv", "saturation", saturation, -1.0, 1.0),
        "value": _range("hsv", "value", value, -1.0, 1.0),
    }
