"""DeepLabv3+ (Chen et al. 2018): atrous encoder with ASPP, and a light decoder that
refines the upsampled ASPP features with the encoder's stride-4 features.

The backbone is a small residual net (GroupNorm, PReLU) at output stride 16: a
stride-2 stem, three strided stages, and a last stage dilated by 2 instead of strided.
ASPP uses rates 6, 12, 18 and image pooling, as the paper does at output stride 16.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from srjax.models.blocks import ASPP, ConvUnit, ResidualBlock, pad_to_multiple, resize

# (stem, stage widths x 4, ASPP, low-level projection)
WIDTHS = {
    "tiny": (4, 4, 8, 8, 8, 8, 4),
    "cpu": (16, 24, 32, 64, 96, 64, 16),
    "paper": (32, 48, 96, 160, 160, 128, 48),
}
OUTPUT_STRIDE = 16


class DeepLabV3Plus(nn.Module):
    num_classes: int
    widths: tuple[int, ...]
    dropout: float = 0.1
    cam_layer = "aspp"

    @nn.compact
    def __call__(self, x, train: bool = False):
        stem, w1, w2, w3, w4, aspp, low = self.widths
        x, (h, w) = pad_to_multiple(x, OUTPUT_STRIDE)
        size = x.shape[1:3]
        x = ConvUnit(stem, strides=2)(x)
        low_level = ResidualBlock(w1, 2, self.dropout, name="encoder_0")(x, train)  # stride 4
        x = ResidualBlock(w2, 2, self.dropout)(low_level, train)
        x = ResidualBlock(w3, 2, self.dropout)(x, train)  # stride 16
        x = _DilatedStage(w4, self.dropout)(x, train)
        x = ASPP(aspp, rates=(6, 12, 18), dropout=self.dropout, name="aspp")(x, train)
        x = resize(x, low_level.shape[1:3])
        x = jnp.concatenate([x, ConvUnit(low, kernel=1)(low_level)], axis=-1)
        x = ConvUnit(aspp)(ConvUnit(aspp)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = resize(nn.Conv(self.num_classes, (1, 1))(x), size)
        return x[:, :h, :w]


class _DilatedStage(nn.Module):
    """Two dilation-2 conv units with a residual connection: more context, same stride."""

    features: int
    dropout: float

    @nn.compact
    def __call__(self, x, train: bool):
        shortcut = ConvUnit(self.features, kernel=1)(x)
        x = ConvUnit(self.features, dilation=2)(ConvUnit(self.features, dilation=2)(x))
        return nn.Dropout(self.dropout, deterministic=not train)(x + shortcut)
