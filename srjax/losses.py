"""Per-pixel segmentation losses and their (masked) means.

Written with ``log_softmax`` and one-hot targets rather than optax's integer-label
CE, which fails under grad on batch-sharded arrays with explicit mesh axes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from srjax.config import LossConfig
from srjax.errors import SrjaxError


def cross_entropy(logits, labels, smoothing: float = 0.0):
    """Per-pixel CE of ``logits`` [..., K] against integer ``labels`` [...];
    ``smoothing`` spreads that much target mass uniformly over the K classes."""
    num_classes = logits.shape[-1]
    target = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    if smoothing:
        target = target * (1.0 - smoothing) + smoothing / num_classes
    return -(target * jax.nn.log_softmax(logits)).sum(-1)


LOSSES = {
    "cross_entropy": lambda cfg: cross_entropy,
    "label_smoothing": lambda cfg: functools.partial(cross_entropy, smoothing=cfg.smoothing),
}
LOSS_NAMES = tuple(sorted(LOSSES))


def pixel_loss(config: LossConfig):
    """The per-pixel loss function ``(logits, labels) -> [...]`` named by the config."""
    if config.name not in LOSSES:
        raise SrjaxError(f"unknown loss {config.name!r}; choose one of {', '.join(LOSS_NAMES)}")
    return LOSSES[config.name](config)


def masked_mean(per_pixel, mask):
    """Mean over the kept pixels only, normalised by their count (paper eq. 9)."""
    mask = mask.astype(per_pixel.dtype)
    return (per_pixel * mask).sum() / jnp.maximum(mask.sum(), 1.0)
