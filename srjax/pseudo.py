"""Stage 1: pseudo labels by clustering voxel values, out of core.

Streaming passes over slabs of slices, each read while the previous one is
processed: (for floats and wide integers) a range pass that also rejects NaN/Inf,
a histogram pass, and a labelling pass through a bin -> class lookup table. Memory
is a few slabs whatever the volume size; the clustering sees only the histogram.
8- and 16-bit integers are histogrammed exactly, one bin per value; anything else
gets FLOAT_BINS equal bins over its range. ``gmm-full`` clusters two features per
voxel (its value and the mean of its 3x3x3 neighbourhood) on a 2-D histogram.

Class ids ascend with the class mean, so id 0 is the darkest class. Voxels outside
the mask are not clustered and are labelled 0.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from srjax import clustering as cl
from srjax import io, parallel
from srjax.config import MAX_CLASSES
from srjax.errors import SrjaxError
from srjax.progress import bar as progress_bar
from srjax.sources import Source, slab_depth

FLOAT_BINS = 65536
FEATURE_BINS = 512  # per axis of the 2-D histogram of gmm-full
MAX_AUTO_CLASSES = 8
METHODS = ("kmeans", "kmeans-lloyd", "otsu", "gmm", "gmm-full")
SEEDED_METHODS = ("kmeans-lloyd",)  # the others give the same labels for every seed
# EM costs grow with K (gmm at K = 32 takes about 35 s on 65,536 bins on a 2-core CPU;
# gmm-full works on up to 512² 2-D bins); the k-means methods fit any K the labels hold.
GMM_MAX_CLASSES = {"gmm": 32, "gmm-full": 16}
SLAB_BYTES = 32 << 20
BINCOUNT_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Binning:
    """Equal-width bins ``[low + i*width, low + (i+1)*width)``; a bin per value when ``integer``."""

    low: float
    width: float
    bins: int
    integer: bool

    @property
    def centres(self) -> np.ndarray:
        offset = 0.0 if self.integer else 0.5
        return self.low + self.width * (np.arange(self.bins) + offset)

    def index(self, values: np.ndarray) -> np.ndarray:
        dtype = values.dtype
        if self.integer and dtype.itemsize <= 2 and self.bins == 1 << (8 * dtype.itemsize):
            # The whole 8/16-bit range, a bin per value; flipping the sign bit orders signed types.
            unsigned = np.dtype(f"u{dtype.itemsize}")
            return values if dtype.kind == "u" else values.view(unsigned) ^ unsigned.type(1 << (8 * dtype.itemsize - 1))
        scaled = (values.astype(np.float64) - self.low) / self.width
        return np.fmin(np.fmax(scaled, 0), self.bins - 1).astype(np.intp)  # fmin/fmax send NaN to bin 0


@dataclasses.dataclass(frozen=True)
class Stage1:
    """What stage 1 found: the binning, histogram, clustering and (for classes='auto') the K curve."""

    method: str
    binning: Binning
    counts: np.ndarray
    clustering: cl.Clustering
    low: float  # smallest and largest voxel value inside the mask
    high: float
    curve: dict | None = None

    def summary(self) -> dict:
        c = self.clustering
        info = {"method": self.method, "classes": c.classes, "low": self.low, "high": self.high,
                "means": c.means.tolist(), "objective": c.objective,
                "objective_name": "log-likelihood" if self.method.startswith("gmm") else "within-class sum of squares"}
        if c.thresholds is not None:
            info["thresholds"] = c.thresholds.tolist()
        if self.curve is not None:
            info["choice_of_k"] = self.curve
        return info


def circle_mask(shape) -> np.ndarray:
    """[H, W] disc inscribed in the slice: the field of view of a parallel-beam reconstruction."""
    h, w = shape[-2:]
    y, x = np.ogrid[:h, :w]
    radius = min(h, w) / 2
    return (y - (h - 1) / 2) ** 2 + (x - (w - 1) / 2) ** 2 <= radius * radius


class Mask:
    """Which voxels are clustered: all, the reconstruction circle, or a volume's nonzero voxels."""

    def __init__(self, spec, shape, name: str = "mask"):
        self.volume, self.disc = None, None
        if spec == "circle":
            self.disc = circle_mask(shape)
        elif spec is not None:
            self.volume = io.open_volume(spec, name, cache_bytes=0) if isinstance(spec, str) else io.as_volume(spec)
            if tuple(self.volume.shape) != tuple(shape):
                raise SrjaxError(f"{name} has shape {tuple(self.volume.shape)} but the volume is {tuple(shape)}")

    def __call__(self, z: int) -> np.ndarray | None:
        """[H, W] bool of slice ``z``, or None for no mask."""
        if self.disc is not None:
            return self.disc
        if self.volume is not None:
            return io.read(self.volume[z], "mask") != 0
        return None


