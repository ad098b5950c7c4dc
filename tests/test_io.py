"""Every input format round trip, the OME-Zarr outputs, and what bad files get told."""

import json

import h5py
import numpy as np
import pytest
import tensorstore as ts
import tifffile

from conftest import read_all
from srjax import io
from srjax.cli import main
from srjax.sources import open_source

VOLUME = np.random.default_rng(0).integers(0, 4000, (6, 40, 36)).astype(np.uint16)


def _tensorstore(path, driver, metadata):
    spec = {"driver": driver, "kvstore": {"driver": "file", "path": str(path)}, "metadata": metadata}
    ts.open(spec, create=True).result().write(VOLUME).result()


def _write(kind, root):
    """Write VOLUME in one format; return its path and the voxel size it records (or None)."""
    if kind == "zarr":
        _tensorstore(root / "v.zarr", "zarr", {"shape": VOLUME.shape, "chunks": [2, 16, 16], "dtype": "<u2"})
        return root / "v.zarr", None
    if kind == "zarr3":
        grid = {"name": "regular", "configuration": {"chunk_shape": [2, 16, 16]}}
        _tensorstore(root / "v3.zarr", "zarr3", {"shape": VOLUME.shape, "data_type": "uint16", "chunk_grid": grid})
        return root / "v3.zarr", None
    if kind == "n5":
        _tensorstore(root / "v.n5", "n5", {"dimensions": VOLUME.shape, "blockSize": [2, 16, 16], "dataType": "uint16",
                                          "compression": {"type": "gzip"}})
        return root / "v.n5", None
    if kind == "tiff-directory":
        (root / "slices").mkdir()
        for z, page in enumerate(VOLUME):  # natural order: slice_2 before slice_10
            tifffile.imwrite(root / "slices" / f"slice_{z * 4}.tif", page)
        return root / "slices", None
    if kind == "multipage-tiff":
        tifffile.imwrite(root / "v.tif", VOLUME, imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                         metadata={"spacing": 0.65, "unit": "micron"})
        return root / "v.tif", [0.65, 0.65, 0.65]
    if kind == "hdf5":
        with h5py.File(root / "v.h5", "w") as f:
            f.create_dataset("/exchange/data", data=VOLUME, chunks=(1, 40, 36), compression="gzip")
            f["/measurement/instrument/detection_system/objective/resolution"] = 1.3
        return root / "v.h5", [1.3, 1.3, 1.3]
    np.save(root / "v.npy", VOLUME)
    return root / "v.npy", None


FORMATS = ("zarr", "zarr3", "n5", "tiff-directory", "multipage-tiff", "hdf5", "npy")


@pytest.mark.parametrize("kind", FORMATS)
def test_import_round_trip(kind, tmp_path):
    path, size = _write(kind, tmp_path)
    assert main(["import", str(path), str(tmp_path / "out.ome.zarr"), "--chunks", "1,16,16"]) == 0
    imported = io.open_volume(tmp_path / "out.ome.zarr")
    np.testing.assert_array_equal(io.read(imported, "out"), VOLUME)
    assert io.numpy_dtype(imported) == VOLUME.dtype
    recorded = io.voxel_size(tmp_path / "out.ome.zarr")
    if size is None:
        assert recorded == ([1.0, 1.0, 1.0], None)
    else:
        np.testing.assert_allclose(recorded[0], size)
    np.testing.assert_array_equal(open_source(path).read(2, 5), VOLUME[2:5])


@pytest.mark.parametrize("kind", ["zarr", "zarr3", "n5"])
def test_stores_open_directly_and_as_file_urls(kind, tmp_path):
    path, _ = _write(kind, tmp_path)
    for spec in (path, f"file://{path}"):
        np.testing.assert_array_equal(io.read(io.open_volume(spec)[1:3, 5:9], "v"), VOLUME[1:3, 5:9])


def test_hdf5_any_dataset_path_and_its_attributes(tmp_path):
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        data = f.create_dataset("/recon/volume", data=VOLUME)
        data.attrs["voxel_size"] = [2.0, 1.0, 1.0]
        data.attrs["units"] = "micrometer"
        data.attrs["energy_kev"] = 25.0
    source = open_source(tmp_path / "scan.h5", dataset="/recon/volume")
    assert source.voxel_size == [2.0, 1.0, 1.0] and source.unit == "micrometer"
    assert main(["import", str(tmp_path / "scan.h5"), str(tmp_path / "s.ome.zarr"), "--dataset", "/recon/volume"]) == 0
    attributes = json.loads((tmp_path / "s.ome.zarr" / ".zattrs").read_text())
    assert attributes["srjax"]["energy_kev"] == 25.0 and attributes["srjax"]["dataset"] == "/recon/volume"
    assert attributes["multiscales"][0]["axes"][0]["unit"] == "micrometer"


