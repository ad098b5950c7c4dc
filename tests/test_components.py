"""Blockwise components and features against scipy.ndimage.label and skimage's regionprops."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import regionprops

from conftest import scipy_label_of
from srjax.analysis import runs
from srjax.analysis.components import face_pairs, label_components, painted, structure
from srjax.analysis.features import table


def blobs(shape, fraction, seed, smooth=1.5):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), smooth)
    labels = np.zeros(shape, np.uint8)
    labels[field > np.quantile(field, 1 - fraction)] = 2
    labels[field < np.quantile(field, 0.2)] = 1
    return labels


def scipy_ids(labels, cls, connectivity):
    ids, _ = ndimage.label(labels == cls, structure(connectivity))
    return ids


def ids_of(components):
    """The volume as component ids, painted from the kept runs as the instance images are."""
    return np.concatenate([plane for index, file in enumerate(components.run_files)
                           for plane in painted(file, components.lookup(index))])


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("slab", [1, 3, 7])
def test_components_equal_scipys_ids(connectivity, slab, tmp_path):
    labels = blobs((23, 31, 29), 0.3, seed=connectivity + slab)
    components = label_components(labels, 2, connectivity, slab=slab, keep_runs=tmp_path)
    expected = scipy_ids(labels, 2, connectivity)
    assert components.count == expected.max()
    scipy_label_of(ids_of(components), expected)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_touching_only_at_an_edge_or_a_corner_across_slabs(connectivity, tmp_path):
    labels = np.zeros((4, 7, 7), np.uint8)
    labels[1, 1, 1] = labels[2, 2, 2] = 1  # corner across the face between slabs 1 and 2
    labels[1, 5, 1] = labels[2, 5, 2] = 1  # edge
    labels[1, 1, 5] = labels[2, 1, 5] = 1  # face
    components = label_components(labels, 1, connectivity, slab=2, keep_runs=tmp_path)
    expected = {6: 5, 18: 4, 26: 3}[connectivity]
    assert components.count == scipy_ids(labels, 1, connectivity).max() == expected
    scipy_label_of(ids_of(components), scipy_ids(labels, 1, connectivity))


def test_a_component_winding_through_every_slab(tmp_path):
    labels = np.zeros((12, 9, 9), np.uint8)
    for z in range(12):  # a helix that leaves and re-enters each slab's face at another place
        labels[z, 4 + int(3 * np.cos(z)), 4 + int(3 * np.sin(z))] = 1
    labels[:, 0, 0] = 1
    labels[11, 0, 1:] = 1
    for connectivity in (6, 26):
        components = label_components(labels, 1, connectivity, slab=1, keep_runs=tmp_path)
        scipy_label_of(ids_of(components), scipy_ids(labels, 1, connectivity))


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
def test_runs_label_like_scipy_and_number_alike(connectivity, density):
    rng = np.random.default_rng(int(density * 10) + connectivity)
    for shape in [(1, 1, 1), (1, 1, 9), (4, 1, 7), (3, 11, 13), (9, 17, 5)]:
        mask = rng.random(shape) < density
        found = runs.find_runs(mask)
        count, ids = runs.label(found, structure(connectivity))
        expected, expected_count = ndimage.label(mask, structure(connectivity))
        assert count == expected_count
        np.testing.assert_array_equal(ids, expected.reshape(-1)[found.row * shape[2] + found.start])
        np.testing.assert_array_equal(runs.paint(found, ids), expected)


def plane_runs(plane):
    """A labelled plane as face_pairs takes it: its runs and their labels."""
    found = runs.find_runs(plane[None] > 0)
    return found, plane.reshape(-1)[found.row * plane.shape[1] + found.start]


def voxel_face_pairs(upper, lower, connectivity):
    """Every (upper, lower) label pair of voxels the structure joins, voxel by voxel."""
    height, width = upper.shape
    pairs = set()
    for dy, dx in np.argwhere(structure(connectivity)[2]) - 1:
        for y, x in np.argwhere(upper > 0):
            if 0 <= y + dy < height and 0 <= x + dx < width and lower[y + dy, x + dx]:
                pairs.add((int(upper[y, x]), int(lower[y + dy, x + dx])))
    return sorted(pairs)


def test_face_pairs_of_six_connectivity_are_straight_below():
    upper = np.array([[1, 0, 0], [0, 0, 2]])
    lower = np.array([[3, 0, 4], [0, 5, 5]])
    assert face_pairs(*plane_runs(upper), *plane_runs(lower), 6).tolist() == [[1, 3], [2, 5]]
    assert face_pairs(*plane_runs(upper), *plane_runs(lower), 26).tolist() == [[1, 3], [1, 5], [2, 4], [2, 5]]


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_face_pairs_of_runs_equal_the_voxels_pairs(connectivity):
    rng = np.random.default_rng(connectivity)
    for _ in range(20):  # runs that end at the planes' edges, one voxel long, touching only diagonally
        upper, lower = (ndimage.label(rng.random((7, 9)) < 0.5)[0] for _ in range(2))
        pairs = face_pairs(*plane_runs(upper), *plane_runs(lower), connectivity)
        assert [tuple(p) for p in pairs.tolist()] == voxel_face_pairs(upper, lower, connectivity)


def test_no_voxel_of_the_class():
    components = label_components(np.zeros((3, 4, 4), np.uint8), 1, slab=1)
    assert components.count == 0 and len(components.sums) == 0 and components.voxels == 0
    assert len(table(components.sums, (3, 4, 4))["id"]) == 0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.5, 0.75)])
def test_features_equal_regionprops(spacing, tmp_path):
    labels = blobs((20, 40, 36), 0.25, seed=3, smooth=2.0)
    components = label_components(labels, 2, 26, slab=4, keep_runs=tmp_path)
    features = table(components.sums, labels.shape, spacing)
    plain = table(components.sums, labels.shape)
    expected = scipy_ids(labels, 2, 26)
    theirs = scipy_label_of(ids_of(components), expected)[features["id"]]
    props = [regionprops(expected, spacing=spacing)[label - 1] for label in theirs]
    unit_props = [regionprops(expected)[label - 1] for label in theirs]
    assert len(props) == components.count > 10
    for row, (p, u) in enumerate(zip(props, unit_props)):
        assert theirs[row] == p.label
        assert features["voxels"][row] == u.area
        np.testing.assert_allclose(features["volume"][row], p.area)
        np.testing.assert_allclose([features[f"centroid_{a}"][row] for a in "zyx"], u.centroid)
        assert tuple(features[k][row] for k in ("z0", "y0", "x0", "z1", "y1", "x1")) == u.bbox
        np.testing.assert_allclose(features["major_axis"][row], p.axis_major_length, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(features["minor_axis"][row], p.axis_minor_length, rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(plain["major_axis_voxels"][row], u.axis_major_length, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(features["equivalent_diameter"][row], p.equivalent_diameter_area)
    touching = [bool(min(p.bbox[:3]) == 0 or any(hi == n for hi, n in zip(p.bbox[3:], labels.shape)))
                for p in unit_props]
    assert features["touches_surface"].tolist() == touching


def test_major_axis_direction_of_a_rod():
    labels = np.zeros((9, 30, 9), np.uint8)
    labels[3:6, 2:28, 3:6] = 1
    features = table(label_components(labels, 1).sums, labels.shape, (1.0, 1.0, 1.0))
    np.testing.assert_allclose([features["axis_z"][0], features["axis_y"][0], features["axis_x"][0]], [0, 1, 0],
                               atol=1e-9)


def test_worker_processes_give_the_same_components(tmp_path):
    from srjax import io
    from srjax.analysis.components import Workers

    labels = blobs((24, 40, 36), 0.3, seed=5)
    io.write_volume(tmp_path / "labels.ome.zarr", labels)
    with Workers(2) as workers:
        components = label_components(str(tmp_path / "labels.ome.zarr"), 2, 26, slab=3, workers=workers)
    serial = label_components(labels, 2, 26, slab=3)
    assert components.count == serial.count == scipy_ids(labels, 2, 26).max()
    np.testing.assert_array_equal(components.final, serial.final)
    for field in ("count", "first", "second", "low", "high"):
        np.testing.assert_array_equal(getattr(components.sums, field), getattr(serial.sums, field))


def test_several_selections_in_one_read_equal_each_alone(tmp_path):
    from srjax.analysis.components import label_each

    labels = blobs((15, 30, 28), 0.3, seed=8)
    (tmp_path / "together").mkdir()
    together = label_each(labels, [1, 2, (1, 2)], 18, slab=4, keep_runs=tmp_path / "together")
    for selected, components in zip([1, 2, (1, 2)], together):
        alone = label_components(labels, selected, 18, slab=4, keep_runs=tmp_path)
        assert components.count == alone.count
        np.testing.assert_array_equal(ids_of(components), ids_of(alone))
        np.testing.assert_array_equal(components.sums.second, alone.sums.second)


def test_runs_kept_on_disk_paint_the_labels_back(tmp_path):
    """A slab's runs, saved and loaded, paint each voxel with its component's value and 0
    elsewhere: the instance images are painted so, not labelled again."""
    mask = np.random.default_rng(4).random((3, 17, 23)) < 0.4
    local, _ = ndimage.label(mask)
    found = runs.find_runs(mask)
    runs.save(tmp_path / "slab", found, runs.label(found, structure(6))[1])
    loaded, ids = runs.load(tmp_path / "slab")
    np.testing.assert_array_equal(runs.paint(loaded, ids), local)
