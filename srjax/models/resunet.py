"""ResUNet (Zhang et al. 2018) and ResUNet++ (Jha et al. 2019).

ResUNet: residual units throughout, strided residual units to go down, a residual
bridge, and a decoder that upsamples, concatenates the encoder's features and applies
a residual unit. ResUNet++ adds squeeze-and-excitation after each encoder unit, ASPP
(rates 6, 12, 18, as in the authors' code) at the bridge and before the output, and
an attention block that weights the decoder's features by the encoder's before
upsampling. Without skips no encoder feature enters the decoder (and ResUNet++'s
attention blocks, which need one, go with them).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from srjax.models.blocks import (
    ASPP,
    ConvUnit,
    ResidualBlock,
    SqueezeExcite,
    group_count,
    pad_to_multiple,
    presets,
    upsample,
)

RESUNET_WIDTHS = presets(paper=(32, 64, 128, 256))
RESUNET_NOSKIP_WIDTHS = presets(paper=(32, 64, 128, 288))
RESUNETPP_WIDTHS = presets(paper=(24, 48, 96, 144))
RESUNETPP_NOSKIP_WIDTHS = presets(paper=(32, 64, 128, 160))


class ResUNet(nn.Module):
    num_classes: int
    widths: tuple[int, ...]
    skip: bool = True
    dropout: float = 0.1
    plus_plus: bool = False  # ResUNet++: squeeze-excite, ASPP, attention
    cam_layer = "bottleneck"

    @nn.compact
    def __call__(self, x, train: bool = False):
        depth = len(self.widths)
        x, (h, w) = pad_to_multiple(x, 2 ** (depth - 1))
        x = ConvUnit(self.widths[0])(x)  # the stem's first conv, before the residual units start
        features = []
        for level, width in enumerate(self.widths[:-1]):
            x = ResidualBlock(width, 1 if level == 0 else 2, self.dropout, name=f"encoder_{level}")(x, train)
            if self.plus_plus:
                x = SqueezeExcite()(x)
            features.append(x)
        x = _Bridge(self.widths[-1], self.dropout, self.plus_plus, name="bottleneck")(x, train)
        for level, (width, encoded) in enumerate(zip(reversed(self.widths[:-1]), reversed(features))):
            if self.plus_plus and self.skip:
                x = _EncoderAttention(width)(encoded, x)
            x = upsample(x)
            if self.skip:
                x = jnp.concatenate([x, encoded], axis=-1)
            x = ResidualBlock(width, 1, self.dropout, name=f"decoder_{level}")(x, train)
        if self.plus_plus:
            x = ASPP(self.widths[0], dropout=self.dropout)(x, train)
        x = nn.Conv(self.num_classes, (1, 1))(x)
        return x[:, :h, :w]


class _Bridge(nn.Module):
    """A strided residual unit, then (ResUNet++) ASPP."""

    features: int
    dropout: float
    plus_plus: bool

    @nn.compact
    def __call__(self, x, train: bool):
        x = ResidualBlock(self.features, 2, self.dropout)(x, train)
        return ASPP(self.features, dropout=self.dropout)(x, train) if self.plus_plus else x


class _EncoderAttention(nn.Module):
    """ResUNet++'s attention block: the encoder's features, pooled to the decoder's scale,
    gate the decoder's features."""

    features: int

    @nn.compact
    def __call__(self, encoded, decoded):
        def branch(x):
            x = nn.GroupNorm(num_groups=group_count(x.shape[-1]))(x)
            return nn.Conv(self.features, (3, 3), use_bias=False)(nn.PReLU(negative_slope_init=0.25)(x))

        gate = nn.max_pool(branch(encoded), (2, 2), strides=(2, 2)) + branch(decoded)
        gate = nn.Conv(decoded.shape[-1], (3, 3))(nn.PReLU(negative_slope_init=0.25)(
            nn.GroupNorm(num_groups=group_count(self.features))(gate)))
        return gate * decoded
