"""Where the models look: Grad-CAM (the `grad-cam` package) for every model family.

`target_layer(model)` picks each family's last convolutional feature map (Selvaraju et
al. 2017 use the last convolutional layer: the best compromise between semantics and
spatial detail): layer 9 (the last convolution) of custom_cnn / custom_resnet, `layer4` of
the torchvision ResNets, `Mixed_7c` of InceptionV3, and the last stage in timm's
`feature_info` (CNNs; transformer token maps are not supported). `cam_layer(model, size)`
is the one rule every Grad-CAM here uses (`leukaug explain` and the study's `cam.csv`):
the family's layer, unless its map is too small at that image size (the custom CNN's is
1 x 1 at 72 px), then the deepest one that is not. `grad_cams` gives one
map per image in [0, 1] at the input's size, for the predicted class (the logit for ALL,
its negative for HEM, at the arm's operating threshold) or a fixed one; `foreground_share` is the share of a map's mass on
the cell (`leukaug.data.cell_mask`: on black or on a smear; NaN, with the reason in
`cell_mask`, where no cell is found): a model that looks mostly at the background or the
frame is not looking at the cell. `explain_arm` runs all of it on a trained arm's folder.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from torch import nn

from leukaug.core import atomic
from leukaug.core.errors import ConfigError
from leukaug.data.cell_mask import find_cells
from leukaug.data.images import open_rgb
from leukaug.data.regions import check_images, foreground_share
from leukaug.models.custom_cnn import CustomCNN
from leukaug.models.timm_models import TimmClassifier
from leukaug.models.torchvision_models import TorchvisionClassifier
from leukaug.trained import CAM_TARGETS
from leukaug.trained.loader import load_trained_arm
from leukaug.trained.predict import OUTPUT_COLUMNS, collect_inputs, output_table, preparer

CAM_CSV = "cam.csv"
CELL_FOUND = "found"  # cam.csv's cell_mask where the cell was found (else the reason)
# A CAM needs a map of some size: at small inputs (the custom CNN's last convolution is 1 x 1
# at 72 px) the deepest convolution whose output is at least this many pixels a side is used.
MIN_CAM_SIDE = 4


def _seed_cnn_layer(model: nn.Module) -> nn.Module:
    return model.layers[9]  # the seed's last convolution (Conv2D 256), or its skip unit


def _torchvision_layer(model: nn.Module) -> nn.Module:
    backbone = model.backbone
    if hasattr(backbone, "layer4"):
        return backbone.layer4[-1]
    return backbone.Mixed_7c


def _timm_layer(model: nn.Module) -> nn.Module:
    info = getattr(model.backbone, "feature_info", None)
    if not info:
        raise ConfigError(
            f"{type(model.backbone).__name__} declares no feature stages (timm feature_info); "
            "Grad-CAM needs a convolutional feature map."
        )
    return model.backbone.get_submodule(info[-1]["module"])


# model family (class) -> its Grad-CAM layer; a new family adds one line here.
TARGET_LAYERS: dict[type[nn.Module], Callable[[nn.Module], nn.Module]] = {
    CustomCNN: _seed_cnn_layer,  # custom_resnet is a CustomCNN
    TorchvisionClassifier: _torchvision_layer,
    TimmClassifier: _timm_layer,
}


def target_layer(model: nn.Module) -> nn.Module:
    """The layer whose activations Grad-CAM weighs, for any registered model family."""
    for family, pick in TARGET_LAYERS.items():
        if isinstance(model, family):
            return pick(model)
    raise ConfigError(
        f"no Grad-CAM target layer is known for {type(model).__name__}; families: "
        f"{', '.join(f.__name__ for f in TARGET_LAYERS)} (add one to explain.TARGET_LAYERS)."
    )


def cam_layer(model: nn.Module, image_size: int) -> tuple[str, nn.Module]:
    """(name, module) Grad-CAM weighs at `image_size`: the family's `target_layer`, unless its
    map is smaller than `MIN_CAM_SIDE` a side; then the module run last whose output map is
    not (a block or stage output, since a container's output is recorded after its children's)."""
    target = target_layer(model)
    names = {module: name for name, module in model.named_modules()}
    sides: list[tuple[nn.Module, int]] = []

    def record(module: nn.Module, _: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            sides.append((module, min(output.shape[-2:])))

    hooks = [module.register_forward_hook(record) for module in model.modules()]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    if dict(sides).get(target, 0) < MIN_CAM_SIDE:
        large = [module for module, side in sides if side >= MIN_CAM_SIDE]
        target = large[-1] if large else target
    return names.get(target, type(target).__name__), target


def _no_inplace(model: nn.Module) -> None:
    """In-place activations would overwrite the activations Grad-CAM keeps; switch them off."""
    for module in model.modules():
        if hasattr(module, "inplace"):
            module.inplace = False


class _LogitTarget:
    """pytorch_grad_cam target for a one-logit model: +logit (ALL) or -logit (HEM)."""

    def __init__(self, sign: float) -> None:
        self.sign = sign

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return self.sign * output


def grad_cams(
    model: nn.Module,
    inputs: torch.Tensor,
    target: str = "predicted",
    layer: nn.Module | None = None,
    threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps (B, H, W) in [0, 1] for normalised inputs (B, 3, H, W), and P(ALL) (B,).

    `target`: "predicted" explains each image's predicted class (ALL when P(ALL) >=
    `threshold`), "all" / "hem" a fixed one. `layer` None: `cam_layer` at the inputs' size.
    """
    if target not in CAM_TARGETS:
        raise ConfigError(
            f"Grad-CAM target must be one of {', '.join(CAM_TARGETS)}, got {target!r}."
        )
    model = model.eval()
    _no_inplace(model)
    inputs = inputs.to(next(model.parameters()).device)
    with torch.no_grad():
        prob_all = torch.sigmoid(model(inputs).float()).cpu().numpy()
    if target == "predicted":
        signs = np.where(prob_all >= threshold, 1.0, -1.0)
    else:
        signs = np.full(len(inputs), 1.0 if target == "all" else -1.0)
    # An input that requires grad keeps the graph alive through frozen layers (freeze_first).
    inputs = inputs.detach().requires_grad_(True)
    layer = layer if layer is not None else cam_layer(model, int(inputs.shape[-1]))[1]
    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=inputs, targets=[_LogitTarget(float(s)) for s in signs])
    return np.asarray(maps, dtype=np.float32), prob_all


