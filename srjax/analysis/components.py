"""3-D connected components of one class of a label volume, slab by slab.

The volume is never held: each slab of whole slices is read, its mask cut into runs,
labelled through them and reduced to per-component sums (``runs``, ``moments``);
components of neighbouring slabs that touch across the face between them are joined
as a graph of touching pairs solved by ``scipy.sparse.csgraph`` (the way dask-image
merges blocks), one face at a time.
A component is numbered when no later slab can reach it, and its sums handed on then,
so a volume with millions of components never holds them all. On a volume that fits in
memory the components are ``scipy.ndimage.label``'s, voxel for voxel, up to their
numbering.

The instance images are painted from each slab's runs, kept on disk from the labelling
pass, so a volume is labelled once: labelling is most of the work.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import multiprocessing
import os
import uuid
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
SLAB_VOXELS = 1 << 24


def structure(connectivity: int) -> np.ndarray:
    if connectivity not in CONNECTIVITY:
        raise SrjaxError(f"connectivity {connectivity} is not one of 6, 18, 26 (face, edge, corner neighbours)")
    return ndimage.generate_binary_structure(3, CONNECTIVITY[connectivity])


def slab_depth(shape, voxels: int = SLAB_VOXELS) -> int:
    return max(1, min(shape[0], voxels // (shape[1] * shape[2])))


def slabs(shape, depth: int) -> list[tuple[int, int]]:
    return [(z, min(z + depth, shape[0])) for z in range(0, shape[0], depth)]


def face_pairs(upper: runs.Runs, upper_ids: np.ndarray, lower: runs.Runs, lower_ids: np.ndarray,
               connectivity: int) -> np.ndarray:
    """Pairs (upper id, lower id) of labels that touch across the face between two planes.

    ``upper`` holds the runs of the last plane of a slab, ``lower`` those of the first of
    the next, each with its runs' ids; a voxel touches the voxels of the next plane that the
    connectivity's structure reaches (only the one straight below for 6; its edge
    neighbours too for 18; all nine for 26).
    """
    reach = structure(connectivity)[2]
    found = [runs.touching(upper, upper.row + dy, lower, int(reach[dy + 1, 0])) for dy in (-1, 0, 1)
             if reach[dy + 1].any()]
    upper_index, lower_index = (np.concatenate(side) for side in zip(*found))
    span = np.int64(lower_ids.max(initial=0)) + 1
    keys = np.unique(upper_ids[upper_index] * span + lower_ids[lower_index])
    return np.stack(np.divmod(keys, span), axis=1)


@dataclass(frozen=True)
class Components:
    """The components of one class: ``count`` of them, numbered 1..count in the order they
    close (see ``_Merge``); ``sums`` holds each one's ``moments.Sums`` (row i: id i + 1)
    unless they were handed on as they closed; ``voxels`` counts the selected voxels.

    ``first_id[s]`` is the tentative id of slab ``s``'s local label 1 and ``final`` maps a
    tentative id to the component's id, so a slab's local labels (the same each time they
    are computed) turn into final ids without another pass over its neighbours.
    ``run_files`` (one per slab) hold the slabs' runs when they were kept for painting.
    """

    shape: tuple
    selected: tuple
    connectivity: int
    slabs: list
    first_id: np.ndarray
    final: np.ndarray
    count: int
    voxels: int
    sums: moments.Sums | None = None
    run_files: tuple | None = None

    def lookup(self, index: int, keep: np.ndarray | None = None) -> np.ndarray:
        """Component id of each local id of slab ``index`` (0 for 0, and for a component
        ``keep``, a mask over ids 1..count, leaves out)."""
        final = self.final[self.first_id[index] : self.first_id[index + 1]]
        if keep is not None:
            final = np.where(keep[final - 1], final, 0)
        return np.concatenate([[0], final]).astype(instance_dtype(self.count))


def instance_dtype(count: int) -> np.dtype:
    return np.dtype(np.uint32) if count < 2**32 else np.dtype(np.uint64)


def volume_shape(labels) -> tuple:
    return tuple(_source(labels).shape)


def values_present(labels) -> list[int]:
    """Every value of a label volume (a pass over it: for messages, not for the main work)."""
    source = _source(labels)
    found = set()
    for z0, z1 in slabs(source.shape, slab_depth(source.shape)):
        found.update(np.unique(source.read(z0, z1)).tolist())
    return sorted(found)


def mask_of(labels: np.ndarray, selected: tuple) -> np.ndarray:
    return np.isin(labels, selected) if len(selected) > 1 else labels == selected[0]


@dataclass(frozen=True)
class SlabPart:
    """What the merge needs of one slab: its components' sums and the runs of its first and
    last planes with their local ids."""

    count: int
    voxels: int
    sums: moments.Sums
    first_plane: tuple[runs.Runs, np.ndarray]
    last_plane: tuple[runs.Runs, np.ndarray]


def slab_part(slab: np.ndarray, z0: int, selected: tuple, connectivity: int,
              keep_runs: Path | None = None) -> SlabPart:
    """The slab's ``SlabPart``; with ``keep_runs``, its runs and their local ids saved there too."""
    found = runs.find_runs(mask_of(slab, selected))
    count, run_ids = runs.label(found, structure(connectivity))
    if keep_runs is not None:
        runs.save(keep_runs, found, run_ids)
    return SlabPart(count, int((found.stop - found.start).sum()), runs.sums(found, run_ids, count, z0),
                    runs.plane(found, run_ids, 0), runs.plane(found, run_ids, len(slab) - 1))


