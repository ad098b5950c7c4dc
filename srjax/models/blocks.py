"""Layers shared by the CNN families: the paper's conv unit, residual and attention parts,
and the padding that lets any input size through a strided network."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def presets(paper: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Width presets of an encoder-decoder: ``tiny`` for tests, ``cpu`` for the demo, and
    ``paper``, tuned per model to 2.0M parameters at 7 slices and 4 classes."""
    return {"tiny": (4, 8), "cpu": (16, 32, 64, 128), "paper": paper}


def group_count(features: int) -> int:
    """GroupNorm groups: 8 where the width allows, fewer for very narrow layers."""
    for groups in (8, 4, 2):
        if features % groups == 0:
            return groups
    return 1


class ConvUnit(nn.Module):
    """Conv, GroupNorm, PReLU: the paper's unit. No bias: GroupNorm cancels it, and Adam
    would then chase its float-noise gradient."""

    features: int
    kernel: int = 3
    strides: int = 1
    dilation: int = 1

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.features, (self.kernel,) * 2, strides=self.strides, kernel_dilation=self.dilation,
                    use_bias=False)(x)
        x = nn.GroupNorm(num_groups=group_count(self.features))(x)
        return nn.PReLU(negative_slope_init=0.25)(x)


class ConvBlock(nn.Module):
    """Two 3x3 conv units, then dropout, as in the paper's CNNs."""

    features: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool):
        x = ConvUnit(self.features)(ConvUnit(self.features)(x))
        return nn.Dropout(self.dropout, deterministic=not train)(x)


def conv_encoder(x, widths: tuple[int, ...], dropout: float, train: bool) -> list:
    """The U-Net encoder, called inside a compact module: a ConvBlock per width (``encoder_i``,
    the deepest ``bottleneck``) with 2x2 max-pooling between; every level's features, deepest last."""
    features = []
    for level, width in enumerate(widths):
        if level:
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        name = "bottleneck" if level == len(widths) - 1 else f"encoder_{level}"
        x = ConvBlock(width, dropout, name=name)(x, train)
        features.append(x)
    return features


class ResidualBlock(nn.Module):
    """Pre-activation residual unit (GroupNorm, PReLU, 3x3 conv) x 2 plus a projected
    shortcut, as in ResUNet; ``strides`` 2 halves the resolution."""

    features: int
    strides: int = 1
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool):
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x)
            shortcut = nn.GroupNorm(num_groups=group_count(self.features))(shortcut)
        for index, strides in enumerate((self.strides, 1)):
            x = nn.GroupNorm(num_groups=group_count(x.shape[-1]))(x)
            x = nn.PReLU(negative_slope_init=0.25)(x)
            x = nn.Conv(self.features, (3, 3), strides=strides if index == 0 else 1, use_bias=False)(x)
        return nn.Dropout(self.dropout, deterministic=not train)(x + shortcut)


class SqueezeExcite(nn.Module):
    """Channel attention: a per-channel gate from the global average (Hu et al. 2018)."""

    reduction: int = 8

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        gate = x.mean(axis=(1, 2), keepdims=True)
        gate = nn.PReLU(negative_slope_init=0.25)(nn.Dense(max(channels // self.reduction, 4))(gate))
        return x * jax.nn.sigmoid(nn.Dense(channels)(gate))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: parallel 1x1 and dilated 3x3 units plus image pooling,
    concatenated and projected (Chen et al. 2017)."""

    features: int
    rates: tuple[int, ...] = (6, 12, 18)
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool):
        branches = [ConvUnit(self.features, kernel=1)(x)]
        branches += [ConvUnit(self.features, dilation=rate)(x) for rate in self.rates]
        pooled = ConvUnit(self.features, kernel=1)(x.mean(axis=(1, 2), keepdims=True))
        branches.append(jnp.broadcast_to(pooled, (*x.shape[:3], self.features)))
        x = ConvUnit(self.features, kernel=1)(jnp.concatenate(branches, axis=-1))
        return nn.Dropout(self.dropout, deterministic=not train)(x)


class AttentionGate(nn.Module):
    """Additive attention (Oktay et al. 2018): weights ``x`` per pixel by a gate computed
    from ``x`` and the coarser gating signal ``g``."""

    features: int

    @nn.compact
    def __call__(self, x, g):
        theta = nn.Conv(self.features, (2, 2), strides=2, use_bias=False)(x)
        phi = nn.Conv(self.features, (1, 1))(resize(g, theta.shape[1:3]))
        alpha = jax.nn.sigmoid(nn.Conv(1, (1, 1))(nn.relu(theta + phi)))
        return x * resize(alpha, x.shape[1:3])


def resize(x, size):
    """Bilinear resize of an NHWC batch to spatial ``size``."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), "bilinear")


def upsample(x, factor: int = 2):
    return resize(x, (x.shape[1] * factor, x.shape[2] * factor))


def pad_to_multiple(x, multiple: int):
    """Reflect-pad H and W of an NHWC batch up to a multiple of ``multiple``."""
    h, w = x.shape[1:3]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < h and pad_w < w else "edge"  # reflect needs the pad smaller than the side
        x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    return x, (h, w)
