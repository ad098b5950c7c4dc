"""The intensity guard: hand back to the voxel values what the net's labels contradict.

A net that sees a wide field corrects smooth intensity faults that fool clustering
(drift, beam-hardening cupping) but blurs what is smaller than that field: small
pores and particles, a rare phase's inclusions. The guard keeps the net's labels
where the voxel values agree with them, and where they plainly do not, lets the
values decide. Nothing in it needs ground truth:

  1. each class's local mean grey level as a smooth field, from the net's own labels:
     per-block sums of the values it gives the class, smoothed over neighbouring blocks
     by normalised convolution (falling back to the class's global mean where the class
     is absent) and interpolated back to the voxels, so drift and cupping are followed.
     The fields are then fitted again from the consistent voxels alone: those whose
     value is nearer their class's field than any other's;
  2. the noise sd: each class's is 1.4826 × the median absolute deviation of its
     consistent voxels from its field, and the guard uses their median: a class of
     small inclusions spreads far wider than the noise (each is blurred into its
     surroundings), and its own sd would let its field claim their surroundings;
  3. a voxel more than ``sds`` noise sd from its class's field is relabelled to the
     class whose field is nearest its value, unless its value is a mix of its class's
     and that of a class in its 3×3×3 neighbourhood with at most half of the other: a
     boundary voxel, which stays with the class it holds more of (with more, it goes
     to that class, never to one whose value merely lies between the two).

The volume is streamed four times a slab at a time, so it never has to fit in memory.
Voxels outside stage 1's mask take no part and keep the net's labels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from srjax.outputs import check_interrupt
from srjax.progress import bar as progress_bar
from srjax.pseudo import Mask
from srjax.sources import SLAB_BYTES, Source, slab_depth

MAD_TO_SD = 1.4826
RESIDUAL_BINS = 4096
# Where a class has fewer than this many voxels per block nearby, its field leans on its global mean.
PRIOR_VOXELS = 1.0
# A class the net gave fewer voxels than this takes the noise sd of all classes together.
NOISE_VOXELS = 1000


def interpolation_matrix(size: int, block: int) -> np.ndarray:
    """[size, blocks] weights that interpolate values at block centres linearly to every position."""
    blocks = -(-size // block)
    position = np.clip((np.arange(size) + 0.5) / block - 0.5, 0, blocks - 1)
    left = np.minimum(np.floor(position).astype(int), max(blocks - 2, 0))
    frac = position - left
    matrix = np.zeros((size, blocks), np.float32)
    matrix[np.arange(size), left] = 1 - frac
    if blocks > 1:
        matrix[np.arange(size), left + 1] += frac
    return matrix


def _block_sums(array: np.ndarray, block: int) -> np.ndarray:
    """Sums over [block]^3 blocks of a [d, h, w] array, zero-padded to whole blocks."""
    pad = [(0, -s % block) for s in array.shape]
    padded = np.pad(array, pad)
    d, h, w = (s // block for s in padded.shape)
    return padded.reshape(d, block, h, block, w, block).sum(axis=(1, 3, 5))


class Guard:
    """Class fields, noise sds and the relabelling of one volume's net labels."""

    def __init__(self, values: Source, labels: Source, prior_means, sds: float, block: int, progress: bool = False,
                 mask=None):
        self.values, self.labels = values, labels
        self.mask = mask if isinstance(mask, Mask) else Mask(mask, values.shape, "pseudo.mask")
        self.prior_means = np.asarray(prior_means, np.float64).reshape(len(prior_means), -1)[:, 0]
        classes = self.classes = len(self.prior_means)
        self.sds, self.block, self.progress = sds, block, progress
        n, h, w = values.shape
        # Relabelling holds a field and a distance per class for every voxel of a slab.
        self.depth = block * max(1, slab_depth(values.shape, np.float32, SLAB_BYTES // classes) // block)
        self.rows, self.cols = interpolation_matrix(h, block), interpolation_matrix(w, block)
        self.slices = interpolation_matrix(n, block)

    def _slabs(self, desc: str, halo: int = 0):
        """Yield (start, stop, values [stop - start, H, W] float32, labels with ``halo`` slices
        each side, inside: where the mask holds, None without one)."""
        n = self.values.shape[0]
        for start in progress_bar(range(0, n, self.depth), desc=desc, unit="slab", disable=not self.progress):
            check_interrupt()
            stop = min(start + self.depth, n)
            values = np.asarray(self.values.read(start, stop), np.float32)
            planes = [self.mask(z) for z in range(start, stop)]
            inside = None if planes[0] is None else np.stack(planes)
            if inside is not None:
                values[~inside] = 0  # NaN is allowed outside the mask
            first, last = max(start - halo, 0), min(stop + halo, n)
            labels = np.asarray(self.labels.read(first, last))
            before, after = halo - (start - first), halo - (last - stop)
            labels = np.pad(labels, [(before, after), (0, 0), (0, 0)], mode="edge")
            yield start, stop, values, labels, inside

    def fit(self) -> None:
        """Class fields from every voxel, then again from the consistent voxels only (where
        the net is wrong over a region, its values would pull the field toward the class
        they belong to), and the noise sds about those fields."""
        self._fields(self._class_sums(consistent=False))
        self._fields(self._class_sums(consistent=True))
        self.noise = self._noise()
        self.sd = float(np.median(self.noise))

    def _consistent(self, start: int, stop: int, values: np.ndarray, labels: np.ndarray):
        """Each voxel's absolute deviation from its class's field, and whether its value is
        nearer that field than any other class's."""
        residuals = np.abs(values[None] - self._means(start, stop))
        own = np.take_along_axis(residuals, labels[None].astype(np.intp), 0)[0]
        return own, residuals.argmin(axis=0) == labels

    def _class_sums(self, consistent: bool) -> tuple[np.ndarray, np.ndarray]:
        """Per class and block, the sum and count of the values labelled that class (only the consistent ones)."""
        n, h, w = self.values.shape
        coarse = tuple(-(-s // self.block) for s in (n, h, w))
        sums, counts = np.zeros((self.classes, *coarse)), np.zeros((self.classes, *coarse))
        for start, stop, values, labels, inside in self._slabs("stage 3 guard: class fields"):
            z = start // self.block
            kept = self._consistent(start, stop, values, labels)[1] if consistent else True
            kept = kept if inside is None else kept & inside
            for c in range(self.classes):
                mine = (labels == c) & kept
                block_sums = _block_sums(np.where(mine, values, 0).astype(np.float64), self.block)
                sums[c, z:z + len(block_sums)] += block_sums
                counts[c, z:z + len(block_sums)] += _block_sums(mine.astype(np.float64), self.block)
        return sums, counts

    def _fields(self, sums_and_counts) -> None:
        sums, counts = sums_and_counts
        totals = counts.sum(axis=(1, 2, 3))
        # A class the net erased keeps its stage-1 mean, so the values can bring it back.
        overall = np.where(totals > 0, sums.sum(axis=(1, 2, 3)) / np.maximum(totals, 1), self.prior_means)
        smooth = [ndimage.gaussian_filter(a, (0, 1, 1, 1), mode="constant") for a in (sums, counts)]
        prior = overall[:, None, None, None]
        self.fields = ((smooth[0] + PRIOR_VOXELS * prior) / (smooth[1] + PRIOR_VOXELS)).astype(np.float32)
        self.residual_step = max(float(overall.max() - overall.min()), 1e-12) / RESIDUAL_BINS

    def _noise(self) -> np.ndarray:
        """Each class's sd about its field: 1.4826 × the median absolute deviation of its
        consistent voxels, from a histogram."""
        histograms = np.zeros((self.classes, RESIDUAL_BINS + 1), np.int64)
        for start, stop, values, labels, inside in self._slabs("stage 3 guard: noise"):
            own, consistent = self._consistent(start, stop, values, labels)
            consistent = consistent if inside is None else consistent & inside
            bins = np.minimum(own / self.residual_step, RESIDUAL_BINS).astype(np.intp)
            histograms += np.stack([np.bincount(bins[(labels == c) & consistent], minlength=RESIDUAL_BINS + 1)
                                    for c in range(self.classes)])
        pooled = histograms.sum(axis=0)
        return np.array([MAD_TO_SD * self.residual_step * (_median_bin(row if row.sum() >= NOISE_VOXELS else pooled)
                                                           + 0.5) for row in histograms], np.float32)

    def _means(self, start: int, stop: int) -> np.ndarray:
        """[classes, stop - start, H, W] the class fields at every voxel of slices [start, stop)."""
        zs = self.slices[start:stop]
        used = np.flatnonzero(zs.any(axis=0))
        fields = self.fields[:, used]
        return np.einsum("zi,cijk,yj,xk->czyx", zs[:, used], fields, self.rows, self.cols, optimize=True)

    def relabel(self, writer) -> np.ndarray:
        """Write the guarded labels; return the [from, to] count of voxels moved.

        A voxel whose value is a mix of its own class and a neighbour's class c (a share of
        c's value between 0 and 1.5) is a boundary voxel: it stays if it holds at most half
        of c, else goes to c, never to a class whose value merely lies between the two.
        Any other voxel far from its class goes to the class whose field is nearest its value."""
        moved = np.zeros((self.classes, self.classes), np.int64)
        footprint = np.ones((3, 3, 3), bool)
        for start, stop, values, labels, inside in self._slabs("stage 3 guard: relabel", halo=1):
            means = self._means(start, stop)
            distance = np.abs(values[None] - means) / max(self.sd, 1e-12)  # in noise sd
            own_labels = labels[1:-1].astype(np.intp)
            own = np.take_along_axis(distance, own_labels[None], 0)[0]
            own_mean = np.take_along_axis(means, own_labels[None], 0)[0]
            target = distance.argmin(axis=0)
            stays = np.zeros(values.shape, bool)
            boundary_distance = np.full(values.shape, np.inf, np.float32)
            for c in range(self.classes):
                beside = ndimage.binary_dilation(labels == c, footprint)[1:-1] & (own_labels != c)
                with np.errstate(divide="ignore", invalid="ignore"):
                    share = (values - own_mean) / (means[c] - own_mean)
                stays |= beside & (share >= 0) & (share <= 0.5)
                toward = beside & (share > 0.5) & (share <= 1.5) & (distance[c] < boundary_distance)
                target[toward], boundary_distance[toward] = c, distance[c][toward]
            flip = (own > self.sds) & ~stays & (target != own_labels)
            flip = flip if inside is None else flip & inside
            out = np.where(flip, target, own_labels).astype(np.uint8)
            pairs = own_labels[flip] * self.classes + target[flip]
            moved += np.bincount(pairs, minlength=self.classes**2).reshape(self.classes, self.classes)
            writer[start:stop] = out
        return moved

    def summary(self, moved: np.ndarray) -> dict:
        return {"sds": self.sds, "block": self.block, "noise_sd": self.sd, "class_sd": self.noise.tolist(),
                "moved": moved.tolist(), "moved_fraction": float(moved.sum() / np.prod(self.values.shape))}


def _median_bin(counts: np.ndarray) -> int:
    total = counts.sum()
    return int(np.searchsorted(np.cumsum(counts), (total + 1) / 2)) if total else 0


def guard_labels(values: Source, labels: Source, writer, prior_means, sds: float, block: int,
                 progress: bool = False, mask=None) -> dict:
    """Relabel what ``values`` contradict in ``labels`` into ``writer``; return what moved (see the
    module). ``prior_means``: each class's mean value from stage 1, for a class the net has lost;
    ``mask``: stage 1's (a ``srjax.pseudo.Mask`` or its spec: None, "circle" or a mask volume's path)."""
    guard = Guard(values, labels, prior_means, sds, block, progress, mask)
    guard.fit()
    return guard.summary(guard.relabel(writer))