def overlay_png(image: np.ndarray, cam: np.ndarray) -> bytes:
    """PNG bytes: the cell and its CAM side by side with the CAM blended over the cell."""
    rgb = image.astype(np.float32) / 255.0
    blended = show_cam_on_image(rgb, cam, use_rgb=True, image_weight=0.5)
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate([image, blended], axis=1)).save(buffer, format="PNG")
    return buffer.getvalue()


def normalise(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W): [0, 1], then (x - mean) / std (the model's input)."""
    x = torch.from_numpy(check_images(images).copy()).permute(0, 3, 1, 2).float() / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


@dataclass(frozen=True)
class Explanation:
    """CAMs of a batch: maps (N, H, W), P(ALL) (N,), foreground share (N,) and, per image,
    "found" or why no cell was found (its share is then NaN)."""

    cams: np.ndarray
    prob_all: np.ndarray
    foreground_share: np.ndarray
    cell_mask: tuple[str, ...] = ()


def explain_images(
    model: nn.Module,
    images: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    target: str = "predicted",
    batch_size: int = 16,
    layer: nn.Module | None = None,
    threshold: float = 0.5,
) -> Explanation:
    """Grad-CAM and foreground share of uint8 cells (N, H, W, 3) at the model's input size
    (`layer` None: `cam_layer` at the images' size, decided once for all batches)."""
    images = check_images(images)
    if layer is None and len(images):
        layer = cam_layer(model, images.shape[1])[1]
    cams, probs = [], []
    for start in range(0, len(images), batch_size):
        inputs = normalise(images[start : start + batch_size], mean, std)
        batch_cams, batch_probs = grad_cams(model, inputs, target, layer, threshold)
        cams.append(batch_cams)
        probs.append(batch_probs)
    cam_array = np.concatenate(cams) if cams else np.zeros((0, *images.shape[1:3]), np.float32)
    prob_array = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    cells = find_cells(images)
    share = foreground_share(cam_array, cells.masks)
    notes = tuple(reason or CELL_FOUND for reason in cells.reasons)
    return Explanation(cam_array, prob_array, share, notes)


def overlay_names(paths: Sequence[Path]) -> list[str]:
    """Unique overlay file stems for `paths`: the file's stem, `_2`, `_3`... on a clash."""
    names: list[str] = []
    for path in paths:
        name, suffix = path.stem, 2
        while name in names:
            name, suffix = f"{path.stem}_{suffix}", suffix + 1
        names.append(name)
    return names


def write_overlays(
    out_dir: str | Path,
    paths: Sequence[Path],
    images: np.ndarray,
    explanation: Explanation,
    *,
    threshold: float,
    layer: str,
) -> pd.DataFrame:
    """`<stem>_cam.png` per image and `cam.csv`: predict's columns (path, prob, predicted,
    threshold), then foreground_share, cell_mask, layer and overlay (the PNG's file name)."""
    out_dir = Path(out_dir)
    overlays = [f"{name}_cam.png" for name in overlay_names(paths)]
    for overlay, image, cam in zip(overlays, images, explanation.cams, strict=True):
        atomic.write_bytes(out_dir / overlay, overlay_png(image, cam))
    table = output_table(paths, explanation.prob_all, threshold).assign(
        foreground_share=explanation.foreground_share,
        cell_mask=list(explanation.cell_mask),
        layer=layer,
        overlay=overlays,
    )
    atomic.write_csv(out_dir / CAM_CSV, table)
    return table


CAM_COLUMNS = (*OUTPUT_COLUMNS, "foreground_share", "cell_mask", "layer", "overlay")


def explain_arm(
    arm_dir: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    target: str = "predicted",
    crop: float | None = None,
) -> pd.DataFrame:
    """Grad-CAM overlays of a trained arm on images (files, folders, CSVs of paths, as
    `leukaug predict` takes) into `out_dir`; returns `cam.csv`'s table (`CAM_COLUMNS`)."""
    arm = load_trained_arm(arm_dir)
    paths, _ = collect_inputs(inputs)
    prepare = preparer(arm.card, crop)
    images = np.stack([prepare(open_rgb(path)[0], str(path)) for path in paths])
    layer_name, layer = cam_layer(arm.model, arm.image_size)
    explanation = explain_images(
        arm.model, images, arm.mean, arm.std, target=target, layer=layer, threshold=arm.threshold
    )
    return write_overlays(
        out_dir, paths, images, explanation, threshold=arm.threshold, layer=layer_name
    )
