"""UNet 3+ (Huang et al. 2020): full-scale skip connections.

Each decoder level d gathers every encoder level i <= d (max-pooled down to its scale)
and every deeper decoder level and the bottleneck (bilinearly upsampled), projects each
to ``widths[0]`` channels with a conv unit, and fuses the concatenation with another.
Without skips only the deeper decoder levels and the bottleneck feed a decoder level.
Deep supervision and the classification-guided module are left out, as in the
paper's comparison of plain segmentation nets.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from srjax.models.blocks import ConvUnit, conv_encoder, pad_to_multiple, presets, resize

WIDTHS = presets(paper=(24, 48, 96, 160, 192))
NOSKIP_WIDTHS = presets(paper=(32, 64, 128, 160, 224))


class UNet3Plus(nn.Module):
    num_classes: int
    widths: tuple[int, ...]
    skip: bool = True
    dropout: float = 0.1
    cam_layer = "bottleneck"

    @nn.compact
    def __call__(self, x, train: bool = False):
        depth = len(self.widths)
        x, (h, w) = pad_to_multiple(x, 2 ** (depth - 1))
        encoder = conv_encoder(x, self.widths, self.dropout, train)
        channels = self.widths[0]
        decoder = {depth - 1: encoder[-1]}
        for d in range(depth - 2, -1, -1):
            size = encoder[d].shape[1:3]
            parts = []
            if self.skip:
                for i in range(d + 1):
                    factor = 2 ** (d - i)
                    pooled = nn.max_pool(encoder[i], (factor, factor), strides=(factor, factor)) if factor > 1 \
                        else encoder[i]
                    parts.append(ConvUnit(channels)(pooled))
            parts += [ConvUnit(channels)(resize(decoder[j], size)) for j in range(d + 1, depth)]
            fused = ConvUnit(channels * len(parts), name=f"decoder_{d}")(jnp.concatenate(parts, axis=-1))
            decoder[d] = nn.Dropout(self.dropout, deterministic=not train)(fused)
        x = nn.Conv(self.num_classes, (3, 3))(decoder[0])
        return x[:, :h, :w]
