"""Export a trained arm as one self-contained model file: ONNX or `torch.export` (`.pt2`).

The exported model takes RGB images as (N, H, W, 3), the layout numpy / PIL / OpenCV arrays
already have: uint8 in 0..255, or float in [0, 1] (one input type per file, chosen at
export). Batch size, height and width are dynamic: inside the graph the image is padded to
a square with its border colour and resized to the arm's image size with an antialiased bicubic (the
resize policy of `leukaug.data.cache.prepare_image`; uint8 input is rounded back to
integers after the resize, as PIL does, so a 450 px C-NMC cell gives what `leukaug predict`
gives up to that rounding), then scaled, normalised with the arm's mean/std; the graph
returns P(ALL), shape (N,). Only an arm trained with a data crop or stain normalisation
needs that done first (`input.crop_first`, `input.stain_normalise_first` in the model card;
`leukaug.trained.predict.preparer` does both). The model card (`<out>.json`) says all of
this, with the arm's operating threshold. Every export is checked against PyTorch, at the
arm's size and at 450 px, before it is reported done.

TorchScript is not offered: torch deprecates `torch.jit` (loading warns), and `torch.export`
(`.pt2`, loaded by `torch.export.load`) replaces it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from leukaug.core import atomic
from leukaug.core.errors import ConfigError, TrainingError
from leukaug.core.registry import Registry
from leukaug.trained import INPUT_DTYPES
from leukaug.trained.loader import load_trained_arm
from leukaug.trained.predict import TrainedArm

TOLERANCE = 1e-4  # max |P(ALL) exported - P(ALL) PyTorch| accepted
ONNX_OPSET = 18
MIN_SIDE, MAX_SIDE = 16, 8192  # the input sizes an exported graph accepts (pixels a side)
CHECK_SIDE = 450  # the C-NMC image size: every export is checked there too
DROPPED = {
    "torchscript": "TorchScript was dropped: torch deprecates torch.jit (loading it warns). "
    "Fix: use --format pt2 (torch.export, loaded by torch.export.load) or onnx."
}


class ProbabilityModel(nn.Module):
    """(N, H, W, 3) uint8 or float [0, 1] images of any size -> P(ALL) (N,): pad to square
    with the border colour,
    resize to `size` (antialiased bicubic), normalise, run the network, sigmoid."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float], size: int) -> None:
        super().__init__()
        self.model = model
        self.size = size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        integers = images.dtype == torch.uint8
        x = images.float().permute(0, 3, 1, 2)
        height, width = x.shape[-2], x.shape[-1]
        side = torch.sym_max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        padding = (left, side - width - left, top, side - height - top)
        inside = F.pad(torch.ones_like(x[:, :1]), padding)  # 1 on the image, 0 on the padding
        x = F.pad(x, padding) + (1 - inside) * border_colour(x, integers)
        x = F.interpolate(
            x, size=(self.size, self.size), mode="bicubic", antialias=True, align_corners=False
        )
        x = x.round().clamp(0, 255) / 255.0 if integers else x
        return torch.sigmoid(self.model((x - self.mean) / self.std).reshape(-1))


