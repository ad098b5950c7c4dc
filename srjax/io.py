"""Volumes through TensorStore: open Zarr v2/v3, N5 and OME-Zarr; write OME-Zarr.

Every volume srjax reads during a run is a read-only ``tensorstore.TensorStore``
(an in-memory array is wrapped by ``as_volume``), so slices are read on demand and
no whole volume is ever held. Every volume srjax writes is an OME-Zarr v0.4 image
(Zarr v2, blosc-compressed) with a pyramid of nearest-neighbour levels, built under
a temporary name and renamed into place only once complete.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import numpy as np
import tensorstore as ts

from srjax import __version__
from srjax.colours import class_colour
from srjax.errors import SrjaxError
from srjax import parallel
from srjax.outputs import absolute, atomic_path, deferred_interrupts, remove, replace, sibling

OME_VERSION = "0.4"
# One slice per chunk: a 2.5D stack reads exactly its S slices, a 512^2 crop at most 4 tiles of
# each. Smaller tiles cost more in per-file overhead than they save in bytes read.
DEFAULT_CHUNKS = (1, 512, 512)
# Label-type outputs are written a slab at a time and read one slice per crop: a file per slice
# (up to 2048^2) makes writing them several times faster, as creating files dominates.
LABEL_CHUNKS = (1, 2048, 2048)
# Confidence (a max class probability) is stored as uint8 steps of 1/255: a quarter of
# float32's size (2.8 GB, not 11, for a 1200x1520x1520 scan), and finer than any threshold needs.
CONFIDENCE_SCALE = 255
COMPRESSOR = {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1}
# Ids of an instance image come in long runs of one value: shuffling their bytes made its
# chunks larger (5.6 MB against 4.0 for a slab of pores) and a third slower to write.
INSTANCE_COMPRESSOR = {**COMPRESSOR, "shuffle": 0}
READ_CACHE_BYTES = 256 << 20
PYRAMID_MIN_SIDE = 256  # stop adding levels once a level's slices would be smaller than this
MAX_PENDING_WRITES = 2
AXES = ("z", "y", "x")
# The space units OME-Zarr allows (UDUNITS-2 names), and the spellings scanners write for them.
OME_UNITS = (
    "angstrom", "attometer", "centimeter", "decimeter", "exameter", "femtometer", "foot", "gigameter",
    "hectometer", "inch", "kilometer", "megameter", "meter", "micrometer", "mile", "millimeter", "nanometer",
    "parsec", "petameter", "picometer", "terameter", "yard", "yoctometer", "yottameter", "zeptometer", "zettameter",
)
UNIT_SPELLINGS = {"µm": "micrometer", "μm": "micrometer", "\\u00b5m": "micrometer", "um": "micrometer",
                  "micron": "micrometer", "microns": "micrometer", "nm": "nanometer", "mm": "millimeter",
                  "cm": "centimeter", "m": "meter", "å": "angstrom", "pm": "picometer"}


def local_path(path: str | Path) -> Path:
    return absolute(path)


def store_kind(path: Path) -> str | None:
    """'zarr', 'zarr3', 'n5', 'ome-zarr' for a directory TensorStore can open, else None."""
    if not path.is_dir():
        return None
    if (path / ".zarray").is_file():
        return "zarr"
    if (path / ".zattrs").is_file() and "multiscales" in _json(path / ".zattrs"):
        return "ome-zarr"
    if (path / "zarr.json").is_file():
        meta = _json(path / "zarr.json")
        if meta.get("node_type") == "array":
            return "zarr3"
        if "multiscales" in meta.get("attributes", {}).get("ome", {}):
            return "ome-zarr"
    if (path / "attributes.json").is_file() and "dimensions" in _json(path / "attributes.json"):
        return "n5"
    return None


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SrjaxError(f"{path} cannot be read as JSON: {err}") from None


def ome_multiscale(path: Path) -> dict:
    """The first ``multiscales`` entry of an OME-Zarr v0.4 or v0.5 image."""
    if (path / ".zattrs").is_file():
        return _json(path / ".zattrs")["multiscales"][0]
    return _json(path / "zarr.json")["attributes"]["ome"]["multiscales"][0]


def _array_path(path: Path) -> tuple[Path, str]:
    kind = store_kind(path)
    if kind == "ome-zarr":
        level0 = path / ome_multiscale(path)["datasets"][0]["path"]
        return level0, store_kind(level0) or "zarr"
    if kind is None:
        raise SrjaxError(f"{path} is not a Zarr (v2 or v3), N5 or OME-Zarr array; convert it with `srjax import`")
    return path, kind


def _context(cache_bytes: int) -> ts.Context:
    return ts.Context({"cache_pool": {"total_bytes_limit": cache_bytes}})


def open_volume(path: str | Path, name: str = "volume", cache_bytes: int = READ_CACHE_BYTES,
                fill_missing: bool = False) -> ts.TensorStore:
    """Open a Zarr v2/v3, N5 or OME-Zarr (level 0) volume read-only.

    A chunk missing from the store is an error when read, unless ``fill_missing`` and
    the store's metadata names a fill value for absent chunks.
    """
    path = local_path(path)
    if not path.exists():
        raise SrjaxError(f"{name} {path} does not exist")
    array_path, kind = _array_path(path)
    spec = {"driver": kind, "kvstore": {"driver": "file", "path": str(array_path)},
            "fill_missing_data_reads": fill_missing}
    try:
        volume = ts.open(spec, read=True, context=_context(cache_bytes)).result()
    except ValueError as err:
        raise SrjaxError(f"{name} {path} cannot be opened: {_first_line(err)}") from None
    if fill_missing and volume.fill_value is None:
        raise SrjaxError(f"{name} {path} names no fill value for missing chunks; "
                         "drop --fill-missing, or repair or re-import the volume")
    check_volume(volume, f"{name} {path}")
    return volume


def as_volume(array) -> ts.TensorStore:
    """A TensorStore view of ``array`` (itself if it already is one)."""
    return array if isinstance(array, ts.TensorStore) else ts.array(np.asarray(array))


def voxel_size(path: str | Path) -> tuple[list[float], str | None] | None:
    """(z, y, x) voxel size and unit of an OME-Zarr image, None for other stores."""
    path = local_path(path)
    if store_kind(path) != "ome-zarr":
        return None
    multiscale = ome_multiscale(path)
    for transform in multiscale["datasets"][0].get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            return list(transform["scale"])[-3:], multiscale.get("axes", [{}])[-1].get("unit")
    return None


def check_volume(array, name: str) -> None:
    check_layout(tuple(array.shape), numpy_dtype(array), name)


def check_layout(shape: tuple, dtype, name: str) -> None:
    """Rank and dtype checks that need no voxel reads."""
    if len(shape) != 3:
        raise SrjaxError(f"{name} has shape {tuple(shape)}; srjax needs a 3-D volume [slices, height, width]")
    if np.dtype(dtype).kind not in "uif":
        raise SrjaxError(f"{name} has dtype {np.dtype(dtype)}; srjax needs integer or floating-point voxels")
    if min(shape) < 1:
        raise SrjaxError(f"{name} has shape {tuple(shape)} with an empty axis")


def numpy_dtype(array) -> np.dtype:
    dtype = array.dtype
    return np.dtype(dtype.numpy_dtype if isinstance(dtype, ts.dtype) else dtype)


def read(view: ts.TensorStore, name: str) -> np.ndarray:
    """Read a TensorStore view, naming the volume if a chunk is damaged or unreadable."""
    return wait(view.read(), name)


def wait(future, name: str):
    try:
        return future.result()
    except ValueError as err:
        text = _first_line(err)
        if text.startswith("NOT_FOUND") and "is missing" in text:
            raise SrjaxError(f"{name} cannot be read: {text}; repair or re-import the volume, or pass "
                             "--fill-missing if its absent chunks really mean its fill value") from None
        raise SrjaxError(f"{name} cannot be read: {text}; re-import or repair the volume") from None


def wait_written(future, path: Path):
    """Wait for a write, naming the output and the cause (disk full, permissions) if it fails."""
    try:
        return future.result()
    except ValueError as err:
        raise SrjaxError(f"cannot write {path}: {_os_cause(_first_line(err))}") from None


def _os_cause(text: str) -> str:
    """The operating system's words in a TensorStore error, e.g. 'No space left on device'."""
    match = re.search(r"\[OS error(?: \d+)?: ([^\]]+)\]", text)
    return match.group(1) if match else text


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0]


