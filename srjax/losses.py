"""Per-pixel segmentation losses for noisy labels, and their (masked) means.

The paper's six (Table II), each ``(logits [..., K], labels [...]) -> [...]``:

- ``cross_entropy``.
- ``label_smoothing`` (Szegedy et al. 2016): CE against (1-eps)*one-hot + eps/K.
- ``bootstrap_soft`` / ``bootstrap_hard`` (Reed et al. 2015): CE against
  beta*one-hot + (1-beta)*p, with p the prediction (soft) or its argmax (hard).
- ``gce`` (Zhang & Sabuncu 2018): (1 - p_y^q) / q, CE as q -> 0, MAE at q = 1.
- ``sce`` (Wang et al. 2019): alpha*CE + beta*RCE, RCE = -sum_k p_k log t_k with
  log 0 clipped to A = -4.
- ``focal`` (Lin et al. 2017): -(1 - p_y)^gamma log p_y.

Defaults are the cited papers' (see ``LossConfig``); each reduces to plain CE at its
neutral setting (eps = 0, beta = 1, q -> 0, alpha = 1 and beta = 0, gamma = 0). In
stage 3 the same per-pixel loss is averaged over the confident pixels only.
Written with ``log_softmax`` and one-hot targets rather than optax's integer-label
CE, which fails under grad on batch-sharded arrays with explicit mesh axes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from srjax.config import LossConfig
from srjax.errors import SrjaxError

RCE_LOG_ZERO = -4.0  # Wang et al.'s A: log 0 in the reverse cross-entropy


def _one_hot(logits, labels):
    return jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)


def cross_entropy(logits, labels, smoothing: float = 0.0):
    """CE against integer ``labels``; ``smoothing`` spreads that much target mass over all K classes."""
    target = _one_hot(logits, labels) * (1.0 - smoothing) + smoothing / logits.shape[-1]
    return -(target * jax.nn.log_softmax(logits)).sum(-1)


def bootstrap(logits, labels, beta: float, hard: bool):
    """CE against a blend of the label and the model's own (soft or argmax) prediction."""
    log_p = jax.nn.log_softmax(logits)
    own = _one_hot(logits, logits.argmax(-1)) if hard else jnp.exp(log_p)
    target = beta * _one_hot(logits, labels) + (1.0 - beta) * own
    return -(target * log_p).sum(-1)


def generalized_cross_entropy(logits, labels, q: float):
    p_label = (jax.nn.softmax(logits) * _one_hot(logits, labels)).sum(-1)
    return (1.0 - p_label**q) / q


def symmetric_cross_entropy(logits, labels, alpha: float, beta: float):
    target = _one_hot(logits, labels)
    reverse = -(jax.nn.softmax(logits) * jnp.where(target > 0, 0.0, RCE_LOG_ZERO)).sum(-1)
    return alpha * cross_entropy(logits, labels) + beta * reverse


def focal(logits, labels, gamma: float):
    log_p_label = (jax.nn.log_softmax(logits) * _one_hot(logits, labels)).sum(-1)
    return -((1.0 - jnp.exp(log_p_label)) ** gamma) * log_p_label


# name -> (logits, labels, values) -> per-pixel loss; ``values`` holds the LossConfig's numbers.
LOSSES = {
    "cross_entropy": lambda x, y, v: cross_entropy(x, y),
    "label_smoothing": lambda x, y, v: cross_entropy(x, y, v["smoothing"]),
    "bootstrap_soft": lambda x, y, v: bootstrap(x, y, v["soft_beta"], hard=False),
    "bootstrap_hard": lambda x, y, v: bootstrap(x, y, v["hard_beta"], hard=True),
    "gce": lambda x, y, v: generalized_cross_entropy(x, y, v["gce_q"]),
    "sce": lambda x, y, v: symmetric_cross_entropy(x, y, v["sce_alpha"], v["sce_beta"]),
    "focal": lambda x, y, v: focal(x, y, v["focal_gamma"]),
}
LOSS_NAMES = tuple(sorted(LOSSES))


def loss_values(config: LossConfig) -> dict[str, float]:
    """Every loss parameter of ``config``: values a training state carries, not constants of
    the compiled step, so runs that differ only in them share one compiled step."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "name"}


def pixel_loss(name: str):
    """The per-pixel loss ``(logits, labels, values) -> [...]`` called ``name``."""
    if name not in LOSSES:
        raise SrjaxError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    return LOSSES[name]


def masked_mean(per_pixel, mask):
    """Mean over the kept pixels only, normalised by their count (paper eq. 9)."""
    mask = mask.astype(per_pixel.dtype)
    return (per_pixel * mask).sum() / jnp.maximum(mask.sum(), 1.0)
