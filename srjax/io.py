"""Volumes in and label volumes out.

A volume is anything indexable like a [N, H, W] array; ``open_volume`` memory-maps
``.npy`` and TIFF files so slices are read on demand. Outputs are written under a
temporary name and renamed into place, so a file that exists is complete.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from srjax.errors import SrjaxError

SUFFIXES = (".npy", ".tif", ".tiff")


def open_volume(path: str | Path, name: str = "volume"):
    path = Path(path)
    if not path.exists():
        raise SrjaxError(f"{name} {path} does not exist; pass a .npy file or a .tif/.tiff stack")
    if path.suffix.lower() not in SUFFIXES:
        raise SrjaxError(f"{name} {path} has an unsupported format; pass a .npy file or a .tif/.tiff stack")
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, mmap_mode="r")
        else:
            import tifffile

            try:
                array = tifffile.memmap(path, mode="r")
            except ValueError:  # compressed or tiled pages cannot be memory-mapped
                array = tifffile.imread(path)
    except (OSError, ValueError) as err:
        raise SrjaxError(f"{name} {path} cannot be read: {err}") from None
    check_volume(array, f"{name} {path}")
    return array


def check_volume(array, name: str) -> None:
    """Rank and dtype checks that need no voxel reads."""
    if array.ndim != 3:
        raise SrjaxError(f"{name} has shape {tuple(array.shape)}; srjax needs a 3-D volume [slices, height, width]")
    kind = np.dtype(array.dtype).kind
    if kind not in "uif":
        raise SrjaxError(f"{name} has dtype {array.dtype}; srjax needs integer or floating-point voxels")
    if min(array.shape) < 1:
        raise SrjaxError(f"{name} has shape {tuple(array.shape)} with an empty axis")


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def npy_writer(path: str | Path, shape, dtype):
    """A writable memory-mapped ``.npy`` that appears at ``path`` only once complete."""
    with atomic_path(path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        yield array
        array.flush()
        del array
