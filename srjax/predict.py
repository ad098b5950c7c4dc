"""Whole-volume inference: every slice with its S-slice context, sharded over the mesh.

A slice is labelled whole, or the way the network saw its training data: in windows of
the training crop size, half-overlapping and blended with a Gaussian weight that trusts
a window's centre over its edges (nnU-Net's sliding window). The whole slice feeds
GroupNorm statistics of a far larger field than any crop the net was trained on, and
gives it the sample's full context. Optionally the class probabilities are averaged
over the 8 dihedral views.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from srjax import augment
from srjax.data import read_stack
from srjax.outputs import check_interrupt
from srjax.progress import bar as progress_bar
from srjax.train import batch_sharded, replicated, view_probabilities


def window_starts(size: int, window: int) -> list[int]:
    """Starts of half-overlapping windows covering ``size`` pixels, the last flush with the end."""
    stride = max(1, window // 2)
    starts = list(range(0, size - window + 1, stride))
    return starts if starts[-1] == size - window else starts + [size - window]


def gaussian_window(size: int) -> np.ndarray:
    """[size, size] blending weight, sigma = size / 8 as in nnU-Net, never below 1e-3 of its peak."""
    centre, sigma = (size - 1) / 2, size / 8
    profile = np.exp(-((np.arange(size) - centre) ** 2) / (2 * sigma**2))
    weight = np.outer(profile, profile)
    return np.maximum(weight / weight.max(), 1e-3).astype(np.float32)


def tiled_probabilities(model, params, images, window: int, views: int):
    """Class probabilities of ``images`` [B, H, W, S], blended from windows of ``window`` pixels."""
    b, h, w, _ = images.shape
    window = min(window, h, w)
    corners = [(y, x) for y in window_starts(h, window) for x in window_starts(w, window)]
    tiles = jnp.concatenate([images[:, y:y + window, x:x + window] for y, x in corners])
    probs = view_probabilities(model, params, tiles, views)
    weight = jnp.asarray(gaussian_window(window))[None, :, :, None]
    blended = jnp.zeros((b, h, w, probs.shape[-1]), probs.dtype)
    weights = jnp.zeros((1, h, w, 1), probs.dtype)
    for i, (y, x) in enumerate(corners):
        blended = blended.at[:, y:y + window, x:x + window].add(probs[i * b:(i + 1) * b] * weight)
        weights = weights.at[:, y:y + window, x:x + window].add(weight)
    return blended / weights


@functools.cache
def compiled_forward(model, mesh, window: int | None = None, views: int = 1):
    """Labels and confidence of a batch, jitted once per model, mesh, window (None: the
    whole slice at once) and view count; the weights are an argument."""

    def forward(params, images):
        if window is None:
            probs = view_probabilities(model, params, images, views)
        else:
            probs = tiled_probabilities(model, params, images, window, views)
        return probs.argmax(-1).astype(jnp.uint8), probs.max(-1)

    return jax.jit(forward, in_shardings=(replicated(mesh), batch_sharded(mesh)),
                   out_shardings=(batch_sharded(mesh), batch_sharded(mesh)))


def predict_volume(
    model,
    params,
    volume,
    low: float,
    high: float,
    num_slices: int,
    batch_size: int,
    mesh,
    labels_out,
    confidence_out=None,
    window: int | None = None,
    views: int = 1,
    desc: str = "predict",
    progress: bool = True,
    slices: range | None = None,
):
    """Write argmax labels (and max probability) of ``slices`` (every slice by default)
    into the given arrays; return the sum of the max probability over them."""
    devices = mesh.devices.size
    batch_size = -(-batch_size // devices) * devices
    forward = compiled_forward(model, mesh, window, views)
    params = jax.device_put(params, replicated(mesh))
    depth = volume.shape[0]
    slices = range(depth) if slices is None else slices
    full = slice(None)
    confidence_sum = 0.0
    for start in progress_bar(range(slices.start, slices.stop, batch_size), desc=desc, unit="batch",
                              disable=not progress):
        check_interrupt()
        zs = list(range(start, min(start + batch_size, slices.stop)))
        stacks = np.stack([read_stack(volume, z, num_slices, full, full, low, high) for z in zs])
        if len(zs) < batch_size:  # pad the last batch so it splits evenly over the devices
            stacks = np.concatenate([stacks, np.repeat(stacks[-1:], batch_size - len(zs), 0)])
        images = jax.make_array_from_process_local_data(batch_sharded(mesh), stacks)
        labels, confidence = jax.device_get(forward(params, images))
        labels_out[start : start + len(zs)] = labels[: len(zs)]
        confidence_sum += confidence[: len(zs)].sum(dtype=np.float64)
        if confidence_out is not None:
            confidence_out[start : start + len(zs)] = confidence[: len(zs)]
    return float(confidence_sum)
