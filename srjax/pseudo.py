"""Stage 1: pseudo labels by clustering voxel values.

The clustering runs on a weighted histogram of the volume, never on the voxels
themselves, so its cost does not grow with the volume; labelling is one lookup
(thresholds between sorted centroids) per voxel. Class ids ascend with the
class mean, so id 0 is the darkest class whatever the clusterer's own order.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.cluster import KMeans
from tqdm import tqdm

from srjax.errors import SrjaxError

FLOAT_BINS = 65536
METHODS = ("kmeans",)


@dataclasses.dataclass(frozen=True)
class Histogram:
    """Counts of voxel values in equal-width bins over [low, high]."""

    counts: np.ndarray
    low: float
    high: float

    @property
    def centres(self) -> np.ndarray:
        width = (self.high - self.low) / len(self.counts)
        return self.low + width * (np.arange(len(self.counts)) + 0.5)


@dataclasses.dataclass(frozen=True)
class Clustering:
    """Class means in ascending order; a voxel takes the class of the nearest mean."""

    means: np.ndarray

    @property
    def thresholds(self) -> np.ndarray:
        return (self.means[1:] + self.means[:-1]) / 2

    def label(self, values: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.thresholds, values).astype(np.uint8)


def value_range(volume, name: str = "volume", progress: bool = False) -> tuple[float, float]:
    """Min and max over the volume slab by slab; rejects NaN/Inf and constant volumes."""
    low, high = np.inf, -np.inf
    for z in tqdm(range(volume.shape[0]), desc="stage 1: range", unit="slice", disable=not progress):
        slab = np.asarray(volume[z])
        if not np.isfinite(slab).all():
            raise SrjaxError(f"{name} has NaN or Inf voxels (first in slice {z}); clean or mask them before segmenting")
        low, high = min(low, float(slab.min())), max(high, float(slab.max()))
    if low == high:
        raise SrjaxError(f"{name} is constant (every voxel is {low}); there is nothing to segment")
    return low, high


def histogram(volume, low: float, high: float, bins: int = FLOAT_BINS, progress: bool = False) -> Histogram:
    counts = np.zeros(bins, np.int64)
    for z in tqdm(range(volume.shape[0]), desc="stage 1: histogram", unit="slice", disable=not progress):
        slab = np.asarray(volume[z], np.float64)
        index = np.clip(((slab - low) / (high - low) * bins).astype(np.int64), 0, bins - 1)
        counts += np.bincount(index.ravel(), minlength=bins)
    return Histogram(counts, low, high)


def cluster(hist: Histogram, classes: int, method: str = "kmeans", seed: int = 0, name: str = "volume") -> Clustering:
    if method not in METHODS:
        raise SrjaxError(f"unknown pseudo-label method {method!r}; choose one of {', '.join(METHODS)}")
    occupied = np.flatnonzero(hist.counts)
    if classes < 2:
        raise SrjaxError(f"--classes {classes}: need at least 2 classes")
    if classes > len(occupied):
        raise SrjaxError(
            f"--classes {classes} is more than the {len(occupied)} distinct values in {name}; lower --classes"
        )
    values = hist.centres[occupied].reshape(-1, 1)
    # tol=0: sklearn scales tol by the unweighted variance of the bin centres, which
    # would stop Lloyd far from convergence on a histogram.
    km = KMeans(n_clusters=classes, n_init=4, random_state=seed, tol=0.0, max_iter=1000)
    km.fit(values, sample_weight=hist.counts[occupied].astype(np.float64))
    return Clustering(np.sort(km.cluster_centers_.ravel()))


def label_volume(volume, clustering: Clustering, out: np.ndarray, progress: bool = False) -> np.ndarray:
    for z in tqdm(range(volume.shape[0]), desc="stage 1: label", unit="slice", disable=not progress):
        out[z] = clustering.label(np.asarray(volume[z]))
    return out
