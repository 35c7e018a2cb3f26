"""Where the models look: Grad-CAM (the `grad-cam` package) for every model family.

`target_layer(model)` picks each family's last convolutional feature map (Selvaraju et
al. 2017 use the last convolutional layer: the best compromise between semantics and
spatial detail): layer 9 (the last convolution) of custom_cnn / custom_resnet, `layer4` of
the torchvision ResNets, `Mixed_7c` of InceptionV3, and the last stage in timm's
`feature_info` (CNNs; transformer token maps are not supported). `grad_cams` gives one
map per image in [0, 1] at the input's size, for the predicted class (the logit for ALL,
its negative for HEM) or a fixed one; `foreground_share` is the share of a map's mass on
the cell (`leukaug.data.cell_mask`: on black or on a smear; NaN, with the reason in
`cell_mask`, where no cell is found): a model that looks mostly at the background or the
frame is not looking at the cell. `explain_arm` runs all of it on a trained arm's folder.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from torch import nn

from leukaug.core import atomic
from leukaug.core.errors import ConfigError, DataError
from leukaug.data.cache import preprocess
from leukaug.data.cell_mask import find_cells
from leukaug.data.images import is_image_file, open_rgb
from leukaug.data.regions import check_images, foreground_share
from leukaug.data.stain_norm import StainTarget
from leukaug.models.custom_cnn import CustomCNN
from leukaug.models.timm_models import TimmClassifier
from leukaug.models.torchvision_models import TorchvisionClassifier
from leukaug.trained import CAM_TARGETS
from leukaug.trained.loader import load_trained_arm

CAM_CSV = "cam.csv"
CELL_FOUND = "found"  # cam.csv's cell_mask where the cell was found (else the reason)


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
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps (B, H, W) in [0, 1] for normalised inputs (B, 3, H, W), and P(ALL) (B,).

    `target`: "predicted" explains each image's predicted class, "all" / "hem" a fixed one.
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
        signs = np.where(prob_all >= 0.5, 1.0, -1.0)
    else:
        signs = np.full(len(inputs), 1.0 if target == "all" else -1.0)
    # An input that requires grad keeps the graph alive through frozen layers (freeze_first).
    inputs = inputs.detach().requires_grad_(True)
    with GradCAM(model=model, target_layers=[layer or target_layer(model)]) as cam:
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
) -> Explanation:
    """Grad-CAM and foreground share of uint8 cells (N, H, W, 3) at the model's input size
    (`layer`: another layer than the family's `target_layer`)."""
    images = check_images(images)
    cams, probs = [], []
    for start in range(0, len(images), batch_size):
        inputs = normalise(images[start : start + batch_size], mean, std)
        batch_cams, batch_probs = grad_cams(model, inputs, target, layer)
        cams.append(batch_cams)
        probs.append(batch_probs)
    cam_array = np.concatenate(cams) if cams else np.zeros((0, *images.shape[1:3]), np.float32)
    prob_array = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    cells = find_cells(images)
    share = foreground_share(cam_array, cells.masks)
    notes = tuple(reason or CELL_FOUND for reason in cells.reasons)
    return Explanation(cam_array, prob_array, share, notes)


def write_overlays(
    out_dir: str | Path, names: Sequence[str], images: np.ndarray, explanation: Explanation
) -> pd.DataFrame:
    """`<name>_cam.png` per image and `cam.csv` (image, prob_all, predicted, foreground_share,
    cell_mask)."""
    out_dir = Path(out_dir)
    for name, image, cam in zip(names, images, explanation.cams, strict=True):
        atomic.write_bytes(out_dir / f"{name}_cam.png", overlay_png(image, cam))
    table = pd.DataFrame(
        {
            "image": list(names),
            "prob_all": explanation.prob_all,
            "predicted": np.where(explanation.prob_all >= 0.5, "ALL", "HEM"),
            "foreground_share": explanation.foreground_share,
            "cell_mask": list(explanation.cell_mask),
        }
    )
    atomic.write_csv(out_dir / CAM_CSV, table)
    return table


def read_inputs(
    inputs: Sequence[str | Path],
    size: int,
    crop: float | None = None,
    stain: StainTarget | None = None,
) -> tuple[list[str], np.ndarray]:
    """Image files (or folders of them, recursively) decoded and resized as the cache does;
    returns unique names (file stems) and uint8 (N, size, size, 3)."""

    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.is_file() and is_image_file(p))
        elif item.is_file():
            paths.append(item)
        else:
            raise DataError(f"input {item} does not exist; pass image files or folders of them.")
    if not paths:
        raise DataError(f"no image files among {', '.join(map(str, inputs))}.")
    names: list[str] = []
    for path in paths:
        name, suffix = path.stem, 2
        while name in names:
            name, suffix = f"{path.stem}_{suffix}", suffix + 1
        names.append(name)
    images = np.stack([preprocess(open_rgb(p)[0], size, crop, stain, str(p)) for p in paths])
    return names, images


def explain_arm(
    arm_dir: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    target: str = "predicted",
    crop: float | None = None,
) -> pd.DataFrame:
    """Grad-CAM overlays of a trained arm on image files into `out_dir`; returns `cam.csv`'s table."""
    arm = load_trained_arm(arm_dir)
    stain = StainTarget.from_dict(arm.card["stain"]) if arm.card.get("stain") else None
    names, images = read_inputs(inputs, arm.image_size, crop, stain)
    explanation = explain_images(arm.model, images, arm.mean, arm.std, target=target)
    return write_overlays(out_dir, names, images, explanation)
