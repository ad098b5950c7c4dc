"""UNet++ (Zhou et al. 2018): nested, densely connected skip pathways.

Node X[i][j] (level i, column j) convolves the concatenation of X[i][0..j-1] and the
bilinearly upsampled X[i+1][j-1]; the output comes from X[0][L-1]. Without skips a
node gets only the upsampled node below it, so every node off the path from the
bottleneck to the output would be unused and is not built: the net becomes an
encoder-decoder with UNet++'s blocks and upsampling.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from srjax.models.blocks import ConvBlock, conv_encoder, pad_to_multiple, presets, upsample

WIDTHS = presets(paper=(24, 48, 96, 304))
NOSKIP_WIDTHS = presets(paper=(32, 64, 128, 296))


class UNetPlusPlus(nn.Module):
    num_classes: int
    widths: tuple[int, ...]
    skip: bool = True
    dropout: float = 0.1
    cam_layer = "bottleneck"

    @nn.compact
    def __call__(self, x, train: bool = False):
        depth = len(self.widths)
        x, (h, w) = pad_to_multiple(x, 2 ** (depth - 1))
        nodes = {(i, 0): f for i, f in enumerate(conv_encoder(x, self.widths, self.dropout, train))}
        for j in range(1, depth):
            for i in range(depth - j):
                if not self.skip and i + j != depth - 1:
                    continue  # off the bottleneck-to-output path: nothing would use it
                inputs = [nodes[i, k] for k in range(j)] if self.skip else []
                inputs.append(upsample(nodes[i + 1, j - 1]))
                nodes[i, j] = ConvBlock(self.widths[i], self.dropout, name=f"node_{i}_{j}")(
                    jnp.concatenate(inputs, axis=-1), train)
        x = nn.Conv(self.num_classes, (1, 1))(nodes[0, depth - 1])
        return x[:, :h, :w]
