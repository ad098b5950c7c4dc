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
# Bounding-box corners: voxel indices, well inside int32 for any scan.
BOX = np.int32


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

    def take(self, index) -> "Sums":
        """The rows ``index`` (a slice, a mask or indices) picks."""
        return Sums(*(getattr(self, field)[index] for field in FIELDS))


FIELDS = ("count", "first", "second", "low", "high")


def empty() -> Sums:
    return Sums(np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 6)), np.zeros((0, 3), BOX), np.zeros((0, 3), BOX))


def concatenate(parts: list[Sums]) -> Sums:
    return Sums(*(np.concatenate([getattr(p, field) for p in parts]) for field in FIELDS)) if parts else empty()


def combine(parts, groups: int) -> Sums:
    """The sums of each of ``groups`` groups from ``parts``, pairs (sums, group) in which row
    i of sums joins group ``group[i]``; an iterator of them is consumed one at a time, so
    the parts need not all be held at once."""
    count = np.zeros(groups, np.int64)
    first, second = np.zeros((groups, 3)), np.zeros((groups, 6))
    low = np.full((3, groups), np.iinfo(BOX).max, BOX)
    high = np.full((3, groups), -1, BOX)
    for sums, group in parts:
        count += np.bincount(group, sums.count, minlength=groups).astype(np.int64)
        for column in range(3):
            first[:, column] += np.bincount(group, sums.first[:, column], minlength=groups)
        for column in range(6):
            second[:, column] += np.bincount(group, sums.second[:, column], minlength=groups)
        for column in range(3):  # a column at a time: ufunc.at's fast path takes one-dimensional arrays
            np.minimum.at(low[column], group, np.ascontiguousarray(sums.low[:, column]))
            np.maximum.at(high[column], group, np.ascontiguousarray(sums.high[:, column]))
    return Sums(count, first, second, low.T.copy(), high.T.copy())