def runs_file(directory: Path, selection_index: int, slab_index: int) -> Path:
    return directory / f"selection{selection_index}-slab{slab_index}.npz"


def painted(run_file: Path, lookup: np.ndarray) -> Iterator[np.ndarray]:
    """A slab as component ids, a plane [1, H, W] at a time, from its kept runs and
    ``Components.lookup``."""
    found, run_ids = runs.load(run_file)
    values = lookup[run_ids]
    for z in range(found.shape[0]):
        yield runs.paint(*runs.plane(found, values, z))


_opened: dict = {}  # this process's label sources and instance writers, each opened once


def _source(labels) -> Source:
    if isinstance(labels, (str, Path)):
        if labels not in _opened:
            _opened[labels] = open_source(labels, "labels")
        return _opened[labels]
    return as_source(labels)


def _parts_task(z0: int, z1: int, labels, selections: tuple, connectivity: int,
                run_files: list | None) -> list[SlabPart]:
    slab = np.asarray(_source(labels).read(z0, z1))
    return [slab_part(slab, z0, selected, connectivity, run_files and run_files[i])
            for i, selected in enumerate(selections)]


@dataclass(frozen=True)
class Target:
    """An instance image the main process created, for a worker to write its slabs into
    (one slice per chunk, so no two slabs share a chunk)."""

    path: Path
    final: Path
    shape: tuple
    dtype: np.dtype
    token: str  # which writer of this process's cache is this image's


def _writer(target: Target) -> io.OmeZarrWriter:
    key = ("writer", target.token)
    if key not in _opened:
        _opened[key] = io.OmeZarrWriter(target.path, target.shape, target.dtype, chunks=io.LABEL_CHUNKS,
                                        compressor=io.INSTANCE_COMPRESSOR, final=target.final, create=False)
    return _opened[key]


def _instances_task(z0: int, z1: int, run_files: list[Path], lookups: list, targets: list[Target]) -> None:
    """Paint slab [z0, z1) of each selection's instance image from its saved runs, in this
    process: the slabs do not travel back to the main one. A plane at a time: the writer
    holds a few planes in flight, never a slab of each image."""
    for run_file, lookup, target in zip(run_files, lookups, targets):
        for z, plane in enumerate(painted(run_file, lookup), start=z0):
            _writer(target)[z : z + 1] = plane
    for target in targets:
        _writer(target).wait()