def _slabs(source: Source, halo: int, desc: str, progress: bool):
    """Yield (start, stop, first, slab): slices [first, ...) covering [start, stop) plus
    ``halo`` slices each side, the next slab read while the caller works on this one; over
    this process's share of the slices (``srjax.parallel``)."""
    n = source.shape[0]
    depth = slab_depth(source.shape, source.dtype, SLAB_BYTES)
    mine = parallel.share(n)
    starts = list(range(mine.start, mine.stop, depth))

    def read(start):
        return source.read(max(start - halo, 0), min(start + depth + halo, n))

    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(read, starts[0]) if starts else None
        for index, start in enumerate(progress_bar(starts, desc=desc, unit="slab", disable=not progress)):
            slab = np.asarray(pending.result())
            if index + 1 < len(starts):
                pending = reader.submit(read, starts[index + 1])
            yield start, min(start + depth, mine.stop), max(start - halo, 0), slab


def _per_slice(fn, starts_and_slabs, workers: int):
    """Apply ``fn(z, slab, first)`` to every slice, a slab at a time on ``workers`` threads."""
    with ThreadPoolExecutor(workers) as pool:
        for start, stop, first, slab in starts_and_slabs:
            yield start, stop, list(pool.map(lambda z: fn(z, slab, first), range(start, stop)))


class Features:
    """Histogram bin ids of one slice: the value's bin, or a 2-D bin of (value, 3x3x3 mean)."""

    def __init__(self, binning: Binning, two_d: bool):
        self.binning, self.two_d = binning, two_d
        self.halo = 1 if two_d else 0
        self.bins = binning.bins**2 if two_d else binning.bins

    def ids(self, z: int, slab: np.ndarray, first: int, depth: int) -> np.ndarray:
        values = slab[z - first]
        if not self.two_d:
            return self.binning.index(values)
        window = slab[[max(z - 1, 0) - first, z - first, min(z + 1, depth - 1) - first]]
        smooth = ndimage.uniform_filter(window.astype(np.float64), size=3, mode="reflect")[1]
        return self.binning.index(values).astype(np.intp) * self.binning.bins + self.binning.index(smooth)


def _workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def value_range(source: Source, mask: Mask, progress: bool = False) -> tuple[float, float]:
    """Min and max inside the mask, slab by slab; rejects NaN/Inf there, and constant volumes."""

    def extremes(z, slab, first):
        values = slab[z - first]
        inside = mask(z)
        values = values if inside is None else values[inside]
        if values.size == 0:
            return np.inf, -np.inf
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise SrjaxError(f"{source.name} has NaN or Inf voxels (first in slice {z}); "
                             "clean them or exclude them with a mask")
        return float(values.min()), float(values.max())

    def local_range():
        low, high = np.inf, -np.inf
        for _, _, parts in _per_slice(extremes, _slabs(source, 0, "stage 1: range", progress), _workers()):
            low, high = min([low] + [p[0] for p in parts]), max([high] + [p[1] for p in parts])
        return low, high

    ranges = parallel.gathered(parallel.together(local_range))
    low, high = float(ranges[:, 0].min()), float(ranges[:, 1].max())
    if low > high:
        raise SrjaxError(f"{source.name}: the mask excludes every voxel")
    if low == high:
        raise SrjaxError(f"{source.name} is constant (every voxel is {low}); there is nothing to segment")
    return low, high


