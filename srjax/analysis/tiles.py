"""The population ``srjax sample`` chooses from: 2-D tiles of one volume or a time series,
each with an embedding and a domain signal.

Embeddings come from srjax's own trained encoder when a run is given (its stage-3 net,
the ``cam_layer`` output, e.g. the U-Net's bottleneck, averaged over the tile), and
otherwise from training-free statistics of the tile: a 16-bin intensity histogram,
mean, spread, quantiles, gradient and Laplacian energy, each standardised over the
population. Nothing is downloaded.

The domain signal, the talk's proxy for degradation: in a time series the
displacement of each tile between consecutive steps by phase correlation (the tile at
step t against the same place at t - 1; step 0 against step 1). A single volume has
no such signal; with a run, srjax uses the tile's class mix instead (the entropy of
its label fractions: a tile where phases meet scores high), else none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from srjax import io
from srjax.data import context_indices, normalise
from srjax.errors import SrjaxError
from srjax.progress import bar

HISTOGRAM_BINS = 16
PERCEPTUAL_SIDE = 16  # pixels per side of the downsampled tile the pixel-level perceptual term compares
LAPLACE = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class Encoder:
    """A finished run's net: embeddings and early feature maps of 2.5D tiles."""

    model: object
    params: dict
    slices: int
    low: float
    high: float
    layer: str
    early: tuple[str, ...]
    classes: int

    @classmethod
    def from_run(cls, root) -> Encoder:
        from srjax.explain import layer_names
        from srjax.models import build_model
        from srjax.rundir import open_run
        from srjax.train import latest_params, prediction_key

        run, config, _ = open_run(root)
        stage = "stage3" if (run.checkpoints("stage3")).exists() else "stage2"
        if not run.checkpoints(stage).exists():
            raise SrjaxError(f"{run.root} has no trained net yet; let the run finish stage 2 at least")
        stage1 = run.read(run.stage1)
        model = build_model(config.model.name, stage1["classes"], config.model.width, config.model.dropout)
        params = latest_params(run.checkpoints(stage), prediction_key(stage, config))
        names = [n for n in layer_names(model, params, (64, 64, config.data.slices)) if "/" not in n]
        early = tuple(n for n in names if n.startswith("encoder_"))[:2] or (model.cam_layer,)
        return cls(model, params, config.data.slices, stage1["low"], stage1["high"], model.cam_layer, early,
                   stage1["classes"])

    def features(self, stacks: np.ndarray, layers: tuple[str, ...]) -> dict[str, np.ndarray]:
        from srjax.explain import module_outputs

        return module_outputs(self.model, self.params, stacks, layers)

    def embed(self, stacks: np.ndarray) -> np.ndarray:
        return self.features(stacks, (self.layer,))[self.layer].mean(axis=(1, 2))

    def maps(self, stacks: np.ndarray) -> list[np.ndarray]:
        found = self.features(stacks, self.early)
        return [found[name] for name in self.early]