def _keep_freed_memory() -> None:
    """Have glibc's malloc keep freed blocks for reuse instead of returning them to the system.

    A slab's arrays and TensorStore's chunk buffers (tens of megabytes each) are freed
    and allocated again for every slab; returned to the system, each comes back page by
    page, and those page faults took about a third of a worker's CPU time. A worker's
    footprint is one slab's working set, so keeping it costs little. No-op off glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    mallopt(m_mmap_threshold, 1 << 26)  # blocks up to 64 MB come from (and go back to) the heap
    mallopt(m_trim_threshold, 1 << 30)


class Workers:
    """Processes that work on slabs of volumes named by path, each opening a volume once.

    A spawned pool (not forked: the parent may hold threads, as JAX's); with one worker,
    or for a volume in memory, the work is done in this process."""

    def __init__(self, count: int | None = None):
        self.count = count or len(os.sched_getaffinity(0))
        self.pool = None
        if self.count > 1:
            self.pool = ProcessPoolExecutor(self.count, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_keep_freed_memory)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def map(self, task, bounds, args: list, desc: str, progress: bool, parallel: bool = True) -> Iterator:
        """``task(z0, z1, *args[i])`` for each slab i of ``bounds``, in order, with a progress
        bar; in the workers unless not ``parallel`` (the arguments cannot travel)."""
        slices = bar(total=bounds[-1][1] if bounds else 0, desc=desc, unit="slice", disable=not progress)
        parallel = parallel and self.pool is not None and len(bounds) > 1
        pending = deque()
        for index, (z0, z1) in enumerate(bounds):
            check_interrupt()
            if not parallel:
                yield task(z0, z1, *args[index])
                slices.update(z1 - z0)
                continue
            pending.append((z1 - z0, self.pool.submit(task, z0, z1, *args[index])))
            while len(pending) > 3 * self.count:  # a bounded window: results wait in memory
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


class _Merge:
    """One selection's components, slab after slab. A component no later slab can reach
    (none of its voxels in the newest slab's last plane) is closed: it takes the next ids
    (several closing at once: in raster order of their first voxels) and its sums go to
    ``on_close(first id, sums)``. Only the open ones, on that plane, are held and joined
    with the next slab's; so the merge holds a parent id per tentative component (a
    slab's), never a slab's planes or every component's sums.

    Tentative ids count a slab's components from 0, slab after slab, in scipy's raster
    order inside each; a group's root is its lowest, the one holding its first voxel.
    """

    def __init__(self, connectivity: int, on_close):
        self.connectivity, self.on_close = connectivity, on_close
        self.first_id, self.voxels, self.next_id = [0], 0, 1
        self.parents, self.renamed_from, self.renamed_to = [], [], []  # a root that joins a lower one is renamed
        self.closed_roots = []  # in id order
        self.open_roots, self.open_sums = np.zeros(0, np.int64), moments.empty()
        self.open_of_local, self.last_plane = None, None  # the newest slab's local ids -> their open group

    def _close(self, roots: np.ndarray, sums: moments.Sums) -> None:
        order = np.argsort(roots)
        self.closed_roots.append(roots[order])
        self.on_close(self.next_id, sums.take(order))
        self.next_id += len(roots)

    def add(self, part: SlabPart) -> None:
        held, new = len(self.open_roots), part.count
        if self.last_plane is None:
            pairs = np.zeros((0, 2), np.int64)
        else:
            touching = face_pairs(*self.last_plane, *part.first_plane, self.connectivity)
            pairs = np.stack([self.open_of_local[touching[:, 0]], held + touching[:, 1] - 1], axis=1)
        nodes = held + new  # the open groups, then this slab's components
        graph = sparse.coo_matrix((np.ones(len(pairs), bool), (pairs[:, 0], pairs[:, 1])), shape=(nodes, nodes))
        groups, group = csgraph.connected_components(graph, directed=False)
        node_roots = np.concatenate([self.open_roots, self.first_id[-1] + np.arange(new)])
        roots = np.full(groups, np.iinfo(np.int64).max)
        np.minimum.at(roots, group, node_roots)
        sums = moments.combine([(moments.concatenate([self.open_sums, part.sums]), group)], groups)
        self.parents.append(roots[group[held:]])
        renamed = roots[group[:held]] != self.open_roots
        self.renamed_from.append(self.open_roots[renamed])
        self.renamed_to.append(roots[group[:held]][renamed])
        on_last = np.zeros(new + 1, bool)
        on_last[part.last_plane[1]] = True
        is_open = np.zeros(groups, bool)
        is_open[group[held + np.flatnonzero(on_last[1:])]] = True
        self._close(roots[~is_open], sums.take(~is_open))
        self.open_roots, self.open_sums = roots[is_open], sums.take(is_open)
        self.open_of_local = np.concatenate([[-1], (np.cumsum(is_open) - 1)[group[held:]]])
        self.last_plane = part.last_plane
        self.first_id.append(self.first_id[-1] + new)
        self.voxels += part.voxels

    def finish(self, shape, selected: tuple, bounds) -> Components:
        self._close(self.open_roots, self.open_sums)
        parent = np.concatenate(self.parents) if self.parents else np.zeros(0, np.int64)
        parent[np.concatenate(self.renamed_from or [parent[:0]])] = np.concatenate(self.renamed_to or [parent[:0]])
        while len(parent) and not np.array_equal(lifted := parent[parent], parent):
            parent = lifted
        roots = np.concatenate(self.closed_roots)
        id_of_root = np.zeros(len(parent), np.int64)
        id_of_root[roots] = np.arange(1, len(roots) + 1)
        return Components(tuple(shape), selected, self.connectivity, bounds, np.asarray(self.first_id),
                          id_of_root[parent], len(roots), self.voxels)


def selection(selected) -> tuple:
    return tuple(int(v) for v in np.atleast_1d(selected))


def label_each(labels, selections, connectivity: int = 6, slab: int | None = None, progress: bool = False,
               workers: Workers | None = None, on_close=None, keep_runs: Path | None = None) -> list[Components]:
    """``label_components`` of each selection of ``selections``, reading the volume once.
    With ``on_close``, each selection's sums go to ``on_close(index of the selection, first
    id, sums)`` as its components close (ids first id, first id + 1, ...; at least once per
    selection) instead of into ``Components.sums``. With ``keep_runs`` (a directory), the
    slabs' runs are kept there for ``write_instances``."""
    shape = _source(labels).shape
    selections = tuple(selection(s) for s in selections)
    structure(connectivity)
    bounds = slabs(shape, slab or slab_depth(shape))
    collected = [[] for _ in selections]

    def closed(index: int, first: int, sums: moments.Sums) -> None:
        if on_close is None:
            collected[index].append(sums)
        else:
            on_close(index, first, sums)

    files = [tuple(runs_file(keep_runs, i, s) for s in range(len(bounds))) if keep_runs else None
             for i in range(len(selections))]
    tasks = [(labels, selections, connectivity, keep_runs and [f[s] for f in files]) for s in range(len(bounds))]
    merges = [_Merge(connectivity, functools.partial(closed, index)) for index in range(len(selections))]
    for parts in (workers or Workers(1)).map(_parts_task, bounds, tasks, "components", progress,
                                             parallel=isinstance(labels, (str, Path))):
        for merge, part in zip(merges, parts):
            merge.add(part)
    found = [dataclasses.replace(merge.finish(shape, selected, bounds), run_files=f)
             for merge, selected, f in zip(merges, selections, files)]
    if on_close is None:
        found = [dataclasses.replace(c, sums=moments.concatenate(sums)) for c, sums in zip(found, collected)]
    return found


def label_components(labels, selected, connectivity: int = 6, slab: int | None = None, progress: bool = False,
                     workers: Workers | None = None, keep_runs: Path | None = None) -> Components:
    """The connected components of the voxels whose value is in ``selected`` (a class id or
    several), as ``Components`` with their sums; ``labels`` is a path (then ``workers``
    share the slabs), a ``Source``, a TensorStore or an array [z, y, x]."""
    return label_each(labels, [selected], connectivity, slab, progress, workers, keep_runs=keep_runs)[0]


def write_instances(found: list[Components], paths: list, voxel_size=None, unit: str | None = None,
                    progress: bool = False, keep: list | None = None, workers: Workers | None = None) -> None:
    """Each of ``found`` (components of one volume, labelled with their runs kept) as an
    OME-Zarr instance-label image at the path of ``paths`` (0: not the class, or a
    component that the mask in ``keep`` leaves out), painted from the kept runs."""
    if any(c.run_files is None for c in found):
        raise ValueError("write_instances paints from kept runs: label with label_each(..., keep_runs=DIR)")
    keep = keep or [None] * len(found)
    bounds = found[0].slabs
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(io.ome_zarr_writer(
            path, c.shape, instance_dtype(c.count), chunks=io.LABEL_CHUNKS, compressor=io.INSTANCE_COMPRESSOR,
            name="instances", voxel_size=voxel_size, unit=unit,
            attributes={"classes": list(c.selected), "connectivity": c.connectivity, "count": c.count}))
            for c, path in zip(found, paths)]
        targets = [Target(w.path, w.final, w.shape, instance_dtype(c.count), uuid.uuid4().hex)
                   for w, c in zip(writers, found)]
        stack.callback(lambda: [_opened.pop(("writer", t.token), None) for t in targets])
        tasks = [([c.run_files[index] for c in found], [c.lookup(index, k) for c, k in zip(found, keep)], targets)
                 for index in range(len(bounds))]
        for _ in (workers or Workers(1)).map(_instances_task, bounds, tasks, "instances", progress):
            pass
