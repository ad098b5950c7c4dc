"""srjax's ``unet_noskip`` in PyTorch, for the benchmarks' reference (PyTorch is the
optional ``bench`` extra, never a dependency of srjax).

Layer for layer the Flax model of ``srjax.models.unet``: per width a block of two
(3x3 conv without bias, GroupNorm with srjax's group count and epsilon, PReLU with one
slope) and dropout, 2x2 max-pooling between the encoder's blocks, a 2x2 transposed
conv before each decoder block, a 1x1 conv to the classes. ``parameter_count`` equals
the Flax model's (checked by the benchmarks before they time anything).
"""

from __future__ import annotations

import torch
from torch import nn

from srjax.models.blocks import group_count

GROUP_NORM_EPSILON = 1e-6  # flax.linen.GroupNorm's


class ConvBlock(nn.Sequential):
    def __init__(self, inputs: int, features: int, dropout: float):
        layers = []
        for channels in (inputs, features):
            layers += [nn.Conv2d(channels, features, 3, padding=1, bias=False),
                       nn.GroupNorm(group_count(features), features, eps=GROUP_NORM_EPSILON),
                       nn.PReLU(num_parameters=1, init=0.25)]
        super().__init__(*layers, nn.Dropout(dropout))


class UNetNoSkip(nn.Module):
    """[B, slices, H, W] -> [B, classes, H, W] logits; H and W multiples of 2^(levels - 1)."""

    def __init__(self, slices: int, classes: int, widths: tuple[int, ...], dropout: float = 0.1):
        super().__init__()
        inputs = [slices, *widths[:-1]]
        self.encoder = nn.ModuleList(ConvBlock(i, w, dropout) for i, w in zip(inputs, widths))
        decoder_widths = list(reversed(widths[:-1]))
        self.up = nn.ModuleList(nn.ConvTranspose2d(i, w, 2, stride=2)
                                for i, w in zip([widths[-1], *decoder_widths[:-1]], decoder_widths))
        self.decoder = nn.ModuleList(ConvBlock(w, w, dropout) for w in decoder_widths)
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x):
        for level, block in enumerate(self.encoder):
            x = block(nn.functional.max_pool2d(x, 2) if level else x)
        for up, block in zip(self.up, self.decoder):
            x = block(up(x))
        return self.head(x)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def ema_(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * student, in place."""
    with torch.no_grad():
        for t, s in zip(teacher.parameters(), student.parameters()):
            t.mul_(decay).add_(s, alpha=1 - decay)
