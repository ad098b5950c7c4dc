"""SegFormer (Xie et al. 2021): a hierarchical transformer encoder (Mix Transformer)
and an all-MLP decoder.

Each of the four stages embeds overlapping patches with a strided conv (7x7 stride 4,
then 3x3 stride 2), then runs transformer blocks whose self-attention shrinks keys and
values by a spatial reduction ratio, and whose Mix-FFN puts a 3x3 depthwise conv
between its two dense layers in place of position encodings. The decoder projects the
four stages to one width, upsamples them to 1/4 scale, fuses and classifies, and the
logits are upsampled to the input size. LayerNorm and GELU as designed; the decoder's
fuse layer uses LayerNorm where the original has BatchNorm, so the net keeps no batch
statistics.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from srjax.models.blocks import pad_to_multiple, resize

# (stage widths x 4, decoder width); heads, depths and reduction ratios are fixed below.
WIDTHS = {
    "tiny": (8, 16, 16, 16, 16),
    "cpu": (24, 48, 96, 128, 96),
    "paper": (32, 64, 128, 160, 160),
}
HEADS = (1, 2, 4, 8)
DEPTHS = (2, 2, 2, 2)
REDUCTION = (8, 4, 2, 1)
MLP_RATIO = 4
STRIDE = 32


class EfficientAttention(nn.Module):
    """Multi-head self-attention over [B, H, W, C] tokens with keys and values computed from
    a copy downsampled ``reduction`` times (a strided conv), cutting the cost by reduction^2."""

    heads: int
    reduction: int

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        q = nn.Dense(c)(x).reshape(b, h * w, self.heads, c // self.heads)
        kv = x
        if self.reduction > 1:
            kv = nn.Conv(c, (self.reduction,) * 2, strides=self.reduction)(kv)
            kv = nn.LayerNorm()(kv)
        kv = nn.Dense(2 * c)(kv.reshape(b, -1, c)).reshape(b, -1, 2, self.heads, c // self.heads)
        k, v = kv[:, :, 0], kv[:, :, 1]
        weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(c // self.heads), axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, h, w, c)
        return nn.Dense(c)(out)


class MixFFN(nn.Module):
    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        x = nn.Dense(c * MLP_RATIO)(x)
        x = nn.Conv(c * MLP_RATIO, (3, 3), feature_group_count=c * MLP_RATIO)(x)
        return nn.Dense(c)(nn.gelu(x))


class Stage(nn.Module):
    features: int
    patch: int
    strides: int
    heads: int
    reduction: int
    depth: int
    dropout: float

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(self.features, (self.patch,) * 2, strides=self.strides)(x)
        x = nn.LayerNorm()(x)
        for _ in range(self.depth):
            x = x + nn.Dropout(self.dropout, deterministic=not train)(
                EfficientAttention(self.heads, self.reduction)(nn.LayerNorm()(x)))
            x = x + nn.Dropout(self.dropout, deterministic=not train)(MixFFN()(nn.LayerNorm()(x)))
        return nn.LayerNorm()(x)


class SegFormer(nn.Module):
    num_classes: int
    widths: tuple[int, ...]
    dropout: float = 0.1
    cam_layer = "stage_3"

    @nn.compact
    def __call__(self, x, train: bool = False):
        x, (h, w) = pad_to_multiple(x, STRIDE)
        size = x.shape[1:3]
        *stage_widths, decoder = self.widths
        stages = []
        for i, width in enumerate(stage_widths):
            patch, strides = (7, 4) if i == 0 else (3, 2)
            x = Stage(width, patch, strides, HEADS[i], REDUCTION[i], DEPTHS[i], self.dropout, name=f"stage_{i}")(
                x, train)
            stages.append(x)
        quarter = stages[0].shape[1:3]
        x = jnp.concatenate([resize(nn.Dense(decoder)(s), quarter) for s in stages], axis=-1)
        x = nn.relu(nn.LayerNorm()(nn.Dense(decoder)(x)))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = resize(nn.Dense(self.num_classes)(x), size)
        return x[:, :h, :w]