def border_colour(x: torch.Tensor, integers: bool) -> torch.Tensor:
    """(N, 3, 1, 1): per channel, the median of the outermost rows and columns, as
    `leukaug.data.cache.border_colour` (numpy's median: the mean of the two middle values of
    an even count, rounded for integer images); the colour a non-square image is padded with."""
    edge = torch.cat([x[:, :, 0, :], x[:, :, -1, :], x[:, :, :, 0], x[:, :, :, -1]], dim=-1)
    ordered = torch.sort(edge, dim=-1).values
    count = edge.shape[-1]
    median = (ordered[..., (count - 1) // 2] + ordered[..., count // 2]) / 2
    return (median.round() if integers else median)[..., None, None]


def probability_model(arm: TrainedArm) -> ProbabilityModel:
    """The arm's model on CPU in eval mode, wrapped to take images and return P(ALL)."""
    model = arm.model.to("cpu", memory_format=torch.contiguous_format).eval()
    return ProbabilityModel(model, list(arm.mean), list(arm.std), arm.image_size).eval()


def example_images(size: int, dtype: str, n: int = 2, seed: int = 0) -> torch.Tensor:
    """Random (n, size, size, 3) images of `dtype`, for exporting and checking an export."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=generator)
    return images if dtype == "uint8" else images.float() / 255.0


def _dynamic_shapes() -> dict[str, dict[int, Any]]:
    batch = torch.export.Dim("batch", min=1)
    height = torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE)
    width = torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)
    return {"images": {0: batch, 1: height, 2: width}}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    card_path: Path
    format: str
    input_dtype: str
    image_size: int
    max_abs_difference: float  # against PyTorch on random images, at two sizes


Runner = Callable[[np.ndarray], np.ndarray]
Exporter = Callable[[ProbabilityModel, Path, torch.Tensor], Runner]
EXPORTERS: Registry[Exporter] = Registry("export format")


@EXPORTERS.register("pt2")
def _pt2(wrapped: ProbabilityModel, out: Path, example: torch.Tensor) -> Runner:
    """torch.export with dynamic batch, height and width; loaded back by torch.export.load."""
    with torch.no_grad():
        program = torch.export.export(wrapped, (example,), dynamic_shapes=_dynamic_shapes())
    # through a Python file, so a full disk is a StorageError naming the folder
    with atomic.atomic_path(out) as tmp, open(tmp, "wb") as handle, atomic.os_errors_unwrapped():
        torch.export.save(program, handle)
    loaded = torch.export.load(str(out)).module()

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(images)).numpy()

    return run


def _require_onnx() -> None:
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if not importlib.util.find_spec(m)]
    if missing:
        raise ConfigError(
            f"ONNX export needs the optional package(s) {', '.join(missing)}. "
            "Fix: pip install 'leukaug[onnx]'."
        )


@EXPORTERS.register("onnx")
def _onnx(wrapped: ProbabilityModel, out: Path, example: torch.Tensor) -> Runner:
    """torch.onnx (dynamo exporter, onnxscript), dynamic batch and size; checked with onnxruntime."""
    _require_onnx()
    import onnxruntime

    with atomic.atomic_path(out) as tmp:
        program = torch.onnx.export(
            wrapped,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=["prob_all"],
            dynamic_shapes=_dynamic_shapes(),
            opset_version=ONNX_OPSET,
            verbose=False,
        )
        program.save(str(tmp), external_data=False)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])

    def run(images: np.ndarray) -> np.ndarray:
        return session.run(None, {"images": images})[0]

    return run


def export_card(arm: TrainedArm, fmt: str, input_dtype: str, difference: float) -> dict[str, Any]:
    """The exported model's card: the arm's card and what the graph takes and returns."""
    crop = arm.card.get("crop")
    scale = "0..255" if input_dtype == "uint8" else "[0, 1]"
    return {
        "format": fmt,
        "input": {
            "name": "images",
            "layout": "(N, H, W, 3) RGB",
            "dtype": input_dtype,
            "range": scale,
            "batch": "dynamic",
            "size": f"dynamic, {MIN_SIDE} to {MAX_SIDE} px a side",
            "resize": "inside the graph: pad to square with the border colour (median of the "
            f"outermost pixels), antialiased bicubic to "
            f"{arm.image_size} px",
            "crop_first": crop,
            "stain_normalise_first": arm.card.get("stain"),
        },
        "output": {"name": "prob_all", "shape": "(N,)", "meaning": "P(ALL)"},
        "threshold": arm.threshold,
        "threshold_source": arm.card.get("threshold_source"),
        "max_abs_difference_from_pytorch": difference,
        "arm": {key: value for key, value in arm.card.items() if key != "spec"},
    }


def export_arm(
    arm_dir: str | Path, out: str | Path, *, fmt: str = "onnx", input_dtype: str = "uint8"
) -> ExportResult:
    """Export the arm in `arm_dir` to `out` (and its card to `<out>.json`); check it
    reproduces PyTorch to TOLERANCE at the arm's size and at `CHECK_SIDE` px."""
    if fmt in DROPPED:
        raise ConfigError(DROPPED[fmt])
    if input_dtype not in INPUT_DTYPES:
        raise ConfigError(
            f"input dtype {input_dtype!r} is not supported; use one of {', '.join(INPUT_DTYPES)}."
        )
    exporter = EXPORTERS.get(fmt)
    arm = load_trained_arm(arm_dir)
    wrapped = probability_model(arm)
    out = Path(out)
    # Export from an image of neither size checked below, so no size is baked in.
    run = exporter(wrapped, out, example_images(arm.image_size + 8, input_dtype))
    difference = 0.0
    for side, n in ((arm.image_size, 3), (CHECK_SIDE, 1), (CHECK_SIDE // 2, 2)):
        check = example_images(side, input_dtype, n=n, seed=side)  # other batches than exported
        check = check[:, :, : side * 2 // 3] if side == CHECK_SIDE // 2 else check  # not square
        with torch.no_grad():
            expected = wrapped(check).numpy()
        difference = max(difference, float(np.max(np.abs(run(check.numpy()) - expected))))
    if not difference <= TOLERANCE:
        out.unlink(missing_ok=True)
        raise TrainingError(
            f"{out}: the {fmt} export differs from PyTorch by {difference:.2e} "
            f"(> {TOLERANCE:g}) in P(ALL); it was removed. Try the other format."
        )
    card_path = out.with_name(out.name + ".json")
    atomic.write_json(card_path, export_card(arm, fmt, input_dtype, difference))
    return ExportResult(out, card_path, fmt, input_dtype, arm.image_size, difference)
