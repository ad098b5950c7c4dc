"""Per-component sums that add across slabs: voxel count, first and second coordinate
moments and bounding box. Everything a feature table needs is computed from them
(``srjax.analysis.features``), so no component's voxels are visited twice; ``runs``
makes them for a slab.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
