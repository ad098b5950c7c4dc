"""The feature table: one row per component, computed from its ``moments.Sums``.

Definitions follow ``skimage.measure.regionprops`` so the numbers can be checked
against it: the covariance of the voxel centres (population), axis lengths
``sqrt(20 λ)`` of an ellipsoid with the same second moments (regionprops'
``axis_major_length`` / ``axis_minor_length`` in 3-D), the equivalent diameter of a
ball of the same volume. Lengths, volumes and the axis direction are physical (scaled
by the voxel size); ``*_voxels`` columns are the same in voxel units; centroid and
bounding box are voxel indices (the box half-open, like regionprops' ``bbox``).
"""

from __future__ import annotations

import numpy as np

from srjax.analysis.moments import PAIRS, Sums

COLUMNS = (
    "id", "voxels", "volume", "centroid_z", "centroid_y", "centroid_x", "z0", "y0", "x0", "z1", "y1", "x1",
    "major_axis", "minor_axis", "major_axis_voxels", "minor_axis_voxels", "axis_z", "axis_y", "axis_x",
    "equivalent_diameter", "touches_surface",
)


def covariance(sums: Sums, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    """(n, 3, 3) covariance of each component's voxel centres, in units of ``scale``."""
    count = sums.count[:, None].astype(np.float64)
    mean = sums.first / count
    cov = np.empty((len(sums), 3, 3))
    for column, (a, b) in enumerate(PAIRS):
        cov[:, a, b] = cov[:, b, a] = sums.second[:, column] / count[:, 0] - mean[:, a] * mean[:, b]
    scale = np.asarray(scale, np.float64)
    return cov * scale[:, None] * scale[None, :]


def _axes(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Major and minor axis lengths and the major axis's unit direction (sign: its largest
    component positive, so a direction is reported one way only)."""
    values, vectors = np.zeros((len(cov), 3)), np.tile(np.eye(3), (len(cov), 1, 1))
    spread = cov.any(axis=(1, 2))  # a single voxel has none; eigh would give it zeros and the identity too
    values[spread], vectors[spread] = np.linalg.eigh(cov[spread])
    values = np.clip(values, 0.0, None)  # rounding can leave a flat component's slightly negative
    major = vectors[:, :, -1]
    flip = np.take_along_axis(major, np.abs(major).argmax(axis=1)[:, None], axis=1) < 0
    major = np.where(flip, -major, major)
    return np.sqrt(20 * values[:, -1]), np.sqrt(20 * values[:, 0]), major


def table(sums: Sums, shape, voxel_size=None, first_id: int = 1) -> dict[str, np.ndarray]:
    """Columns of ``COLUMNS`` for components ``first_id``.. of a volume of ``shape`` (row i of ``sums``: id first_id + i)."""
    scale = np.asarray(voxel_size if voxel_size is not None else (1.0, 1.0, 1.0), np.float64)
    count = sums.count
    centroid = sums.first / np.maximum(count, 1)[:, None]
    major_v, minor_v, direction = _axes(covariance(sums))
    if np.all(scale == scale[0]):  # lengths scale, the direction stays
        major, minor = major_v * scale[0], minor_v * scale[0]
    else:
        major, minor, direction = _axes(covariance(sums, scale))
    volume = count * float(np.prod(scale))
    touches = (sums.low == 0).any(axis=1) | (sums.high == np.asarray(shape) - 1).any(axis=1)
    columns = {
        "id": np.arange(first_id, first_id + len(sums), dtype=np.int64),
        "voxels": count,
        "volume": volume,
        "centroid_z": centroid[:, 0], "centroid_y": centroid[:, 1], "centroid_x": centroid[:, 2],
        "z0": sums.low[:, 0], "y0": sums.low[:, 1], "x0": sums.low[:, 2],
        "z1": sums.high[:, 0] + 1, "y1": sums.high[:, 1] + 1, "x1": sums.high[:, 2] + 1,
        "major_axis": major, "minor_axis": minor,
        "major_axis_voxels": major_v, "minor_axis_voxels": minor_v,
        "axis_z": direction[:, 0], "axis_y": direction[:, 1], "axis_x": direction[:, 2],
        "equivalent_diameter": (6 * volume / np.pi) ** (1 / 3),
        "touches_surface": touches,
    }
    return {name: columns[name] for name in COLUMNS}
