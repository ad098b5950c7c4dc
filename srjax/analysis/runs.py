"""Runs of a labelled slab and the closed-form moments of its components.

A run is a maximal stretch of mask voxels along x in one row (z, y); consecutive voxels
of a row are face neighbours, so a run lies in one component. The moments of a run
(count, sums of coordinates and of their products, bounding box) have closed forms, so
each component's ``Sums`` is a sum over its runs: no per-voxel coordinate is ever
built, and the cost is a pass over the mask plus work in the number of runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srjax.analysis.moments import BOX, Sums


@dataclass(frozen=True)
class Runs:
    """Runs of a [Z, H, W] mask in raster order: row ``z * H + y``, x from ``start`` to ``stop`` (exclusive)."""

    shape: tuple
    row: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    def __len__(self) -> int:
        return len(self.row)


def find_runs(mask: np.ndarray) -> Runs:
    width = mask.shape[2]
    starts = mask.copy()
    starts[..., 1:] &= ~mask[..., :-1]
    stops = mask.copy()
    stops[..., :-1] &= ~mask[..., 1:]
    row, start = np.divmod(np.flatnonzero(starts), width)
    stop = np.flatnonzero(stops) % width + 1
    return Runs(mask.shape, row, start, stop)


def run_labels(runs: Runs, labels: np.ndarray) -> np.ndarray:
    """Each run's label in ``labels`` (the slab's components)."""
    return labels.reshape(-1)[runs.row * runs.shape[2] + runs.start]


def plane(runs: Runs, ids: np.ndarray, z: int) -> tuple[Runs, np.ndarray]:
    """The runs of the slab's plane ``z``, as runs of a one-plane slab, and their ids."""
    height = runs.shape[1]
    first, last = np.searchsorted(runs.row, [z * height, (z + 1) * height])
    return Runs((1, height, runs.shape[2]), runs.row[first:last] - z * height, runs.start[first:last],
                runs.stop[first:last]), ids[first:last]


def _square_sum(n: np.ndarray) -> np.ndarray:
    """0² + 1² + ... + (n - 1)²."""
    return (n - 1) * n * (2 * n - 1) / 6


def sums(runs: Runs, labels: np.ndarray, count: int, z0: int) -> Sums:
    """Each component's ``Sums`` from its runs' closed forms, in volume coordinates."""
    height = runs.shape[1]
    z = (runs.row // height + z0).astype(np.float64)
    y = (runs.row % height).astype(np.float64)
    length = (runs.stop - runs.start).astype(np.float64)
    x_sum = (runs.start + runs.stop - 1) * length / 2
    xx_sum = _square_sum(runs.stop.astype(np.float64)) - _square_sum(runs.start.astype(np.float64))
    ids = labels - 1
    add = lambda weights: np.bincount(ids, weights, minlength=count)  # noqa: E731
    first = np.stack([add(z * length), add(y * length), add(x_sum)], axis=1)
    second = np.stack([add(z * z * length), add(y * y * length), add(xx_sum), add(z * y * length),
                       add(z * x_sum), add(y * x_sum)], axis=1)
    order = np.argsort(ids, kind="stable")
    bounds = np.searchsorted(ids[order], np.arange(count))
    columns = (z, y, runs.start), (z, y, runs.stop - 1)
    low = np.stack([np.minimum.reduceat(c[order], bounds) for c in columns[0]], axis=1) if count else np.zeros((0, 3))
    high = np.stack([np.maximum.reduceat(c[order], bounds) for c in columns[1]], axis=1) if count else np.zeros((0, 3))
    return Sums(count=add(length).astype(np.int64), first=first.reshape(count, 3), second=second.reshape(count, 6),
                low=low.astype(BOX).reshape(count, 3), high=high.astype(BOX).reshape(count, 3))


def save(path: Path, runs: Runs, ids: np.ndarray) -> None:
    """``runs`` and their component ids, for ``paint`` in another pass or process."""
    # int32 halves what a slab's runs take on disk: a slab's rows and a row's x fit in it.
    with open(path, "wb") as file:  # np.savez would add ".npz" to a name without it
        np.savez(file, shape=np.asarray(runs.shape), row=runs.row.astype(np.int32),
                 start=runs.start.astype(np.int32), stop=runs.stop.astype(np.int32), ids=ids.astype(np.int32))


def load(path: Path) -> tuple[Runs, np.ndarray]:
    with np.load(path) as saved:
        return Runs(tuple(saved["shape"].tolist()), saved["row"], saved["start"], saved["stop"]), saved["ids"]


def paint(runs: Runs, values: np.ndarray) -> np.ndarray:
    """A [Z, H, W] array of 0 with each run filled with its value of ``values``: work in the
    runs' voxels, not the slab's."""
    out = np.zeros(int(np.prod(runs.shape)), values.dtype)
    length = runs.stop - runs.start
    begin = runs.row.astype(np.int64) * runs.shape[2] + runs.start
    # Voxel k of the runs laid end to end lies at begin[run] + (k - offset[run]).
    shift = np.repeat(begin - (np.cumsum(length) - length), length)
    out[shift + np.arange(len(shift))] = np.repeat(values, length)
    return out.reshape(runs.shape)
