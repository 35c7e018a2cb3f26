"""Export a trained arm as one self-contained model file: TorchScript or ONNX.

The exported model takes RGB images as (N, H, W, 3), H = W = the arm's image size, the
layout numpy / PIL / OpenCV arrays already have: uint8 in 0..255, or float in [0, 1]. It
scales, normalises with the arm's mean/std and returns P(ALL), shape (N,). Resize and crop
with the arm's policy first (`leukaug.data.cache.prepare_image`). TorchScript accepts
either dtype; an ONNX graph has one input type, chosen at export (`input_dtype`).
Every export is checked against PyTorch on random images before it is reported done.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from leukaug.core import atomic
from leukaug.core.errors import ConfigError, TrainingError
from leukaug.core.registry import Registry
from leukaug.trained import INPUT_DTYPES
from leukaug.trained.loader import load_trained_arm
from leukaug.trained.predict import TrainedArm

TOLERANCE = 1e-4  # max |P(ALL) exported - P(ALL) PyTorch| accepted
ONNX_OPSET = 18


class ProbabilityModel(nn.Module):
    """(N, H, W, 3) uint8 or float [0, 1] images -> P(ALL) (N,), normalisation inside."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        x = (x.permute(0, 3, 1, 2) - self.mean) / self.std
        return torch.sigmoid(self.model(x).reshape(-1))


def probability_model(arm: TrainedArm) -> ProbabilityModel:
    """The arm's model on CPU in eval mode, wrapped to take images and return P(ALL)."""
    model = arm.model.to("cpu", memory_format=torch.contiguous_format).eval()
    return ProbabilityModel(model, list(arm.card["mean"]), list(arm.card["std"])).eval()


def example_images(size: int, dtype: str, n: int = 2, seed: int = 0) -> torch.Tensor:
    """Random (n, size, size, 3) images of `dtype`, for tracing and checking an export."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=generator)
    return images if dtype == "uint8" else images.float() / 255.0


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    input_dtype: str
    image_size: int
    max_abs_difference: float  # against PyTorch on random images


Exporter = Callable[[ProbabilityModel, Path, torch.Tensor], Callable[[np.ndarray], np.ndarray]]
EXPORTERS: Registry[Exporter] = Registry("export format")


@EXPORTERS.register("torchscript")
def _torchscript(
    wrapped: ProbabilityModel, out: Path, example: torch.Tensor
) -> Callable[[np.ndarray], np.ndarray]:
    """Trace the network, script the wrapper (so the dtype branch stays)."""
    floats = example.float() / 255.0 if example.dtype == torch.uint8 else example
    with warnings.catch_warnings(), torch.no_grad():
        # TorchScript is deprecated upstream but still the format C++/mobile runtimes load;
        # the size check the tracer warns about holds: the input size is fixed.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(wrapped.model, floats.permute(0, 3, 1, 2).contiguous())
        scripted = torch.jit.script(ProbabilityModel(traced, [0.0] * 3, [1.0] * 3))
    scripted.mean.copy_(wrapped.mean)
    scripted.std.copy_(wrapped.std)
    # through a Python file, so a full disk is a StorageError naming the folder
    with atomic.atomic_path(out) as tmp, open(tmp, "wb") as handle, atomic.os_errors_unwrapped():
        torch.jit.save(scripted, handle)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(out), map_location="cpu")

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
def _onnx(
    wrapped: ProbabilityModel, out: Path, example: torch.Tensor
) -> Callable[[np.ndarray], np.ndarray]:
    """torch.onnx (dynamo exporter, onnxscript), dynamic batch; checked with onnxruntime."""
    _require_onnx()
    import onnxruntime

    batch = torch.export.Dim("batch", min=1)
    with atomic.atomic_path(out) as tmp:
        program = torch.onnx.export(
            wrapped,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=["prob_all"],
            dynamic_shapes={"images": {0: batch}},
            opset_version=ONNX_OPSET,
            verbose=False,
        )
        program.save(str(tmp), external_data=False)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])

    def run(images: np.ndarray) -> np.ndarray:
        return session.run(None, {"images": images})[0]

    return run


def export_arm(
    arm_dir: str | Path, out: str | Path, *, fmt: str = "onnx", input_dtype: str = "uint8"
) -> ExportResult:
    """Export the arm in `arm_dir` to `out` and check it reproduces PyTorch to TOLERANCE."""
    if input_dtype not in INPUT_DTYPES:
        raise ConfigError(
            f"input dtype {input_dtype!r} is not supported; use one of {', '.join(INPUT_DTYPES)}."
        )
    exporter = EXPORTERS.get(fmt)
    arm = load_trained_arm(arm_dir)
    wrapped = probability_model(arm)
    size = int(arm.card["image_size"])
    out = Path(out)
    run = exporter(wrapped, out, example_images(size, input_dtype))
    check = example_images(size, input_dtype, n=3, seed=1)  # another batch size than traced
    with torch.no_grad():
        expected = wrapped(check).numpy()
    difference = float(np.max(np.abs(run(check.numpy()) - expected)))
    if not difference <= TOLERANCE:
        raise TrainingError(
            f"{out}: the {fmt} export differs from PyTorch by {difference:.2e} "
            f"(> {TOLERANCE:g}) in P(ALL); do not use it. Try the other format."
        )
    return ExportResult(out, fmt, input_dtype, size, difference)