def test_output_is_ome_zarr_with_a_nearest_neighbour_pyramid(tmp_path):
    labels = np.random.default_rng(1).integers(0, 5, (5, 600, 530)).astype(np.uint8)
    with io.ome_zarr_writer(tmp_path / "l.ome.zarr", labels.shape, np.uint8, name="labels",
                            voxel_size=[2.0, 0.5, 0.5], unit="micrometer") as writer:
        for start in range(0, 5, 2):  # slabs that do not line up with the pyramid's factors
            writer[start:start + 2] = labels[start:start + 2]
    root = tmp_path / "l.ome.zarr"
    assert json.loads((root / ".zgroup").read_text()) == {"zarr_format": 2}
    multiscale = json.loads((root / ".zattrs").read_text())["multiscales"][0]
    assert multiscale["version"] == "0.4" and [a["name"] for a in multiscale["axes"]] == ["z", "y", "x"]
    assert all(a["type"] == "space" and a["unit"] == "micrometer" for a in multiscale["axes"])
    assert [d["path"] for d in multiscale["datasets"]] == ["0", "1"]
    assert multiscale["datasets"][1]["coordinateTransformations"] == [{"type": "scale", "scale": [4.0, 1.0, 1.0]}]
    level1 = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(root / "1")}}).result()
    assert level1.shape == (3, 300, 265)
    np.testing.assert_array_equal(level1.read().result(), labels[::2, ::2, ::2])
    np.testing.assert_array_equal(read_all(root), labels)
    assert not list(tmp_path.glob(".*partial"))


def test_a_failed_write_leaves_nothing_under_the_name(tmp_path):
    with pytest.raises(RuntimeError):
        with io.ome_zarr_writer(tmp_path / "x.ome.zarr", (2, 8, 8), np.uint8) as writer:
            writer[0:1] = np.zeros((1, 8, 8), np.uint8)
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def _one_error(capsys):
    err = capsys.readouterr().err
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("srjax: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_corrupt_chunk_is_named_and_nothing_is_written(tmp_path, capsys):
    _tensorstore(tmp_path / "v.zarr", "zarr", {"shape": VOLUME.shape, "chunks": [1, 40, 36], "dtype": "<u2",
                                               "compressor": io.COMPRESSOR})
    (tmp_path / "v.zarr" / "3.0.0").write_bytes(b"not a blosc chunk" * 8)
    code = main(["pseudo", str(tmp_path / "v.zarr"), "--classes", "3", "--out", str(tmp_path / "l.ome.zarr")])
    assert code == 2
    line = _one_error(capsys)
    assert "cannot be read" in line and "3.0.0" in line and "re-import" in line
    assert not (tmp_path / "l.ome.zarr").exists() and not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("case, message", [
    ("missing-dataset", "has no dataset /exchange/data; pass --dataset with one of: /other"),
    ("bool", "dtype bool"),
    ("complex", "dtype complex64"),
    ("4-D", "3-D volume"),
    ("missing", "does not exist"),
    ("unknown-format", "unsupported format"),
])
def test_bad_files_get_one_line(case, message, tmp_path, capsys):
    path = tmp_path / "in.npy"
    if case == "missing-dataset":
        path = tmp_path / "in.h5"
        with h5py.File(path, "w") as f:
            f["/other"] = VOLUME
    elif case == "bool":
        np.save(path, VOLUME > 100)
    elif case == "complex":
        np.save(path, VOLUME.astype(np.complex64))
    elif case == "4-D":
        np.save(path, VOLUME[None])
    elif case == "unknown-format":
        path = tmp_path / "in.raw"
        path.write_bytes(VOLUME.tobytes())
    for command in (["import", str(path), str(tmp_path / "o.ome.zarr")],
                    ["pseudo", str(path), "--classes", "2", "--out", str(tmp_path / "o.ome.zarr")]):
        assert main(command) == 2
        assert message in _one_error(capsys)
        assert not (tmp_path / "o.ome.zarr").exists()
