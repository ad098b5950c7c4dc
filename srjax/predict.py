"""Whole-volume inference: every slice with its S-slice context, sharded over the mesh."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from srjax.data import read_stack
from srjax.outputs import check_interrupt
from srjax.progress import bar as progress_bar
from srjax.train import batch_sharded, replicated


@functools.cache
def compiled_forward(model, mesh):
    """Labels and confidence of a batch, jitted once per model and mesh (the weights are an argument)."""

    def forward(params, images):
        probs = jax.nn.softmax(model.apply({"params": params}, images, train=False))
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
    desc: str = "predict",
    progress: bool = True,
):
    """Write argmax labels (and max probability) of every slice into the given arrays;
    return the mean max probability over the volume."""
    devices = mesh.devices.size
    batch_size = -(-batch_size // devices) * devices
    forward = compiled_forward(model, mesh)
    params = jax.device_put(params, replicated(mesh))
    depth = volume.shape[0]
    full = slice(None)
    confidence_sum = 0.0
    for start in progress_bar(range(0, depth, batch_size), desc=desc, unit="batch", disable=not progress):
        check_interrupt()
        zs = list(range(start, min(start + batch_size, depth)))
        stacks = np.stack([read_stack(volume, z, num_slices, full, full, low, high) for z in zs])
        if len(zs) < batch_size:  # pad the last batch so it splits evenly over the devices
            stacks = np.concatenate([stacks, np.repeat(stacks[-1:], batch_size - len(zs), 0)])
        images = jax.make_array_from_process_local_data(batch_sharded(mesh), stacks)
        labels, confidence = jax.device_get(forward(params, images))
        labels_out[start : start + len(zs)] = labels[: len(zs)]
        confidence_sum += confidence[: len(zs)].sum(dtype=np.float64)
        if confidence_out is not None:
            confidence_out[start : start + len(zs)] = confidence[: len(zs)]
    return float(confidence_sum / np.prod(volume.shape))
