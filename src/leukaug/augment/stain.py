"""RGB <-> HED (haematoxylin, eosin, DAB) colour deconvolution in torch, with
scikit-image's stain matrices (Ruifrok & Johnston 2001).

Concentrations are in optical-density units, OD = -ln(RGB) projected on the stain vectors.
scikit-image's `rgb2hed` divides the same quantity by -ln(1e-6) = 13.8 and clips negative
concentrations at 0. We keep the plain OD scale, on which Tellez et al.'s jitter
c -> c (1 + a) + b with |a|, |b| <= 0.05 is indeed light (skimage's scale would make the
shift b 13.8 times stronger), and we do not clip, so that `hed_to_rgb(rgb_to_hed(x)) == x`
and a zero jitter is the identity. Black (RGB clipped at 1e-6, OD 13.8) stays black.
"""

from __future__ import annotations

import torch

# skimage.color.colorconv.rgb_from_hed; rows are the H, E and DAB stain vectors.
RGB_FROM_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64
)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
MIN_INTENSITY = 1e-6  # as skimage: RGB is clipped here before the log


def rgb_to_hed(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HED concentrations (optical density units)."""
    matrix = HED_FROM_RGB.to(images.device, images.dtype)
    optical_density = -torch.log(images.clamp_min(MIN_INTENSITY))
    return torch.einsum("bihw,ij->bjhw", optical_density, matrix)


def hed_to_rgb(stains: torch.Tensor) -> torch.Tensor:
    """HED concentrations (optical density units) -> RGB, clipped to [0, 1]."""
    matrix = RGB_FROM_HED.to(stains.device, stains.dtype)
    optical_density = torch.einsum("bihw,ij->bjhw", stains, matrix)
    return torch.exp(-optical_density).clamp(0.0, 1.0)