def ome_unit(unit: str | None, strict: bool = True) -> str | None:
    """``unit`` as OME-Zarr names it (``µm`` -> ``micrometer``); an unknown unit is refused,
    or (not ``strict``: a unit a file records) dropped."""
    if unit is None or unit == "":
        return None
    name = str(unit).strip().lower()
    name = UNIT_SPELLINGS.get(name, name)
    if name.endswith("metre"):
        name = name[: -len("metre")] + "meter"
    if name not in OME_UNITS:
        if not strict:
            return None
        raise SrjaxError(f"unit {unit!r} is not an OME-Zarr space unit; use one of micrometer, nanometer, "
                         "millimeter, angstrom (or µm, nm, mm)")
    return name


def label_metadata(names: list[str], source_image: str | None = None) -> dict:
    """OME-Zarr ``image-label`` metadata: a colour and a name for every class id."""
    meta = {
        "version": OME_VERSION,
        "colors": [{"label-value": i, "rgba": [*class_colour(i), 255]} for i in range(len(names))],
        "properties": [{"label-value": i, "class": name} for i, name in enumerate(names)],
    }
    if source_image is not None:
        meta["source"] = {"image": source_image}
    return meta


def pyramid_factors(shape) -> list[int]:
    """Downsampling factors 1, 2, 4, ... while a level's slices stay at least PYRAMID_MIN_SIDE."""
    factors = [1]
    while max(shape[1:]) // (factors[-1] * 2) >= PYRAMID_MIN_SIDE:
        factors.append(factors[-1] * 2)
    return factors


