"""U-Net (Ronneberger et al. 2015) and Attention U-Net (Oktay et al. 2018), with or
without skip connections.

Without skips it is an encoder-decoder: nothing of the encoder reaches the decoder
except through the bottleneck, which the paper found best for learning from noisy
pseudo labels. Attention U-Net passes each skip through an additive attention gate
driven by the coarser decoder features; without skips there is no encoder feature to
gate, so the gates weight the decoder's own upsampled features by the coarser decoder
signal, and the net keeps its learned spatial attention.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from srjax.models.blocks import AttentionGate, ConvBlock, conv_encoder, pad_to_multiple, presets

WIDTHS = presets(paper=(32, 64, 128, 288))
ATTENTION_WIDTHS = presets(paper=(32, 64, 128, 272))
ATTENTION_NOSKIP_WIDTHS = presets(paper=(32, 64, 128, 288))


class UNet(nn.Module):
    num_classes: int
    widths: tuple[int, ...]
    skip: bool = True
    attention: bool = False
    dropout: float = 0.1
    cam_layer = "bottleneck"

    @nn.compact
    def __call__(self, x, train: bool = False):
        x, (h, w) = pad_to_multiple(x, 2 ** (len(self.widths) - 1))
        *features, x = conv_encoder(x, self.widths, self.dropout, train)
        for level, (width, encoded) in enumerate(zip(reversed(self.widths[:-1]), reversed(features))):
            up = nn.ConvTranspose(width, (2, 2), strides=(2, 2))(x)
            if self.attention:
                encoded = AttentionGate(max(width // 2, 1))(encoded if self.skip else up, x)
                x = jnp.concatenate([up, encoded], axis=-1) if self.skip else encoded
            else:
                x = jnp.concatenate([up, encoded], axis=-1) if self.skip else up
            x = ConvBlock(width, self.dropout, name=f"decoder_{level}")(x, train)
        x = nn.Conv(self.num_classes, (1, 1))(x)
        return x[:, :h, :w]
