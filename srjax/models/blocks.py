"""Layers shared by the CNN families: the paper's conv unit and stride padding."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def group_count(features: int) -> int:
    """GroupNorm groups: 8 where the width allows, fewer for very narrow layers."""
    for groups in (8, 4, 2):
        if features % groups == 0:
            return groups
    return 1


class ConvBlock(nn.Module):
    """Two (3x3 conv, GroupNorm, PReLU) units, then dropout, as in the paper's CNNs."""

    features: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool):
        for _ in range(2):
            # No bias: GroupNorm cancels it, and Adam would then chase its float-noise gradient.
            x = nn.Conv(self.features, (3, 3), use_bias=False)(x)
            x = nn.GroupNorm(num_groups=group_count(self.features))(x)
            x = nn.PReLU(negative_slope_init=0.25)(x)
        return nn.Dropout(self.dropout, deterministic=not train)(x)


def pad_to_multiple(x, multiple: int):
    """Reflect-pad H and W of an NHWC batch up to a multiple of ``multiple``."""
    h, w = x.shape[1:3]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
        x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    return x, (h, w)
