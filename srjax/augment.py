"""Weak and strong augmentations for stage 3, in JAX, on [B, H, W, S] stacks in [0, 1].

Every transform draws its parameters once per sample and applies them to all S
slices of the stack alike, so the 2.5D context stays consistent. Per-sample keys
are split from one key, so the result does not depend on how the batch is sharded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# The dihedral group of the square: identity, rotations by 90/180/270 degrees,
# horizontal, vertical, diagonal and anti-diagonal flips.
_DIHEDRAL = (
    lambda x: x,
    lambda x: jnp.rot90(x, 1, axes=(0, 1)),
    lambda x: jnp.rot90(x, 2, axes=(0, 1)),
    lambda x: jnp.rot90(x, 3, axes=(0, 1)),
    lambda x: x[:, ::-1],
    lambda x: x[::-1, :],
    lambda x: jnp.swapaxes(x, 0, 1),
    lambda x: jnp.rot90(x, 2, axes=(0, 1)).swapaxes(0, 1),
)


# The view that undoes each view: a quarter turn undoes three, every other view is its own inverse.
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)


def dihedral(x, index):
    """One of the 8 symmetries of the square applied to an [H, W, ...] array (H == W)."""
    return jax.lax.switch(index, _DIHEDRAL, x)


def dihedral_all(batch, index: int):
    """The same symmetry (a Python int) applied to every [H, W, ...] item of a batch."""
    return jax.vmap(_DIHEDRAL[index])(batch)


def weak(key, *arrays):
    """A random rotation/flip per sample, the same one for each of the [B, H, W, ...] arrays
    (a stack and its labels); returns one array per array given."""
    indices = jax.random.randint(key, (arrays[0].shape[0],), 0, len(_DIHEDRAL))
    out = tuple(jax.vmap(dihedral)(array, indices) for array in arrays)
    return out if len(out) > 1 else out[0]


def gamma(key, x, low=0.8, high=1.2):
    return jnp.clip(x, 0.0, 1.0) ** jax.random.uniform(key, (), minval=low, maxval=high)


def brightness_contrast(key, x, limit=0.2):
    """Albumentations' RandomBrightnessContrast: x * (1 + c) + b."""
    c, b = jax.random.uniform(key, (2,), minval=-limit, maxval=limit)
    return x * (1.0 + c) + b


def intensity_jitter(key, x, limit=0.2):
    """ColorJitter on a grey stack: scale brightness, then blend with the mean for contrast."""
    scale, blend = jax.random.uniform(key, (2,), minval=1.0 - limit, maxval=1.0 + limit)
    x = x * scale
    return (x - x.mean()) * blend + x.mean()


def clahe_grid(size: int) -> int:
    """Tiles of 64 pixels: Albumentations' default 8x8 grid on the paper's 512-pixel crops."""
    return max(1, size // 64)


def clahe(x, clip_limit: float = 4.0, grid: int = 1, bins: int = 64):
    """Contrast-limited adaptive histogram equalisation of an [H, W, S] stack in [0, 1].

    One lookup table per tile from the pooled histogram of all S slices in it
    (OpenCV's clip rule: clip_limit times the mean count per bin), bilinearly
    blended between tile centres, applied to every slice alike. H and W must be
    multiples of ``grid``.
    """
    h, w, s = x.shape
    th, tw = h // grid, w // grid
    index = jnp.clip((x * bins).astype(jnp.int32), 0, bins - 1)
    tile_of_row = jnp.arange(h) // th
    tile_of_col = jnp.arange(w) // tw
    flat = (tile_of_row[:, None, None] * grid + tile_of_col[None, :, None]) * bins + index
    hist = jnp.zeros(grid * grid * bins).at[flat.ravel()].add(1.0).reshape(grid, grid, bins)
    limit = clip_limit * th * tw * s / bins
    excess = jnp.maximum(hist - limit, 0.0).sum(-1, keepdims=True)
    hist = jnp.minimum(hist, limit) + excess / bins
    lut = jnp.cumsum(hist, -1) / hist.sum(-1, keepdims=True)

    def neighbours(size, tile, count):
        pos = (jnp.arange(size) + 0.5) / tile - 0.5
        low = jnp.floor(pos)
        frac = pos - low
        return jnp.clip(low, 0, count - 1).astype(jnp.int32), jnp.clip(low + 1, 0, count - 1).astype(jnp.int32), frac

    y0, y1, fy = neighbours(h, th, grid)
    x0, x1, fx = neighbours(w, tw, grid)
    y0, y1, fy = y0[:, None, None], y1[:, None, None], fy[:, None, None]
    x0, x1, fx = x0[None, :, None], x1[None, :, None], fx[None, :, None]
    top = (1 - fx) * lut[y0, x0, index] + fx * lut[y0, x1, index]
    bottom = (1 - fx) * lut[y1, x0, index] + fx * lut[y1, x1, index]
    return (1 - fy) * top + fy * bottom


def _maybe(key, p, fn, x):
    apply_key, fn_key = jax.random.split(key)
    return jnp.where(jax.random.uniform(apply_key) < p, fn(fn_key, x), x)


def strong_one(key, x, p: float = 0.5):
    """Photometric augmentation of one [H, W, S] stack: each transform with probability p."""
    keys = jax.random.split(key, 4)
    x = _maybe(keys[0], p, gamma, x)
    x = jnp.clip(_maybe(keys[1], p, brightness_contrast, x), 0.0, 1.0)
    x = jnp.clip(_maybe(keys[2], p, intensity_jitter, x), 0.0, 1.0)
    grid = clahe_grid(min(x.shape[:2]))

    def random_clahe(key, v):  # clip limit drawn from [1, 4], as Albumentations' CLAHE does
        return clahe(v, clip_limit=jax.random.uniform(key, (), minval=1.0, maxval=4.0), grid=grid)

    return jnp.clip(_maybe(keys[3], p, random_clahe, x), 0.0, 1.0)


def strong(key, batch, p: float = 0.5):
    """Strong photometric augmentation per sample (student input, on top of the weak one)."""
    return jax.vmap(strong_one, in_axes=(0, 0, None))(jax.random.split(key, batch.shape[0]), batch, p)


def cutmix_boxes(key, batch: int, size: int, p: float):
    """[B, size, size] masks, each with probability ``p`` a random square of 10-50 % of the
    crop's area (else empty): where a sample takes the next sample's pixels."""
    apply_key, side_key, y_key, x_key = jax.random.split(key, 4)
    side = jnp.sqrt(jax.random.uniform(side_key, (batch,), minval=0.1, maxval=0.5)) * size
    y0 = jax.random.uniform(y_key, (batch,)) * (size - side)
    x0 = jax.random.uniform(x_key, (batch,)) * (size - side)
    grid = jnp.arange(size)[None, :] + 0.5
    rows = (grid >= y0[:, None]) & (grid < (y0 + side)[:, None])
    cols = (grid >= x0[:, None]) & (grid < (x0 + side)[:, None])
    applied = jax.random.uniform(apply_key, (batch,)) < p
    return rows[:, :, None] & cols[:, None, :] & applied[:, None, None]


def cutmix(boxes, *arrays):
    """Paste, inside each sample's box, the same pixels of the next sample in the batch
    (CutMix between crops, as UniMatch does for its student); one array per array given."""
    def mix(array):
        inside = boxes.reshape(boxes.shape + (1,) * (array.ndim - 3))
        return jnp.where(inside, jnp.roll(array, -1, axis=0), array)

    out = tuple(mix(array) for array in arrays)
    return out if len(out) > 1 else out[0]