def handcrafted(tiles: np.ndarray) -> np.ndarray:
    """[n, h, w] tiles in [0, 1] -> [n, 27] statistics (not yet standardised)."""
    flat = tiles.reshape(len(tiles), -1)
    bins = np.minimum((np.clip(flat, 0.0, 1.0) * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
    offsets = np.arange(len(tiles))[:, None] * HISTOGRAM_BINS
    histogram = np.bincount((bins + offsets).ravel(), minlength=len(tiles) * HISTOGRAM_BINS)
    histogram = histogram.reshape(len(tiles), HISTOGRAM_BINS) / flat.shape[1]
    gy, gx = np.gradient(tiles, axis=(1, 2))
    laplace = ndimage.correlate(tiles, LAPLACE[None], mode="reflect").reshape(len(tiles), -1)
    quantiles = np.quantile(flat, [0.05, 0.25, 0.5, 0.75, 0.95], axis=1).T
    return np.concatenate([histogram, flat.mean(1, keepdims=True), flat.std(1, keepdims=True), quantiles,
                           np.hypot(gy, gx).reshape(len(tiles), -1).mean(1, keepdims=True),
                           laplace.std(1, keepdims=True), np.abs(laplace).mean(1, keepdims=True),
                           (flat > flat.mean(1, keepdims=True)).mean(1, keepdims=True)], axis=1)


def pixel_maps(tiles: np.ndarray) -> list[np.ndarray]:
    """The tiles downsampled to PERCEPTUAL_SIDE², with local mean and contrast as channels."""
    n, h, w = tiles.shape
    small = ndimage.zoom(tiles, (1, PERCEPTUAL_SIDE / h, PERCEPTUAL_SIDE / w), order=1)
    return [np.stack([small - small.mean(axis=(1, 2), keepdims=True),
                      ndimage.gaussian_gradient_magnitude(small, (0, 1, 1))], axis=-1)]


def phase_shift(earlier: np.ndarray, later: np.ndarray) -> np.ndarray:
    """[n] length of the integer shift between each pair of tiles by phase correlation
    (as skimage.registration.phase_cross_correlation at integer precision), batched."""
    product = np.fft.fft2(earlier) * np.conj(np.fft.fft2(later))
    product /= np.maximum(np.abs(product), 1e-12)
    correlation = np.abs(np.fft.ifft2(product)).reshape(len(earlier), -1)
    peak = np.stack(np.unravel_index(correlation.argmax(1), earlier.shape[1:]), axis=1).astype(np.float64)
    size = np.asarray(earlier.shape[1:], np.float64)
    peak = np.where(peak > size // 2, peak - size, peak)
    return np.hypot(peak[:, 0], peak[:, 1])


def class_mix(labels: np.ndarray, classes: int) -> np.ndarray:
    """[n] entropy (nats) of each tile's class fractions."""
    counts = np.stack([np.bincount(t.ravel(), minlength=classes) for t in labels]).astype(np.float64)
    p = counts / counts.sum(1, keepdims=True)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(1)


@dataclass(frozen=True)
class Grid:
    """Tiles of ``size`` (0: whole slices) on every ``every``-th slice of each of ``steps`` volumes."""

    shape: tuple
    steps: int
    size: int
    every: int

    def corners(self) -> list[tuple[int, int]]:
        _, h, w = self.shape
        if self.size == 0:
            return [(0, 0)]
        return [(y, x) for y in range(0, h - self.size + 1, self.size) for x in range(0, w - self.size + 1, self.size)]

    def extent(self) -> tuple[int, int]:
        return (self.shape[1], self.shape[2]) if self.size == 0 else (self.size, self.size)

    def table(self) -> dict[str, np.ndarray]:
        corners = np.asarray(self.corners())
        slices = np.arange(0, self.shape[0], self.every)
        t, z, c = np.meshgrid(np.arange(self.steps), slices, np.arange(len(corners)), indexing="ij")
        height, width = self.extent()
        n = t.size
        return {"time": t.ravel(), "z": z.ravel(), "y": corners[c.ravel(), 0], "x": corners[c.ravel(), 1],
                "height": np.full(n, height), "width": np.full(n, width)}


def check_grid(shape, size: int, every: int) -> None:
    if size < 0 or size > min(shape[1:]):
        raise SrjaxError(f"--tile {size} does not fit slices of {shape[1]}x{shape[2]}; use 0 (whole slices) up to "
                         f"{min(shape[1:])}")
    if size and size < 8:
        raise SrjaxError(f"--tile {size} is too small to say anything about; use at least 8 (or 0: whole slices)")
    if every < 1:
        raise SrjaxError(f"--every {every} must be 1 or more")


def intensity_range(volume) -> tuple[float, float]:
    """0.5 and 99.5 percentiles of 8 evenly spaced slices: the scaling of tiles without a run."""
    picks = np.linspace(0, volume.shape[0] - 1, min(8, volume.shape[0])).round().astype(int)
    values = np.concatenate([io.read(volume[int(z)], "volume").ravel() for z in picks]).astype(np.float64)
    values = values[np.isfinite(values)]
    low, high = np.percentile(values, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1)


def cut(image: np.ndarray, corners, extent) -> np.ndarray:
    """[n, h, w, ...] tiles of an [H, W, ...] image."""
    return np.stack([image[y : y + extent[0], x : x + extent[1]] for y, x in corners])


def read_stack(volume, z: int, slices: int, low: float, high: float) -> np.ndarray:
    """[H, W, S] normalised stack around slice z."""
    stack = io.read(volume.oindex[context_indices(z, slices, volume.shape[0])], "volume")
    return np.moveaxis(normalise(stack, low, high), 0, -1)


@dataclass(frozen=True)
class Population:
    table: dict
    embeddings: np.ndarray
    signal: np.ndarray | None
    signal_name: str


def collect(volumes: list, grid: Grid, encoder: Encoder | None, labels=None, low=None, high=None,
            progress: bool = True, batch: int = 256) -> Population:
    """Every tile's embedding and domain signal, slice by slice (no tile image is kept)."""
    corners, extent = grid.corners(), grid.extent()
    if encoder is not None:
        low, high, slices = encoder.low, encoder.high, encoder.slices
    else:
        slices = 1
    embeddings, signal = [], []
    series = len(volumes) > 1
    zs = range(0, grid.shape[0], grid.every)
    for t in bar(range(len(volumes)), desc="tiles", unit="volume", disable=not progress or len(volumes) == 1):
        for z in bar(zs, desc="tiles", unit="slice", disable=not progress or series):
            stack = read_stack(volumes[t], z, slices, low, high)
            tiles = cut(stack, corners, extent)
            middle = tiles[..., slices // 2]
            if encoder is not None:
                embeddings.append(np.concatenate([encoder.embed(tiles[i : i + batch])
                                                  for i in range(0, len(tiles), batch)]))
            else:
                embeddings.append(handcrafted(middle))
            if series:
                other = volumes[t - 1] if t > 0 else volumes[1]
                neighbour = cut(normalise(io.read(other[z], "volume"), low, high), corners, extent)
                signal.append(phase_shift(neighbour, middle) if t > 0 else phase_shift(middle, neighbour))
            elif labels is not None:
                signal.append(class_mix(cut(io.read(labels[z], "labels"), corners, extent), encoder.classes))
    x = np.concatenate(embeddings).astype(np.float64)
    if encoder is None:
        x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    name = "displacement" if series else "class mix" if labels is not None else "none"
    return Population(grid.table(), x, np.concatenate(signal) if signal else None, name)


def tile_images(volumes: list, table: dict, rows, low: float, high: float) -> np.ndarray:
    """The middle-slice images of tiles ``rows`` of ``table``, normalised: [len(rows), h, w]."""
    out = []
    for row in rows:
        t, z, y, x = (int(table[k][row]) for k in ("time", "z", "y", "x"))
        h, w = int(table["height"][row]), int(table["width"][row])
        out.append(normalise(io.read(volumes[t][z, y : y + h, x : x + w], "volume"), low, high))
    return np.stack(out)


def tile_stacks(volumes: list, table: dict, rows, encoder: Encoder) -> np.ndarray:
    """The 2.5D stacks of tiles ``rows`` for ``encoder``: [len(rows), h, w, S]."""
    out = []
    for row in rows:
        t, z, y, x = (int(table[k][row]) for k in ("time", "z", "y", "x"))
        h, w = int(table["height"][row]), int(table["width"][row])
        stack = read_stack(volumes[t], z, encoder.slices, encoder.low, encoder.high)
        out.append(stack[y : y + h, x : x + w])
    return np.stack(out)


def open_volumes(paths: list) -> list:
    volumes = [io.open_volume(Path(p), "volume") for p in paths]
    shapes = {tuple(v.shape) for v in volumes}
    if len(shapes) > 1:
        raise SrjaxError(f"the volumes have different shapes {sorted(shapes)}; a time series needs one shape")
    return volumes
