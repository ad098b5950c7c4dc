"""Attention U-Net (Oktay et al. 2018): U-Net whose skip features pass through additive
attention gates driven by the coarser decoder features.

Without skips there is no encoder feature to gate; the gates then weight the decoder's
own upsampled features by the coarser decoder signal, so the net keeps its learned
spatial attention while nothing of the encoder reaches the decoder except through the
bottleneck.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from srjax.models.blocks import AttentionGate, ConvBlock, pad_to_multiple

WIDTHS = {
    "tiny": (4, 8),
    "cpu": (16, 32, 64, 128),
    "paper": (32, 64, 128, 272),
}
NOSKIP_WIDTHS = {
    "tiny": (4, 8),
    "cpu": (16, 32, 64, 128),
    "paper": (32, 64, 128, 288),
}


class AttentionUNet(nn.Module):
    num_classes: int
    widths: tuple[int, ...]
    skip: bool = True
    dropout: float = 0.1
    cam_layer = "bottleneck"

    @nn.compact
    def __call__(self, x, train: bool = False):
        x, (h, w) = pad_to_multiple(x, 2 ** (len(self.widths) - 1))
        features = []
        for level, width in enumerate(self.widths[:-1]):
            x = ConvBlock(width, self.dropout, name=f"encoder_{level}")(x, train)
            features.append(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = ConvBlock(self.widths[-1], self.dropout, name="bottleneck")(x, train)
        for level, (width, encoded) in enumerate(zip(reversed(self.widths[:-1]), reversed(features))):
            up = nn.ConvTranspose(width, (2, 2), strides=(2, 2))(x)
            gated = AttentionGate(max(width // 2, 1))(encoded if self.skip else up, x)
            x = jnp.concatenate([up, gated], axis=-1) if self.skip else gated
            x = ConvBlock(width, self.dropout, name=f"decoder_{level}")(x, train)
        x = nn.Conv(self.num_classes, (1, 1))(x)
        return x[:, :h, :w]