def choose_binning(source: Source, mask: Mask, two_d: bool, progress: bool = False) -> tuple[Binning, tuple | None]:
    """The binning, and the exact value range when a range pass was needed to find it."""
    dtype = np.dtype(source.dtype)
    if dtype.kind in "iu" and dtype.itemsize <= 2 and not two_d:
        return Binning(float(np.iinfo(dtype).min), 1.0, 1 << (8 * dtype.itemsize), True), None
    low, high = value_range(source, mask, progress)
    if two_d:
        return Binning(low, (high - low) / FEATURE_BINS * (1 + 1e-12), FEATURE_BINS, False), (low, high)
    if dtype.kind in "iu" and high - low < FLOAT_BINS:
        return Binning(low, 1.0, int(high - low) + 1, True), (low, high)
    # The 1e-12 widening puts the maximum inside the last bin.
    return Binning(low, (high - low) / FLOAT_BINS * (1 + 1e-12), FLOAT_BINS, False), (low, high)


def histogram(source: Source, features: Features, mask: Mask, progress: bool = False) -> np.ndarray:
    depth = source.shape[0]

    def count(z, slab, first):
        ids, inside = features.ids(z, slab, first, depth), mask(z)
        ids = (ids if inside is None else ids[inside]).ravel()
        counts = np.zeros(features.bins, np.int64)
        for start in range(0, len(ids), BINCOUNT_BLOCK):  # bincount casts to intp: keep that copy in cache
            counts += np.bincount(ids[start : start + BINCOUNT_BLOCK], minlength=features.bins)
        return counts

    counts = np.zeros(features.bins, np.int64)
    for _, _, parts in _per_slice(count, _slabs(source, features.halo, "stage 1: histogram", progress), _workers()):
        counts += np.sum(parts, axis=0)
    return parallel.summed(counts)


def label(source: Source, features: Features, table: np.ndarray, mask: Mask, writer, progress: bool = False) -> None:
    """Write the class of every voxel (0 outside the mask) into ``writer`` slab by slab."""
    depth = source.shape[0]

    def lookup(z, slab, first, out):
        np.take(table, features.ids(z, slab, first, depth), out=out)
        inside = mask(z)
        if inside is not None:
            out[~inside] = 0

    with ThreadPoolExecutor(_workers()) as pool:
        for start, stop, first, slab in _slabs(source, features.halo, "stage 1: label", progress):
            labels = np.empty((stop - start, *source.shape[1:]), np.uint8)
            list(pool.map(lambda z: lookup(z, slab, first, labels[z - start]), range(start, stop)))
            writer[start:stop] = labels


def check_method(method: str) -> None:
    if method not in METHODS:
        raise SrjaxError(f"unknown pseudo-label method {method!r}; choose one of {', '.join(METHODS)}")


def check_classes(method: str, classes, name: str = "classes") -> None:
    """At most the classes ``method`` fits: what uint8 labels hold, fewer for the mixtures."""
    limit = GMM_MAX_CLASSES.get(method, MAX_CLASSES)
    if classes != "auto" and classes > limit:
        raise SrjaxError(f"{name}={classes} is more than {method} fits (at most {limit}); lower it"
                         + ("" if limit == MAX_CLASSES else " or use kmeans"))


def cluster(method: str, binning: Binning, counts: np.ndarray, classes, seed: int = 0,
            name: str = "volume", two_d: bool = False, progress: bool = False) -> tuple[cl.Clustering, dict | None]:
    """Cluster the occupied bins; ``classes`` is K or 'auto'. Returns the clustering and the K curve."""
    occupied = np.flatnonzero(counts)
    if len(occupied) == 0:
        raise SrjaxError(f"{name}: the mask excludes every voxel")
    w = counts[occupied].astype(np.float64)
    x = bin_points(binning, occupied, two_d)
    distinct = len(np.unique(x if x.ndim == 1 else x[:, 0]))
    if distinct == 1:
        raise SrjaxError(f"{name} is constant (one value inside the mask); there is nothing to segment")
    # Binned floats spread each bin's voxels over its width: a variance floor of width^2/12.
    reg = cl.REG_COVAR + (0.0 if binning.integer else binning.width**2 / 12)
    curve = None
    if classes == "auto":
        classes, curve = choose_classes(method, x, w, min(MAX_AUTO_CLASSES, distinct), seed, reg)
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise SrjaxError(f"classes={classes!r}: need an integer of at least 2, or 'auto'")
    check_classes(method, classes)
    if classes > distinct:
        counted = "" if binning.integer else f" (counted in its {binning.bins}-bin histogram)"
        raise SrjaxError(f"classes={classes} is more than the {distinct} distinct values in {name}{counted}; "
                         "lower the classes")
    return fit(method, x, w, classes, seed, reg, progress), curve


