"""Grain datasets of random 2.5D crops: S adjacent slices as channels, target the middle one.

Volumes are TensorStores: a crop's S slices are one outer-indexed read, whose chunk
reads TensorStore issues concurrently, and grain runs several crops at once on
reader threads; the volume's cache pool bounds what stays in memory.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np

from srjax import io, parallel
from srjax.config import DataConfig
from srjax.errors import SrjaxError
from srjax.sparse import UNLABELLED


def context_indices(z: int, num_slices: int, depth: int) -> np.ndarray:
    """The ``num_slices`` slice indices centred on ``z``, reflected at the volume's ends."""
    radius = num_slices // 2
    index = z + np.arange(-radius, radius + 1)
    index = np.abs(index)
    index = np.where(index >= depth, 2 * (depth - 1) - index, index)
    return np.clip(index, 0, depth - 1)


def normalise(values, low: float, high: float) -> np.ndarray:
    """Scale voxel values to [0, 1] using the volume's range; NaN (allowed outside a mask) becomes 0."""
    scaled = np.clip((np.asarray(values, np.float32) - low) / (high - low), 0.0, 1.0)
    return np.nan_to_num(scaled, copy=False, nan=0.0)


def read_stack(volume, z: int, num_slices: int, rows: slice, cols: slice, low: float, high: float) -> np.ndarray:
    """[h, w, S] float32 stack around slice ``z`` of a TensorStore volume, normalised."""
    index = context_indices(z, num_slices, volume.shape[0])
    stack = io.read(volume.oindex[index, rows, cols], "volume")
    return np.moveaxis(normalise(stack, low, high), 0, -1)


def class_centred_origin(labels: np.ndarray, crop: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a ``crop``-square crop of a labelled slice, centred (as far as the
    slice allows) on a random voxel of a class drawn evenly from the classes present."""
    chosen = rng.choice(np.unique(labels))
    ys, xs = np.nonzero(labels == chosen)
    pick = int(rng.integers(len(ys)))
    return centred_origin(ys[pick], xs[pick], labels.shape, crop)


def centred_origin(y: int, x: int, shape, crop: int) -> tuple[int, int]:
    """Top-left corner of a ``crop``-square crop centred (as far as the slice allows) on (y, x)."""
    h, w = shape
    return int(np.clip(y - crop // 2, 0, h - crop)), int(np.clip(x - crop // 2, 0, w - crop))


@dataclasses.dataclass(frozen=True)
class Sparse:
    """Sparse labels (``srjax.sparse``): the volume, its labelled slices, and the share of
    crops centred on a labelled pixel."""

    labels: object
    slices: tuple[int, ...]
    share: float


@dataclasses.dataclass(frozen=True)
class CropSampler(grain.transforms.RandomMap):
    """Slice index -> a random square crop of its stack (and of its labels, if given); a
    ``class_crops`` share of them centred on a voxel of an evenly drawn class; with
    ``sparse`` labels, a ``sparse.share`` of them centred on a labelled pixel instead, and
    every crop with its sparse labels."""

    volume: object
    labels: object
    num_slices: int
    crop: int
    low: float
    high: float
    class_crops: float = 0.0
    sparse: Sparse | None = None

    def random_map(self, z, rng: np.random.Generator):
        _, h, w = self.volume.shape
        z = int(z)
        y0 = int(rng.integers(0, h - self.crop + 1))
        x0 = int(rng.integers(0, w - self.crop + 1))
        if self.labels is not None and self.class_crops and rng.random() < self.class_crops:
            y0, x0 = class_centred_origin(io.read(self.labels[z], "pseudo labels"), self.crop, rng)
        if self.sparse is not None and rng.random() < self.sparse.share:
            z = int(rng.choice(self.sparse.slices))
            ys, xs = np.nonzero(io.read(self.sparse.labels[z], "sparse labels") != UNLABELLED)
            pick = int(rng.integers(len(ys)))
            y0, x0 = centred_origin(ys[pick], xs[pick], (h, w), self.crop)
        rows, cols = slice(y0, y0 + self.crop), slice(x0, x0 + self.crop)
        item = {"image": read_stack(self.volume, z, self.num_slices, rows, cols, self.low, self.high)}
        if self.labels is not None:
            item["label"] = io.read(self.labels[z, rows, cols], "pseudo labels").astype(np.int32)
        if self.sparse is not None:
            item["sparse"] = io.read(self.sparse.labels[z, rows, cols], "sparse labels").astype(np.int32)
        return item


def batches(depth: int, batch_size: int, epochs: int, steps: int) -> tuple[int, int]:
    """(epochs of crops to draw, steps to train): ``epochs`` passes over the slices, or
    exactly ``steps`` batches when ``steps`` is set (drawing as many epochs as that needs)."""
    if steps:
        return -(-steps * batch_size // depth), steps
    return epochs, epochs * depth // batch_size


def check_sizes(config: DataConfig, shape, epochs: int, steps: int = 0) -> None:
    """Crop, stack and batch sizes that fit a volume of ``shape``; checked before any work."""
    depth, h, w = shape
    if config.crop > min(h, w):
        raise SrjaxError(f"data.crop={config.crop} is larger than the volume's {h}x{w} slices; "
                         f"set data.crop to at most {min(h, w)}")
    if config.slices < 1 or config.slices % 2 == 0:
        raise SrjaxError(f"data.slices={config.slices} must be a positive odd number (the target is the middle slice)")
    if batches(depth, config.batch_size, epochs, steps)[1] < 1:
        raise SrjaxError(
            f"{epochs} epoch(s) of {depth} slices give fewer crops than one batch of {config.batch_size}; "
            "raise the epochs or lower data.batch_size"
        )


def crop_dataset(volume, labels, config: DataConfig, low: float, high: float, epochs: int, seed: int,
                 steps: int = 0, sparse: Sparse | None = None):
    """A batched grain MapDataset: each epoch visits every slice once in a shuffled order;
    ``epochs`` of them, or ``steps`` batches when set."""
    depth = volume.shape[0]
    check_sizes(config, volume.shape, epochs, steps)
    volume, labels = io.as_volume(volume), None if labels is None else io.as_volume(labels)
    sampler = CropSampler(volume, labels, config.slices, config.crop, low, high, config.class_crops, sparse)
    epochs, steps = batches(depth, config.batch_size, epochs, steps)
    crops = grain.MapDataset.range(depth).shuffle(seed=seed).repeat(epochs).random_map(sampler, seed=seed)
    return process_batches(crops, config.batch_size, steps)


def process_batches(crops, batch_size: int, steps: int):
    """This process's rows of each of the first ``steps`` batches of ``crops``: a contiguous
    ``batch_size / processes`` of them, so the batch the processes make together is the one
    a single process would make, row for row, and a process reads only its own crops."""
    rows = batch_size // parallel.count()
    first = parallel.index() * rows
    mine = grain.MapDataset.range(steps * rows).map(lambda k: crops[k // rows * batch_size + first + k % rows])
    return mine.batch(rows)


def iterate(dataset, read_threads: int):
    """A checkpointable iterator over ``dataset`` reading crops on ``read_threads`` threads."""
    options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=2 * read_threads)
    return iter(dataset.to_iter_dataset(options))
