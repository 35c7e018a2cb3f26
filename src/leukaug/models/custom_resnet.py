"""`custom_resnet`: the seed's SELU CNN with skip connections, its authors' proposed next step.

Same depth, widths, pools, dropouts and dense head as `custom_cnn` (the seed's 25 Keras
layers, index for index, so `freeze_first = 19` means the same thing), with one change:
each of the four 3x3 'valid' convolutions becomes a residual unit

    out = conv3x3(x) + proj1x1(crop1(x))

where `crop1` drops the one-pixel border that the 'valid' convolution loses and `proj1x1`
is a 1x1 projection shortcut (ResNet's option B; He et al. 2016), needed because every
convolution changes the width (3 > 32 > 64 > 128 > 256). The SELU that follows in the
seed's list then acts on the sum, as ReLU does after the addition in a ResNet. The
projections add 3*32+32 + 32*64+64 + 64*128+128 + 128*256+256 = 43,584 parameters:
16,464,769 at 256 px (the seed: 16,421,185). Initialisation is the seed's `lecun_uniform`
for every convolution, the projections included.
"""

from __future__ import annotations

import torch
from torch import nn

from leukaug.models.catalog import BUILDERS, ModelBuilder
from leukaug.models.custom_cnn import CustomCNN, build_seed_cnn


class SkipConv(nn.Module):
    """A 3x3 'valid' convolution plus a 1x1 projection shortcut of the centre-cropped input."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3)
        self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.shortcut(x[..., 1:-1, 1:-1])


class CustomResNet(CustomCNN):
    """The seed's 25-layer network whose convolutions carry projection shortcuts."""

    name = "custom_resnet"

    def make_conv(self, in_channels: int, out_channels: int) -> nn.Module:
        return SkipConv(in_channels, out_channels)


BUILDERS.add(
    "custom_resnet",
    ModelBuilder(
        lambda image_size, head, weights_file: build_seed_cnn(
            CustomResNet, image_size, weights_file
        )
    ),
)