def bin_points(binning: Binning, ids: np.ndarray, two_d: bool) -> np.ndarray:
    """Feature values of histogram bins: [n] centres, or [n, 2] for 2-D bins."""
    centres = binning.centres
    if two_d:
        return np.stack([centres[ids // binning.bins], centres[ids % binning.bins]], axis=1)
    return centres[ids]


def fit(method: str, x, w, classes: int, seed: int, reg: float, progress: bool = False) -> cl.Clustering:
    if method == "kmeans":
        return cl.kmeans_exact(x, w, classes)
    if method == "kmeans-lloyd":
        return cl.kmeans_lloyd(x, w, classes, seed)
    if method == "otsu":
        return cl.multi_otsu(x, w, classes)
    return cl.gmm(x, w, classes, reg, progress)


def choose_classes(method: str, x, w, max_classes: int, seed: int, reg: float) -> tuple[int, dict]:
    """K by the elbow of the k-means SSE curve, or by the lowest BIC for the GMMs."""
    ks = list(range(1, max_classes + 1))
    if method.startswith("gmm"):
        dims = 1 if x.ndim == 1 else x.shape[1]
        bic = [float(-2 * fit(method, x, w, k, seed, reg).objective + cl.gmm_parameter_count(k, dims) * np.log(w.sum()))
               for k in ks]
        choice = max(ks[int(np.argmin(bic))], 2)
        return choice, {"rule": "lowest BIC", "k": ks, "bic": bic, "chosen": choice}
    sse, _ = cl.optimal_partitions(x, w, max_classes)
    choice = max(cl.elbow(sse), 2)
    return choice, {"rule": "elbow of the within-class sum of squares", "k": ks, "sse": sse.tolist(), "chosen": choice}


def run_stage1(source: Source, writer, method: str = "kmeans", classes=4, mask=None, seed: int = 0,
               progress: bool = False) -> Stage1:
    """Cluster ``source``'s voxel values and write its labels into ``writer`` (anything
    that takes ``writer[start:stop] = slab``)."""
    check_method(method)
    mask = mask if isinstance(mask, Mask) else Mask(mask, source.shape)
    two_d = method == "gmm-full"
    binning, value_range_found = choose_binning(source, mask, two_d, progress)
    features = Features(binning, two_d)
    counts = histogram(source, features, mask, progress)
    clustering, curve = cluster(method, binning, counts, classes, seed, source.name, two_d, progress)
    if value_range_found is None:  # exact bins: the occupied ones are the extreme values
        occupied = np.flatnonzero(counts)
        value_range_found = binning.centres[occupied[[0, -1]]]
    table = clustering.classify(bin_points(binning, np.arange(features.bins), two_d))
    label(source, features, table, mask, writer, progress)
    low, high = value_range_found
    return Stage1(method, binning, counts, clustering, float(low), float(high), curve)


def write_pseudo_labels(source: Source, path, method: str = "kmeans", classes=4, mask=None, seed: int = 0,
                        progress: bool = False, voxel_size=None, unit: str | None = None,
                        source_image: str | None = None) -> Stage1:
    """Stage 1 into an OME-Zarr label image at ``path``, its summary kept in the attributes."""
    with io.shared_ome_zarr_writer(path, source.shape, np.uint8, name="pseudo labels", chunks=io.LABEL_CHUNKS,
                            voxel_size=voxel_size, unit=unit) as writer:
        result = run_stage1(source, writer, method, classes, mask, seed, progress)
        writer.attributes["srjax"].update(result.summary())
        writer.set_labels(class_names(result.clustering.means), source_image)
    return result


def class_names(means) -> list[str]:
    """A name for each class id: its number and mean value, darkest first."""
    return [f"class {i} (mean {mean:.4g})" for i, mean in enumerate(means)]
