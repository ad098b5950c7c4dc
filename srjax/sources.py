"""Sources a scan arrives in, and their import into a chunked, compressed OME-Zarr.

A source reads slabs ``[start:stop]`` of a [slices, height, width] volume without
loading the rest: TIFF stacks (a directory of one file per slice, or one
multi-page file), HDF5 datasets (DXchange ``/exchange/data`` by default), ``.npy``
files, and any Zarr/N5/OME-Zarr store. The voxel size is carried over when the
source records one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from srjax import io
from srjax.errors import SrjaxError
from srjax.progress import bar as progress_bar

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".cxi")
TIFF_SUFFIXES = (".tif", ".tiff")
DXCHANGE_DATASET = "/exchange/data"
SLAB_BYTES = 64 << 20
# Where DXchange files written by common beamline software record the pixel size.
DXCHANGE_PIXEL_SIZE = (
    "/measurement/instrument/detection_system/objective/resolution",
    "/measurement/instrument/detector/pixel_size_x",
)


@dataclasses.dataclass
class Source:
    """A readable volume: ``read(start, stop)`` returns slices [start, stop) as an array."""

    name: str
    shape: tuple
    dtype: np.dtype
    read: Callable[[int, int], np.ndarray]
    voxel_size: list | None = None
    unit: str | None = None
    attributes: dict = dataclasses.field(default_factory=dict)


def is_native(path: str | Path) -> bool:
    """Whether srjax reads ``path`` directly through TensorStore (no import needed)."""
    return io.store_kind(io.local_path(path)) is not None


def open_source(path: str | Path, name: str = "volume", dataset: str | None = None,
                fill_missing: bool = False) -> Source:
    path = io.local_path(path)
    label = f"{name} {path}"
    if not path.exists():
        raise SrjaxError(f"{label} does not exist")
    suffix = path.suffix.lower()
    if io.store_kind(path) is not None:
        source = from_store(io.open_volume(path, name, cache_bytes=0, fill_missing=fill_missing), label,
                            io.voxel_size(path))
    elif path.is_dir():
        source = _tiff_directory(path, label)
    elif suffix in TIFF_SUFFIXES:
        source = _tiff_file(path, label)
    elif suffix in HDF5_SUFFIXES:
        source = _hdf5(path, label, dataset or DXCHANGE_DATASET)
    elif suffix == ".npy":
        source = _npy(path, label)
    else:
        raise SrjaxError(
            f"{label} has an unsupported format; pass a Zarr/N5/OME-Zarr store, a TIFF file or directory, "
            f"an HDF5 file ({', '.join(HDF5_SUFFIXES)}) or a .npy file"
        )
    io.check_layout(source.shape, source.dtype, label)
    source.attributes = {"source": str(path), **source.attributes}
    return source


def from_store(volume, label: str, size: tuple | None = None) -> Source:
    """A TensorStore (or in-memory array) as a source."""
    volume = io.as_volume(volume)
    return Source(label, tuple(volume.shape), io.numpy_dtype(volume),
                  lambda a, b: io.read(volume[a:b], label), *(size or (None, None)))


def _npy(path: Path, label: str) -> Source:
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise SrjaxError(f"{label} cannot be read as .npy: {err}") from None
    return Source(label, array.shape, array.dtype, lambda a, b: np.array(array[a:b]))


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _tiff_directory(path: Path, label: str) -> Source:
    import tifffile

    files = sorted((p for p in path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES), key=_natural_key)
    if not files:
        raise SrjaxError(f"{label} is a directory with no .tif/.tiff files and is not a Zarr/N5 store")
    try:
        with tifffile.TiffFile(files[0]) as first:
            page = first.pages[0]
            shape, dtype = (len(files), *page.shape), page.dtype
            size = _tiff_voxel_size(first)
    except (OSError, ValueError, tifffile.TiffFileError) as err:
        raise SrjaxError(f"{label}: {files[0].name} cannot be read as TIFF: {err}") from None
    if len(shape) != 3:
        raise SrjaxError(f"{label}: slices of shape {shape[1:]} are not 2-D greyscale images")

    def read(start, stop):
        slab = np.empty((stop - start, *shape[1:]), dtype)
        for i, file in enumerate(files[start:stop]):
            try:
                slab[i] = tifffile.imread(file)
            except (OSError, ValueError, tifffile.TiffFileError) as err:
                raise SrjaxError(f"{label}: {file.name} cannot be read: {err}") from None
        return slab

    return Source(label, shape, dtype, read, *(size or (None, None)))


def _tiff_file(path: Path, label: str) -> Source:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
        series = tif.series[0]
        shape, dtype = tuple(series.shape), series.dtype
        size = _tiff_voxel_size(tif)
    except (OSError, ValueError, tifffile.TiffFileError) as err:
        raise SrjaxError(f"{label} cannot be read as TIFF: {err}") from None
    if len(shape) == 3 and len(tif.pages) != shape[0]:
        raise SrjaxError(f"{label} does not hold one page per slice; save it as a multi-page TIFF of 2-D slices")

    def read(start, stop):
        try:
            return tif.asarray(key=range(start, stop)).reshape(stop - start, *shape[1:])
        except (OSError, ValueError, tifffile.TiffFileError) as err:
            raise SrjaxError(f"{label}: pages {start}-{stop - 1} cannot be read: {err}") from None

    return Source(label, shape, dtype, read, *(size or (None, None)))


def _tiff_voxel_size(tif) -> tuple[list, str | None] | None:
    """Voxel size from ImageJ metadata (slice spacing and XY resolution), if present."""
    meta = tif.imagej_metadata or {}
    tags = tif.pages[0].tags
    if "XResolution" not in tags or not (meta.get("spacing") or meta.get("unit")):
        return None

    def size(tag):
        numerator, denominator = tags[tag].value
        return denominator / numerator if numerator else 1.0

    # Without a slice spacing ImageJ takes one unit, as it shows the stack itself.
    return [float(meta.get("spacing", 1.0)), size("YResolution"), size("XResolution")], io.ome_unit(meta.get("unit"), strict=False)


def _hdf5(path: Path, label: str, dataset: str) -> Source:
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise SrjaxError(f"{label} cannot be opened as HDF5: {err}") from None
    if dataset not in file or not isinstance(file[dataset], h5py.Dataset):
        found = []
        file.visititems(lambda key, obj: found.append("/" + key) if isinstance(obj, h5py.Dataset) else None)
        raise SrjaxError(
            f"{label} has no dataset {dataset}; pass --dataset with one of: {', '.join(found[:10]) or 'none found'}"
        )
    data = file[dataset]
    attributes = {key: _plain(value) for key, value in data.attrs.items()}
    attributes = {"dataset": dataset, **{k: v for k, v in attributes.items() if v is not None}}
    size = _hdf5_voxel_size(file, data)

    def read(start, stop):
        try:
            return data[start:stop]
        except OSError as err:
            raise SrjaxError(f"{label}: slices {start}-{stop - 1} of {dataset} cannot be read: {err}") from None

    return Source(label, data.shape, data.dtype, read, *(size or (None, None)), attributes)


def _hdf5_voxel_size(file, data) -> tuple[list, str | None] | None:
    for key in ("voxel_size", "pixel_size", "resolution"):
        if key in data.attrs:
            value = np.atleast_1d(np.asarray(data.attrs[key], np.float64))
            unit = _plain(data.attrs.get("units"))
            return ([float(v) for v in value] if value.size == 3 else [float(value[0])] * 3), unit
    for key in DXCHANGE_PIXEL_SIZE:
        if key in file:
            value = float(np.asarray(file[key][()]).ravel()[0])
            return [value] * 3, _plain(file[key].attrs.get("units"))
    return None


def _plain(value):
    """An HDF5 attribute as a JSON-friendly value, or None when it has no simple form."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.size <= 16 and value.dtype.kind in "iuf":
        return value.tolist()
    return None