class OmeZarrWriter:
    """Write a [z, y, x] volume slab by slab into an OME-Zarr image at a (temporary) path.

    Pyramid level k holds every 2^k-th voxel along each axis: nearest-neighbour, so
    label volumes keep valid class ids at every level. Writes are asynchronous with
    at most MAX_PENDING_WRITES slabs in flight, which bounds memory. ``labels``, a
    list of class names, makes it an OME-Zarr label image (``image-label`` metadata
    with a colour and a name per class); ``source_image`` is then the image it labels,
    relative to the output. Errors name ``final``, the path the output will have.
    """

    def __init__(self, path: Path, shape, dtype, chunks=DEFAULT_CHUNKS, name: str = "volume",
                 voxel_size=None, unit: str | None = None, attributes: dict | None = None,
                 labels: list[str] | None = None, source_image: str | None = None, final: Path | None = None,
                 create: bool = True, compressor: dict = COMPRESSOR):
        self.path, self.shape, self.name = Path(path), tuple(int(s) for s in shape), name
        self.compressor = compressor
        self.final = final or self.path
        self.factors = pyramid_factors(self.shape)
        self.pending = []
        unit = ome_unit(unit)
        scale = [float(v) for v in (voxel_size if voxel_size is not None else (1.0, 1.0, 1.0))]
        axes = [{"name": axis, "type": "space", **({"unit": unit} if unit else {})} for axis in AXES]
        datasets = [
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": [v * f for v in scale]}]}
            for level, f in enumerate(self.factors)
        ]
        multiscale = {"version": OME_VERSION, "name": name, "axes": axes, "datasets": datasets,
                      "type": "nearest-neighbour subsampling"}
        self.attributes = {"multiscales": [multiscale], "srjax": {"written_by": f"srjax {__version__}", **(attributes or {})}}
        if labels is not None:
            self.set_labels(labels, source_image)
        with self._writing():
            if create:
                self.path.mkdir(parents=True)
                (self.path / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
            self.levels = [self._open(str(level), factor, dtype, chunks, create)
                           for level, factor in enumerate(self.factors)]

    def set_labels(self, names: list[str], source_image: str | None = None) -> None:
        """Make the output a label image: a colour and a name for each class id."""
        self.attributes["image-label"] = label_metadata(names, source_image)

    @contextlib.contextmanager
    def _writing(self):
        try:
            yield
        except OSError as err:
            raise SrjaxError(f"cannot write {self.final}: {err.strerror or err}") from None
        except ValueError as err:
            raise SrjaxError(f"cannot write {self.final}: {_os_cause(_first_line(err))}") from None

    def _open(self, level: str, factor: int, dtype, chunks, create: bool) -> ts.TensorStore:
        """A level's array: created, or (``create`` false) the one another process created."""
        shape = [-(-s // factor) for s in self.shape]
        metadata = {
            "shape": shape,
            "chunks": [min(c, s) for c, s in zip(chunks, shape)],
            "dtype": np.dtype(dtype).str,
            "compressor": self.compressor,
            "dimension_separator": "/",
        }
        spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(self.path / level)}, "metadata": metadata}
        return ts.open(spec, create=create, open=not create, context=_context(0)).result()

    def __setitem__(self, zs: slice, slab: np.ndarray) -> None:
        start, stop, _ = zs.indices(self.shape[0])
        for level, factor in zip(self.levels, self.factors):
            first = -(-start // factor) * factor  # first slice of this slab that level keeps
            if first >= stop:
                continue
            picked = slab[first - start :: factor, ::factor, ::factor]
            self.pending.append(level[first // factor : first // factor + len(picked)].write(picked))
        while len(self.pending) > MAX_PENDING_WRITES * len(self.levels):
            wait_written(self.pending.pop(0), self.final)

    def abandon(self) -> None:
        """Let writes in flight land before the partial output is deleted."""
        for future in self.pending:
            try:
                future.result()
            except ValueError:
                pass
        self.pending = []

    def wait(self) -> None:
        """Until every write in flight has landed."""
        for future in self.pending:
            wait_written(future, self.final)
        self.pending = []

    def finish(self) -> None:
        self.wait()
        with self._writing():
            (self.path / ".zattrs").write_text(json.dumps(self.attributes, indent=2))


@contextlib.contextmanager
def ome_zarr_writer(path: str | Path, shape, dtype, **kwargs):
    """An ``OmeZarrWriter`` that appears at ``path`` only once the block exits cleanly."""
    with atomic_path(path) as tmp:
        writer = OmeZarrWriter(tmp, shape, dtype, final=absolute(path), **kwargs)
        try:
            yield writer
        except BaseException:
            writer.abandon()
            raise
        writer.finish()


@contextlib.contextmanager
def shared_ome_zarr_writer(path: str | Path, shape, dtype, **kwargs):
    """``ome_zarr_writer`` for every process of a run, each writing its own slices (one
    chunk per slice at every level, so no two processes write one chunk): the main process
    creates it, and once all have written, finishes it and renames it into place."""
    if kwargs.get("chunks", DEFAULT_CHUNKS)[0] != 1:
        raise ValueError("a shared output needs one slice per chunk: processes write disjoint slices")
    if parallel.count() == 1:
        with ome_zarr_writer(path, shape, dtype, **kwargs) as writer:
            yield writer
        return
    final = absolute(path)
    partial = sibling(final, "partial")

    def create():
        remove(partial)
        return OmeZarrWriter(partial, shape, dtype, final=final, **kwargs)

    writer = parallel.on_main(create) or OmeZarrWriter(partial, shape, dtype, final=final, create=False, **kwargs)
    try:
        yield writer
    except BaseException:
        writer.abandon()
        raise
    parallel.together(writer.wait)

    def finish():
        writer.finish()
        with deferred_interrupts():
            replace(partial, final)

    parallel.on_main(finish)


def write_volume(path: str | Path, array: np.ndarray, **kwargs) -> None:
    """Write an in-memory array as an OME-Zarr image."""
    with ome_zarr_writer(path, array.shape, array.dtype, **kwargs) as writer:
        writer[0 : array.shape[0]] = array
