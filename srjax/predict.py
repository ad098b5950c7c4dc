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
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np

from srjax import io
from srjax.data import context_indices, normalise
from srjax.outputs import check_interrupt
from srjax.progress import bar as progress_bar
from srjax.train import batch_sharded, replicated, view_probabilities

PRECISIONS = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# A "predict_batch=auto" batch fills this share of a device's free memory; a CPU reports
# none, so there it fills a fixed budget that keeps inference's peak RSS near 2 GB.
FREE_MEMORY_SHARE = 0.6
CPU_BUDGET_BYTES = 1 << 30
MAX_SLICES_PER_DEVICE = 64
_SLICE_BYTES: dict = {}  # (compiled forward, slice stack shape) -> device bytes one slice needs


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
def compiled_forward(model, mesh, window: int | None = None, views: int = 1, precision: str = "float32"):
    """Labels, confidence (``io.CONFIDENCE_SCALE`` steps) and each slice's sum of the max
    probability for a batch, jitted once per model, mesh, window (None: the whole slice at
    once), view count and precision; the weights are an argument."""
    dtype = PRECISIONS[precision]

    def forward(params, images):
        params, images = jax.tree.map(lambda x: x.astype(dtype), (params, images))
        if window is None:
            probs = view_probabilities(model, params, images, views)
        else:
            probs = tiled_probabilities(model, params, images, window, views)
        top = probs.max(-1)
        confidence = jnp.round(top * io.CONFIDENCE_SCALE).astype(jnp.uint8)
        return probs.argmax(-1).astype(jnp.uint8), confidence, top.sum(axis=(1, 2))

    return jax.jit(forward, in_shardings=(replicated(mesh), batch_sharded(mesh)),
                   out_shardings=(batch_sharded(mesh),) * 3)


def slices_per_device(budget_bytes: float, bytes_per_slice: float) -> int:
    """How many slices a device labels at once within ``budget_bytes`` (1 to ``MAX_SLICES_PER_DEVICE``)."""
    return int(np.clip(budget_bytes // max(bytes_per_slice, 1), 1, MAX_SLICES_PER_DEVICE))


def auto_batch_size(forward, params, mesh, stack_shape: tuple[int, ...]) -> int:
    """A batch that fits the devices' free memory: XLA's own account of the memory one
    slice per device needs (the forward compiled for that), against what the devices have
    free."""
    devices = mesh.devices.size
    key = (forward, stack_shape)
    if key not in _SLICE_BYTES:  # compiled once per forward and slice shape, not once per scan
        probe = jax.ShapeDtypeStruct((devices, *stack_shape), jnp.float32, sharding=batch_sharded(mesh))
        used = forward.lower(params, probe).compile().memory_analysis()
        weights = sum(leaf.nbytes for leaf in jax.tree.leaves(params))
        _SLICE_BYTES[key] = used.temp_size_in_bytes + used.argument_size_in_bytes + used.output_size_in_bytes - weights
    per_slice = _SLICE_BYTES[key]
    stats = [device.memory_stats() for device in mesh.devices.flat]
    if all(stats):
        budget = FREE_MEMORY_SHARE * min(s["bytes_limit"] - s["bytes_in_use"] for s in stats)
    else:
        budget = CPU_BUDGET_BYTES
    return devices * slices_per_device(budget, per_slice)


class SliceWindow:
    """The normalised slices around the batch being labelled: each slice is read from the
    volume once, with the slices after it, and dropped once no later batch needs it."""

    def __init__(self, volume, low: float, high: float, num_slices: int):
        self.volume, self.low, self.high, self.num_slices = volume, low, high, num_slices
        self.slices: dict[int, np.ndarray] = {}

    def stacks(self, zs: list[int]) -> np.ndarray:
        """[len(zs), H, W, S] float32: each slice's stack of ``num_slices`` around it."""
        depth = self.volume.shape[0]
        contexts = [context_indices(z, self.num_slices, depth) for z in zs]
        needed = {int(i) for context in contexts for i in context}
        missing = sorted(needed - self.slices.keys())
        if missing:
            first, last = missing[0], missing[-1] + 1
            block = normalise(io.read(self.volume[first:last], "volume"), self.low, self.high)
            self.slices.update((first + k, block[k]) for k in range(last - first) if first + k in needed)
        for z in [z for z in self.slices if z < min(needed)]:
            del self.slices[z]
        return np.stack([np.stack([self.slices[int(i)] for i in context], axis=-1) for context in contexts])


def predict_volume(
    model,
    params,
    volume,
    low: float,
    high: float,
    num_slices: int,
    batch_size: int | str,
    mesh,
    labels_out,
    confidence_out=None,
    window: int | None = None,
    views: int = 1,
    precision: str = "float32",
    desc: str = "predict",
    progress: bool = True,
    slices: range | None = None,
):
    """Write argmax labels (and max probability, as ``io.CONFIDENCE_SCALE`` steps) of
    ``slices`` (every slice by default) into the given arrays; return the sum of the max
    probability over them. The next batch is read on a thread while this one is labelled;
    the writers write asynchronously. ``batch_size`` "auto" fills the devices' free memory."""
    devices = mesh.devices.size
    forward = compiled_forward(model, mesh, window, views, precision)
    params = jax.device_put(params, replicated(mesh))
    slices = range(volume.shape[0]) if slices is None else slices
    if batch_size == "auto":
        batch_size = auto_batch_size(forward, params, mesh, (*volume.shape[1:], num_slices))
    batch_size = -(-min(batch_size, max(len(slices), 1)) // devices) * devices  # no batch larger than the work
    batches = [list(range(start, min(start + batch_size, slices.stop)))
               for start in range(slices.start, slices.stop, batch_size)]
    reader = SliceWindow(volume, low, high, num_slices)
    confidence_sum = 0.0
    with ThreadPoolExecutor(1) as prefetch:
        pending = prefetch.submit(reader.stacks, batches[0]) if batches else None
        for index, zs in enumerate(progress_bar(batches, desc=desc, unit="batch", disable=not progress)):
            check_interrupt()
            stacks = pending.result()
            if index + 1 < len(batches):
                pending = prefetch.submit(reader.stacks, batches[index + 1])
            if len(zs) < batch_size:  # pad the last batch so it splits evenly over the devices
                stacks = np.concatenate([stacks, np.repeat(stacks[-1:], batch_size - len(zs), 0)])
            images = jax.make_array_from_process_local_data(batch_sharded(mesh), stacks)
            labels, confidence, sums = jax.device_get(forward(params, images))
            start, stop = zs[0], zs[-1] + 1
            labels_out[start:stop] = labels[: len(zs)]
            confidence_sum += sums[: len(zs)].sum(dtype=np.float64)
            if confidence_out is not None:
                confidence_out[start:stop] = confidence[: len(zs)]
    return float(confidence_sum)
