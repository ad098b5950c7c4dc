"""3-D connected components of one class of a label volume, slab by slab.

The volume is never held: each slab of whole slices is read, labelled with
``scipy.ndimage.label`` and reduced to per-component sums through its runs (``runs``,
``moments``); components of neighbouring
slabs that touch across the face between them are joined afterwards, as a graph of
touching pairs solved by ``scipy.sparse.csgraph`` (the way dask-image merges blocks).
Whole-slice slabs keep the raster order scipy numbers by: a component's id is the rank
of its first voxel, so on a volume that fits in memory the ids are
``scipy.ndimage.label``'s own, voxel for voxel.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from srjax import io
from srjax.analysis import moments, runs
from srjax.errors import SrjaxError
from srjax.outputs import check_interrupt
from srjax.progress import bar
from srjax.sources import Source, from_store, open_source

CONNECTIVITY = {6: 1, 18: 2, 26: 3}  # neighbours of a voxel -> ndimage.generate_binary_structure's rank
# Voxels per slab: its mask, runs and painted ids stay well under a gigabyte, and a slab
# is at least one slice whatever the slice size.
SLAB_VOXELS = 1 << 25


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
    ``voxels`` counts the selected voxels.

    ``first_id[s]`` is the tentative id of slab ``s``'s local label 1 and ``final`` maps a
    tentative id to the component's id, so a slab's local labels (the same each time they
    are computed) turn into final ids without another pass over its neighbours.
    """

    shape: tuple
    selected: tuple
    connectivity: int
    slabs: list
    first_id: np.ndarray
    final: np.ndarray
    count: int
    sums: moments.Sums
    voxels: int

    def lookup(self, index: int, keep: np.ndarray | None = None) -> np.ndarray:
        """Component id of each local id of slab ``index`` (0 for 0, and for a component
        ``keep``, a mask over ids 1..count, leaves out)."""
        final = self.final[self.first_id[index] : self.first_id[index + 1]]
        if keep is not None:
            final = np.where(keep[final - 1], final, 0)
        return np.concatenate([[0], final]).astype(instance_dtype(self.count))

    def instances(self, index: int, slab: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
        """Slab ``index`` (its labels ``slab``) as component ids."""
        return self.lookup(index, keep)[label_slab(slab, self.selected, self.connectivity)[0]]


def instance_dtype(count: int) -> np.dtype:
    return np.dtype(np.uint32) if count < 2**32 else np.dtype(np.uint64)


def values_present(labels) -> list[int]:
    """Every value of a label volume (a pass over it: for messages, not for the main work)."""
    source = _source(labels)
    found = set()
    for z0, z1 in slabs(source.shape, slab_depth(source.shape)):
        found.update(np.unique(source.read(z0, z1)).tolist())
    return sorted(found)


def mask_of(labels: np.ndarray, selected: tuple) -> np.ndarray:
    return np.isin(labels, selected) if len(selected) > 1 else labels == selected[0]


def label_slab(labels: np.ndarray, selected: tuple, connectivity: int) -> tuple[np.ndarray, int]:
    """The slab's components (local ids 1..count, scipy's) and how many."""
    return ndimage.label(mask_of(labels, selected), structure(connectivity), output=np.int32)


@dataclass(frozen=True)
class SlabPart:
    """What the merge needs of one slab: its components' sums and its face planes' local ids."""

    count: int
    voxels: int
    sums: moments.Sums
    first_plane: np.ndarray
    last_plane: np.ndarray


def slab_part(slab: np.ndarray, z0: int, selected: tuple, connectivity: int) -> SlabPart:
    mask = mask_of(slab, selected)
    local, count = ndimage.label(mask, structure(connectivity), output=np.int32)
    found = runs.find_runs(mask)
    return SlabPart(count, int(np.count_nonzero(mask)), runs.sums(found, runs.run_labels(found, local), count, z0),
                    local[0].copy(), local[-1].copy())


_opened: dict = {}  # a worker process's sources, opened once


def _source(labels) -> Source:
    if isinstance(labels, (str, Path)):
        if labels not in _opened:
            _opened[labels] = open_source(labels, "labels")
        return _opened[labels]
    return as_source(labels)


def _part_task(labels, z0: int, z1: int, selected: tuple, connectivity: int) -> SlabPart:
    return slab_part(np.asarray(_source(labels).read(z0, z1)), z0, selected, connectivity)


def _instances_task(labels, z0: int, z1: int, selected: tuple, connectivity: int, lookup: np.ndarray) -> np.ndarray:
    local, _ = label_slab(np.asarray(_source(labels).read(z0, z1)), selected, connectivity)
    return lookup[local]


class Workers:
    """Processes that work on slabs of volumes named by path, each opening a volume once.

    A spawned pool (not forked: the parent may hold threads, as JAX's); with one worker,
    or for a volume in memory, the work is done in this process."""

    def __init__(self, count: int | None = None):
        self.count = count or len(os.sched_getaffinity(0))
        self.pool = None
        if self.count > 1:
            self.pool = ProcessPoolExecutor(self.count, mp_context=multiprocessing.get_context("spawn"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def map(self, task, labels, bounds, args: tuple, desc: str, progress: bool) -> Iterator:
        """``task(labels, z0, z1, *args[i])`` for each slab i of ``bounds``, in order, with a progress bar."""
        slices = bar(total=bounds[-1][1] if bounds else 0, desc=desc, unit="slice", disable=not progress)
        parallel = self.pool is not None and isinstance(labels, (str, Path)) and len(bounds) > 1
        pending = deque()
        for index, (z0, z1) in enumerate(bounds):
            check_interrupt()
            if not parallel:
                yield task(labels, z0, z1, *args[index])
                slices.update(z1 - z0)
                continue
            pending.append((z1 - z0, self.pool.submit(task, labels, z0, z1, *args[index])))
            while len(pending) > 2 * self.count:  # a bounded window: results wait in memory
                depth, future = pending.popleft()
                yield future.result()
                slices.update(depth)
        while pending:
            depth, future = pending.popleft()
            yield future.result()
            slices.update(depth)
        slices.close()


def as_source(labels) -> Source:
    """``labels`` (a ``Source``, a TensorStore or an in-memory array) as a ``Source``."""
    return labels if isinstance(labels, Source) else from_store(labels, "labels")


def label_components(labels, selected, connectivity: int = 6, slab: int | None = None, progress: bool = False,
                     workers: Workers | None = None) -> Components:
    """The connected components of the voxels whose value is in ``selected`` (a class id or
    several), as ``Components``; ``labels`` is a path (then ``workers`` share the slabs),
    a ``Source``, a TensorStore or an array [z, y, x]."""
    shape = _source(labels).shape
    selected = tuple(int(v) for v in np.atleast_1d(selected))
    structure(connectivity)
    bounds = slabs(shape, slab or slab_depth(shape))
    workers = workers or Workers(1)
    parts, first_id, pairs, last_plane = [], [0], [], None
    for part in workers.map(_part_task, labels, bounds, [(selected, connectivity)] * len(bounds), "components",
                            progress):
        parts.append(part)
        if last_plane is not None:
            touching = face_pairs(last_plane, part.first_plane, connectivity)
            pairs.append(touching + [first_id[-2] - 1, first_id[-1] - 1])
        last_plane = part.last_plane
        first_id.append(first_id[-1] + part.count)
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
    sums = moments.combine(moments.concatenate([p.sums for p in parts]), final - 1, count)
    return Components(tuple(shape), selected, connectivity, bounds, np.asarray(first_id), final, count, sums,
                      sum(p.voxels for p in parts))


def write_instances(components: Components, labels, path, voxel_size=None, unit: str | None = None,
                    progress: bool = False, keep: np.ndarray | None = None, workers: Workers | None = None) -> None:
    """The components as an OME-Zarr instance-label image at ``path`` (0: not the class, or
    a component ``keep`` leaves out)."""
    dtype = instance_dtype(components.count)
    lookups = [(components.selected, components.connectivity, components.lookup(index, keep))
               for index in range(len(components.slabs))]
    with io.ome_zarr_writer(path, components.shape, dtype, chunks=io.LABEL_CHUNKS, name="instances",
                            voxel_size=voxel_size, unit=unit,
                            attributes={"classes": list(components.selected),
                                        "connectivity": components.connectivity,
                                        "count": components.count}) as writer:
        results = (workers or Workers(1)).map(_instances_task, labels, components.slabs, lookups, "instances", progress)
        for (z0, z1), ids in zip(components.slabs, results):
            writer[z0:z1] = ids
