"""Per-component sums that add across slabs: voxel count, first and second coordinate
moments and bounding box. Everything a feature table needs is computed from them
(``srjax.analysis.features``), so no component's voxels are visited twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# The second moments kept: the upper triangle of the coordinate outer product.
PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


@dataclass(frozen=True)
class Sums:
    """Row i: a component's voxel count, sum of (z, y, x), sum of the products in ``PAIRS``
    (float64 about the volume's origin), and its bounding box: lowest and highest
    (z, y, x), inclusive."""

    count: np.ndarray
    first: np.ndarray
    second: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def __len__(self) -> int:
        return len(self.count)


def slab_sums(local: np.ndarray, count: int, z0: int) -> Sums:
    """Sums of each of a slab's ``count`` local labels (1..count), in volume coordinates."""
    flat = local.reshape(-1)
    voxels = np.flatnonzero(flat)
    ids = flat[voxels] - 1
    plane = local.shape[1] * local.shape[2]
    z, rest = np.divmod(voxels, plane)
    y, x = np.divmod(rest, local.shape[2])
    coords = (z.astype(np.float64) + z0, y.astype(np.float64), x.astype(np.float64))
    sums = lambda weights=None: np.bincount(ids, weights, minlength=count)  # noqa: E731
    boxes = ndimage.find_objects(local, max_label=count)
    low = np.array([[s.start for s in box] for box in boxes], np.int64).reshape(count, 3)
    high = np.array([[s.stop - 1 for s in box] for box in boxes], np.int64).reshape(count, 3)
    low[:, 0] += z0
    high[:, 0] += z0
    return Sums(
        count=sums().astype(np.int64),
        first=np.stack([sums(c) for c in coords], axis=1).reshape(count, 3),
        second=np.stack([sums(coords[a] * coords[b]) for a, b in PAIRS], axis=1).reshape(count, 6),
        low=low,
        high=high,
    )


def concatenate(parts: list[Sums]) -> Sums:
    if not parts:
        return Sums(np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 6)), np.zeros((0, 3), np.int64),
                    np.zeros((0, 3), np.int64))
    return Sums(*(np.concatenate([getattr(p, field) for p in parts]) for field in
                  ("count", "first", "second", "low", "high")))


def combine(sums: Sums, group: np.ndarray, groups: int) -> Sums:
    """The sums of each group (row ``group[i]`` gathers row i), ``groups`` rows."""
    add = lambda column: np.bincount(group, column, minlength=groups)  # noqa: E731
    low = np.full((groups, 3), np.iinfo(np.int64).max)
    high = np.full((groups, 3), -1, np.int64)
    np.minimum.at(low, group, sums.low)
    np.maximum.at(high, group, sums.high)
    return Sums(
        count=add(sums.count).astype(np.int64),
        first=np.stack([add(c) for c in sums.first.T], axis=1).reshape(groups, 3),
        second=np.stack([add(c) for c in sums.second.T], axis=1).reshape(groups, 6),
        low=low,
        high=high,
    )