def slab_depth(shape, dtype, budget: int = SLAB_BYTES) -> int:
    """Slices per slab so one slab stays near ``budget`` bytes."""
    return max(1, budget // (int(np.prod(shape[1:])) * np.dtype(dtype).itemsize))


def voxel_size_and_unit(source: Source, voxel_size=None, unit: str | None = None):
    """The voxel size and unit outputs record: given, else the source's. A size given
    without a unit is in micrometers; a source without a size records none (1, unitless)."""
    if voxel_size is not None:
        return list(voxel_size), io.ome_unit(unit) or "micrometer"
    if source.voxel_size is not None:
        return source.voxel_size, io.ome_unit(unit) or io.ome_unit(source.unit, strict=False)
    return None, io.ome_unit(unit)


def import_volume(source: Source, out: str | Path, chunks=io.DEFAULT_CHUNKS, voxel_size=None,
                  unit: str | None = None, progress: bool = True) -> None:
    """Stream ``source`` into an OME-Zarr image at ``out``, slab by slab."""
    depth = slab_depth(source.shape, source.dtype)
    size, unit = voxel_size_and_unit(source, voxel_size, unit)
    with io.ome_zarr_writer(out, source.shape, source.dtype, chunks=chunks, name=Path(out).stem,
                            voxel_size=size, unit=unit, attributes=source.attributes) as writer:
        for start in progress_bar(range(0, source.shape[0], depth), desc="import", unit="slab", disable=not progress):
            stop = min(start + depth, source.shape[0])
            writer[start:stop] = np.asarray(source.read(start, stop))
