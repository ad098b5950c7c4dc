"""3-D connected components of one class of a label volume, slab by slab.

The volume is never held: each slab of whole slices is read, labelled with
``scipy.ndimage.label`` and reduced to per-component sums (``moments``); components of
neighbouring slabs that touch across the face between them are joined afterwards, as a
graph of touching pairs solved by ``scipy.sparse.csgraph``. Whole-slice slabs keep the
raster order scipy numbers by: a component's id is the rank of its first voxel, so on a
volume that fits in memory the ids are scipy's own, voxel for voxel.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from srjax import io
from srjax.analysis import moments
from srjax.errors import SrjaxError
from srjax.outputs import check_interrupt
from srjax.progress import bar
from srjax.sources import Source, from_store

CONNECTIVITY = {6: 1, 18: 2, 26: 3}  # neighbours of a voxel -> ndimage.generate_binary_structure's rank
# Voxels per slab: its int32 labels, the mask and the per-voxel coordinates of the moments stay
# well under a gigabyte, and a slab is at least one slice whatever the slice size.
SLAB_VOXELS = 1 << 24


def structure(connectivity: int) -> np.ndarray:
    if connectivity not in CONNECTIVITY:
        raise SrjaxError(f"connectivity {connectivity} is not one of 6, 18, 26 (face, edge, corner neighbours)")
    return ndimage.generate_binary_structure(3, CONNECTIVITY[connectivity])


def slab_depth(shape, voxels: int = SLAB_VOXELS) -> int:
    return max(1, min(shape[0], voxels // (shape[1] * shape[2])))


def slabs(shape, depth: int) -> list[tuple[int, int]]:
    return [(z, min(z + depth, shape[0])) for z in range(0, shape[0], depth)]


def face_pairs(upper: np.ndarray, lower: np.ndarray, connectivity: int) -> np.ndarray:
    """Pairs (upper id, lower id) of labels that touch across the face between two planes.

    ``upper`` is the last plane of a slab, ``lower`` the first of the next; a voxel touches
    the voxels of the next plane that the connectivity's structure reaches (only the one
    straight below for 6; its edge neighbours too for 18; all nine for 26).
    """
    reach = structure(connectivity)[2]
    height, width = upper.shape
    pairs = []
    for dy, dx in np.argwhere(reach) - 1:
        a = upper[max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
        b = lower[max(0, dy) : height - max(0, -dy), max(0, dx) : width - max(0, -dx)]
        both = (a > 0) & (b > 0)
        pairs.append(np.stack([a[both], b[both]], axis=1))
    pairs = np.concatenate(pairs)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


@dataclass(frozen=True)
class Components:
    """The components of one class: ``count`` of them, numbered 1..count in raster order
    of their first voxel; ``sums`` holds each one's ``moments.Sums`` (row i: id i + 1);
    ``values`` counts the voxels of every value of the volume, selected or not.

    ``first_id[s]`` is the tentative id of slab ``s``'s local label 1 and ``final`` maps a
    tentative id to the component's id, so a slab's ``scipy.ndimage.label`` (the same each
    time) turns into final ids without another pass over the neighbours.
    """

    shape: tuple
    selected: tuple
    connectivity: int
    slabs: list
    first_id: np.ndarray
    final: np.ndarray
    count: int
    sums: moments.Sums
    values: dict

    def slab_ids(self, index: int, local: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
        """The final ids of slab ``index``'s local labels (0 stays 0); a component ``keep``
        (a mask over ids 1..count) leaves out becomes 0 as well."""
        final = self.final[self.first_id[index] : self.first_id[index + 1]]
        if keep is not None:
            final = np.where(keep[final - 1], final, 0)
        return np.concatenate([[0], final])[local].astype(instance_dtype(self.count), copy=False)


def instance_dtype(count: int) -> np.dtype:
    return np.dtype(np.uint32) if count < 2**32 else np.dtype(np.uint64)


def value_counts(labels: np.ndarray) -> dict[int, int]:
    if labels.dtype.itemsize <= 2 and labels.dtype.kind == "u":
        counts = np.bincount(labels.reshape(-1))
        present = np.flatnonzero(counts)
        return dict(zip(present.tolist(), counts[present].tolist()))
    values, counts = np.unique(labels, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def _label_slab(labels: np.ndarray, selected: tuple, connectivity: int) -> tuple[np.ndarray, int]:
    mask = np.isin(labels, selected) if len(selected) > 1 else labels == selected[0]
    local, count = ndimage.label(mask, structure(connectivity), output=np.int32)
    return local, count


def read_slabs(source: Source, bounds: list[tuple[int, int]]) -> Iterator[np.ndarray]:
    """Each slab in turn, the next one read while the caller works on this one."""
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(source.read, *bounds[0]) if bounds else None
        for index in range(len(bounds)):
            current = pending.result()
            if index + 1 < len(bounds):
                pending = reader.submit(source.read, *bounds[index + 1])
            yield np.asarray(current)


def labelled_slabs(source: Source, selected: tuple, connectivity: int, bounds, desc: str,
                   progress: bool) -> Iterator[tuple[int, np.ndarray, np.ndarray, int]]:
    """(slab index, its labels, its local component labels, how many) for each slab of ``bounds``."""
    slices = bar(total=source.shape[0], desc=desc, unit="slice", disable=not progress)
    for index, slab in enumerate(read_slabs(source, bounds)):
        check_interrupt()
        local, count = _label_slab(slab, selected, connectivity)
        yield index, slab, local, count
        slices.update(len(slab))
    slices.close()


def as_source(labels) -> Source:
    """``labels`` (a ``Source``, a TensorStore or an in-memory array) as a ``Source``."""
    return labels if isinstance(labels, Source) else from_store(labels, "labels")


def label_components(labels, selected, connectivity: int = 6, slab: int | None = None,
                     progress: bool = False) -> Components:
    """The connected components of the voxels whose value is in ``selected`` (a class id or
    several), as ``Components``; ``labels`` is a ``Source``, TensorStore or array [z, y, x]."""
    source = as_source(labels)
    selected = tuple(int(v) for v in np.atleast_1d(selected))
    structure(connectivity)
    bounds = slabs(source.shape, slab or slab_depth(source.shape))
    parts, first_id, pairs, last_plane, values = [], [0], [], None, Counter()
    for index, slab, local, count in labelled_slabs(source, selected, connectivity, bounds, "components", progress):
        z0 = bounds[index][0]
        values.update(value_counts(slab))
        parts.append(moments.slab_sums(local, count, z0))
        if last_plane is not None:
            touching = face_pairs(last_plane, local[0], connectivity)
            pairs.append(touching + [first_id[-2] - 1, first_id[-1] - 1])
        last_plane = local[-1]
        first_id.append(first_id[-1] + count)
    tentative = first_id[-1]
    edges = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    graph = sparse.coo_matrix((np.ones(len(edges), bool), (edges[:, 0], edges[:, 1])), shape=(tentative, tentative))
    count, group = csgraph.connected_components(graph, directed=False)
    # A group's first voxel is in its lowest tentative id (slabs in order, scipy's raster order
    # inside each): ranking groups by it numbers them as scipy.ndimage.label would.
    _, lowest = np.unique(group, return_index=True)
    rank = np.empty(count, np.int64)
    rank[np.argsort(lowest)] = np.arange(1, count + 1)
    final = rank[group]
    sums = moments.combine(moments.concatenate(parts), final - 1, count)
    return Components(tuple(source.shape), selected, connectivity, bounds, np.asarray(first_id), final, count, sums,
                      dict(sorted(values.items())))


def write_instances(components: Components, labels, path, voxel_size=None, unit: str | None = None,
                    progress: bool = False, keep: np.ndarray | None = None) -> None:
    """The components as an OME-Zarr instance-label image at ``path`` (0: not the class, or
    a component ``keep`` leaves out)."""
    source = as_source(labels)
    dtype = instance_dtype(components.count)
    with io.ome_zarr_writer(path, components.shape, dtype, chunks=io.LABEL_CHUNKS, name="instances",
                            voxel_size=voxel_size, unit=unit,
                            attributes={"classes": list(components.selected),
                                        "connectivity": components.connectivity,
                                        "count": components.count}) as writer:
        for index, _, local, _ in labelled_slabs(source, components.selected, components.connectivity,
                                              components.slabs, "instances", progress):
            z0, z1 = components.slabs[index]
            writer[z0:z1] = components.slab_ids(index, local, keep)
