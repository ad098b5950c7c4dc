"""Sparse labels: a few slices or tiles labelled by a person, every other voxel ``UNLABELLED``.

``srjax sample --template`` writes a template to label; ``srjax run --labels`` reads the
result, checks it and keeps a copy in the run directory, and stages 2 and 3 learn the
labelled pixels (``SparseConfig``). For studies, an oracle stands in for the person:
``sparse.oracle_slices`` whole slices chosen by a sampler, labelled from the ground
truth, each true class given the run's class id that overlaps it most.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from srjax import io, metrics
from srjax.errors import SrjaxError

UNLABELLED = 255


def check_layout(source, shape, name: str) -> None:
    if tuple(source.shape) != tuple(shape):
        raise SrjaxError(f"{name} has shape {tuple(source.shape)} but the volume is {tuple(shape)}")
    if np.dtype(source.dtype).kind not in "ui":
        raise SrjaxError(f"{name} has dtype {np.dtype(source.dtype)}; labels must be integers "
                         f"(the run's class ids, {UNLABELLED} where unlabelled)")


def copy_labels(source, out: Path, classes: int, meta: dict) -> dict:
    """Check every value of ``source`` (a class id below ``classes`` or UNLABELLED) while
    copying it to ``out``; the labelled slices and pixel count."""
    slices, pixels = [], 0
    with io.ome_zarr_writer(out, source.shape, np.uint8, chunks=io.LABEL_CHUNKS, name="sparse labels",
                            voxel_size=meta["voxel_size"], unit=meta["unit"],
                            attributes={"unlabelled": UNLABELLED}) as writer:
        for z in range(source.shape[0]):
            plane = np.asarray(source.read(z, z + 1))
            wrong = (plane != UNLABELLED) & ((plane < 0) | (plane >= classes))
            if wrong.any():
                raise SrjaxError(f"{source.name} holds {int(plane[wrong][0])} at slice {z}: labels are the run's "
                                 f"class ids 0-{classes - 1}, or {UNLABELLED} where unlabelled")
            labelled = int(np.count_nonzero(plane != UNLABELLED))
            if labelled:
                slices.append(z)
                pixels += labelled
            writer[z : z + 1] = plane.astype(np.uint8)
    if not pixels:
        raise SrjaxError(f"{source.name} labels no pixel (every value is {UNLABELLED}); label some, or drop --labels")
    return {"source": source.name, "slices": slices, "pixels": pixels}


def truth_to_classes(truth, pseudo_labels, classes: int) -> np.ndarray:
    """For each true class, the run's class id that overlaps it most (over the whole volume)."""
    true_classes = max(int(io.read(truth[z], "truth").max()) for z in range(truth.shape[0])) + 1
    return metrics.confusion(pseudo_labels, truth, classes, true_classes).argmax(axis=0)


def oracle_slices(volume, count: int, sampler: str, seed: int) -> list[int]:
    """``count`` whole slices chosen by ``sampler`` on tile statistics (no net, no labels)."""
    from srjax.analysis import samplers
    from srjax.analysis.tiles import Grid, collect, intensity_range

    low, high = intensity_range(volume)
    population = collect([volume], Grid(tuple(volume.shape), 1, 0, 1), None, low=low, high=high, progress=False)
    return sorted(int(z) for z in samplers.sample(sampler, population.embeddings, count, seed))


def oracle_labels(volume, truth, pseudo_labels, classes: int, count: int, sampler: str, seed: int, out: Path,
                  meta: dict) -> dict:
    """Sparse labels of ``count`` slices chosen by ``sampler``, from the ground truth."""
    chosen = oracle_slices(volume, count, sampler, seed)
    mapping = truth_to_classes(truth, pseudo_labels, classes)
    with io.ome_zarr_writer(out, volume.shape, np.uint8, chunks=io.LABEL_CHUNKS, name="sparse labels",
                            voxel_size=meta["voxel_size"], unit=meta["unit"],
                            attributes={"unlabelled": UNLABELLED}) as writer:
        for z in range(volume.shape[0]):
            plane = np.full((1, *volume.shape[1:]), UNLABELLED, np.uint8)
            if z in chosen:
                plane[0] = mapping[io.read(truth[z], "truth").astype(np.int64)]
            writer[z : z + 1] = plane
    return {"source": f"oracle: {count} slices of the truth chosen by {sampler}", "slices": chosen,
            "pixels": count * int(np.prod(volume.shape[1:]))}
