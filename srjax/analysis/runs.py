"""Runs of a slab's mask, its connected components labelled run by run, and the
closed-form moments of the components.

A run is a maximal stretch of mask voxels along x in one row (z, y); consecutive voxels
of a row are face neighbours, so a run lies in one component. Two runs of neighbouring
rows touch when their x ranges overlap (widened by one voxel where the connectivity
reaches diagonally), so the components are those of the graph of touching runs: work
in the number of runs, not of voxels, and no voxel label image. The moments of a run
(count, sums of coordinates and of their products, bounding box) have closed forms, so
each component's ``Sums`` is a sum over its runs: no per-voxel coordinate is ever
built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

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
    depth, height, width = mask.shape
    padded = np.zeros((depth, height, width + 2), bool)  # each row starts and ends outside any run
    padded[..., 1:-1] = mask
    # A row's changes alternate: a run's start, its stop, the next run's start...
    row, x = np.divmod(np.flatnonzero(padded[..., 1:] != padded[..., :-1]), width + 1)
    return Runs(mask.shape, row[0::2], x[0::2], x[1::2])


def touching(upper: Runs, rows: np.ndarray, lower: Runs, widen: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) of touching runs: run j of ``lower`` lies on row ``rows[i]`` (-1:
    none) and overlaps run i of ``upper`` widened by ``widen`` voxels at each end."""
    width = upper.shape[2] + 2  # a key row * width + x stays inside its row, even widened by one
    starts, stops = lower.row * width + lower.start, lower.row * width + lower.stop
    # The runs of a row that overlap [start - widen, stop + widen) are consecutive.
    first = np.searchsorted(stops, rows * width + upper.start - widen, side="right")
    count = np.maximum(np.searchsorted(starts, rows * width + upper.stop + widen, side="left") - first, 0)
    offset = np.repeat(first - (np.cumsum(count) - count), count)
    return np.repeat(np.arange(len(upper)), count), offset + np.arange(len(offset))


def label(runs: Runs, structure: np.ndarray) -> tuple[int, np.ndarray]:
    """The connected components of the slab's mask under ``structure`` (3×3×3, as
    ``scipy.ndimage.label`` takes it): how many, and each run's component, numbered 1..
    in raster order of their first voxels, as ``scipy.ndimage.label`` numbers them."""
    depth, height = runs.shape[:2]
    z, y = np.divmod(runs.row, height)
    found = []
    for dz, dy in ((0, 1), (1, -1), (1, 0), (1, 1)):  # the rows after a run's that can reach it
        reach = structure[dz + 1, dy + 1]
        if reach.any():
            inside = (z + dz < depth) & (y + dy >= 0) & (y + dy < height)
            found.append(touching(runs, np.where(inside, runs.row + dz * height + dy, -1), runs, int(reach[0])))
    i, j = (np.concatenate(side) for side in zip(*found))
    graph = sparse.coo_matrix((np.ones(len(i), bool), (i, j)), shape=(len(runs), len(runs)))
    count, component = csgraph.connected_components(graph, directed=False)
    first = np.full(count, len(runs))
    np.minimum.at(first, component, np.arange(len(runs)))
    number = np.empty(count, np.int32)
    number[np.argsort(first)] = np.arange(1, count + 1)
    return count, number[component]


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
    slab_z, row_y = np.divmod(runs.row, runs.shape[1])
    z, y = (slab_z + z0).astype(np.float64), row_y.astype(np.float64)
    length = (runs.stop - runs.start).astype(np.float64)
    x_sum = (runs.start + runs.stop - 1) * length / 2
    xx_sum = _square_sum(runs.stop.astype(np.float64)) - _square_sum(runs.start.astype(np.float64))
    ids = labels - 1
    add = lambda weights: np.bincount(ids, weights, minlength=count)  # noqa: E731
    first = np.stack([add(z * length), add(y * length), add(x_sum)], axis=1)
    second = np.stack([add(z * z * length), add(y * y * length), add(xx_sum), add(z * y * length),
                       add(z * x_sum), add(y * x_sum)], axis=1)
    low, high = [], []
    for lowest, highest in ((slab_z + z0, slab_z + z0), (row_y, row_y), (runs.start, runs.stop - 1)):
        low.append(np.full(count, np.iinfo(BOX).max, BOX))
        high.append(np.full(count, -1, BOX))
        np.minimum.at(low[-1], ids, lowest.astype(BOX))  # of one dtype: ufunc.at's fast path
        np.maximum.at(high[-1], ids, highest.astype(BOX))
    return Sums(count=add(length).astype(np.int64), first=first.reshape(count, 3), second=second.reshape(count, 6),
                low=np.stack(low, axis=1).reshape(count, 3), high=np.stack(high, axis=1).reshape(count, 3))


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
