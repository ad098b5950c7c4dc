"""Stage 1 out of core: streamed over chunks it equals the in-memory result, and checks its input."""

import numpy as np
import pytest
from sklearn.cluster import KMeans

from srjax import io, pseudo
from srjax.errors import SrjaxError
from srjax.sources import from_store, open_source


class Collect:
    """Takes ``writer[start:stop] = slab`` into an in-memory array."""

    def __init__(self, shape):
        self.array = np.full(shape, 255, np.uint8)

    def __setitem__(self, zs, slab):
        self.array[zs] = slab


def _stage1(volume, method="kmeans", classes=4, **kwargs):
    out = Collect(volume.shape)
    result = pseudo.run_stage1(from_store(volume, "volume"), out, method, classes, **kwargs)
    return result, out.array


@pytest.mark.parametrize("method", pseudo.METHODS)
def test_streamed_over_small_chunks_equals_in_memory(method, tiny_phantom, tmp_path, monkeypatch):
    volume, _ = tiny_phantom
    whole, labels_in_memory = _stage1(volume, method)
    io.write_volume(tmp_path / "v.ome.zarr", volume, chunks=(1, 16, 16))
    monkeypatch.setattr(pseudo, "SLAB_BYTES", 3 * 48 * 48 * 4)  # three slices a slab: halos cross slabs
    streamed, labels = _stage1(io.open_volume(tmp_path / "v.ome.zarr"), method)
    np.testing.assert_array_equal(labels, labels_in_memory)
    np.testing.assert_array_equal(streamed.counts, whole.counts)
    assert streamed.summary() == whole.summary()
    assert np.all(np.diff(whole.clustering.means) > 0)
    assert labels.max() == whole.clustering.classes - 1


def test_kmeans_labels_are_sklearns_up_to_the_threshold_bins(tiny_phantom):
    volume, _ = tiny_phantom
    result, labels = _stage1(volume, "kmeans", 4)
    voxels = volume.reshape(-1, 1).astype(np.float64)
    reference = KMeans(4, n_init=10, random_state=0).fit(voxels)
    assert result.clustering.objective <= reference.inertia_ * (1 + 1e-3)
    ref_means = np.sort(reference.cluster_centers_.ravel())
    np.testing.assert_allclose(result.clustering.means, ref_means, atol=5e-3)
    ref_labels = np.searchsorted((ref_means[1:] + ref_means[:-1]) / 2, volume)
    width = result.binning.width
    near = np.abs(volume[..., None] - result.clustering.thresholds).min(-1) < 2 * width + 5e-3
    assert np.all((labels == ref_labels) | near)


@pytest.mark.parametrize("dtype, low, high", [
    (np.uint8, 0, 255), (np.int8, -128, 127), (np.uint16, 0, 65535), (np.int16, -32768, 32767),
    (np.int32, -20000, 40000),  # wider integers are exact while their range fits in 65,536 bins
])
def test_integer_volumes_are_binned_exactly(dtype, low, high):
    values = np.array([low, low + 1, 0, 1, high - 1, high], np.int64)
    volume = np.repeat(values, [30, 30, 5, 5, 40, 40]).astype(dtype).reshape(3, 5, 10)
    result, labels = _stage1(volume, "kmeans", 3)
    assert result.binning.integer
    assert (result.low, result.high) == (low, high)
    np.testing.assert_array_equal(np.sort(result.binning.centres[np.flatnonzero(result.counts)]), np.unique(values))
    assert labels[volume == low].max() == 0 and labels[volume == high].min() == 2


def test_mask_restricts_clustering_and_allows_nan_outside(tiny_phantom):
    volume, _ = tiny_phantom
    masked = volume.astype(np.float32).copy()
    outside = ~pseudo.circle_mask(volume.shape)
    masked[:, outside] = np.nan
    result, labels = _stage1(masked, "kmeans", 3, mask="circle")
    assert np.all(labels[:, outside] == 0)
    assert result.counts.sum() == volume.shape[0] * (~outside).sum()
    reference, _ = _stage1(volume[:, ~outside].reshape(volume.shape[0], 1, -1), "kmeans", 3)
    np.testing.assert_allclose(result.clustering.means, reference.clustering.means, rtol=1e-4)


def test_mask_volume(tiny_phantom, tmp_path):
    volume, truth = tiny_phantom
    io.write_volume(tmp_path / "mask.ome.zarr", (truth > 0).astype(np.uint8))
    result, labels = _stage1(volume, "kmeans", 3, mask=str(tmp_path / "mask.ome.zarr"))
    assert np.all(labels[truth == 0] == 0) and result.counts.sum() == (truth > 0).sum()


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_classes_auto_reports_its_curve(method, tiny_phantom):
    volume, _ = tiny_phantom
    result, labels = _stage1(volume, method, "auto")
    curve = result.curve
    assert curve["k"] == list(range(1, pseudo.MAX_AUTO_CLASSES + 1))
    values = curve["bic" if method == "gmm" else "sse"]
    assert len(values) == len(curve["k"]) and result.clustering.classes == curve["chosen"] >= 2
    if method == "kmeans":
        assert np.all(np.diff(values) <= 1e-9 * values[0])
    else:
        assert curve["chosen"] == curve["k"][int(np.argmin(values))]
    assert labels.max() == curve["chosen"] - 1


def test_gmm_picks_three_components_on_three_phases():
    rng = np.random.default_rng(0)
    volume = np.concatenate([rng.normal(m, 4, 20000) for m in (40, 100, 170)]).round().astype(np.uint8)
    result, _ = _stage1(volume.reshape(6, 100, 100), "gmm", "auto")
    assert result.curve["chosen"] == 3


@pytest.mark.parametrize(
    "volume, classes, message",
    [
        (np.full((2, 4, 4), 3.0), 2, "constant"),
        (np.full((2, 4, 4), 7, np.uint16), 2, "constant"),
        (np.array([np.nan, 1.0, 2.0, 3.0]).reshape(1, 2, 2), 2, "NaN or Inf"),
        (np.array([np.inf, 1.0, 2.0, 3.0]).reshape(1, 2, 2), 2, "NaN or Inf"),
        (np.array([0.0, 1.0, 1.0, 0.0]).reshape(1, 2, 2), 3, "distinct values"),
        (np.array([0, 1, 1, 0], np.uint16).reshape(1, 2, 2), 3, "distinct values"),
        (np.array([0.0, 1.0, 1.0, 0.0]).reshape(1, 2, 2), 1, "at least 2"),
    ],
)
def test_bad_volumes_are_refused(volume, classes, message):
    with pytest.raises(SrjaxError, match=message):
        _stage1(volume, "kmeans", classes)


def test_unknown_method_is_refused(tiny_phantom):
    with pytest.raises(SrjaxError, match="kmeans, kmeans-lloyd, otsu, gmm, gmm-full"):
        _stage1(tiny_phantom[0], "kmedoids")


def test_stage1_reads_a_source_without_import(tmp_path, tiny_phantom):
    volume, _ = tiny_phantom
    np.save(tmp_path / "v.npy", volume)
    out = Collect(volume.shape)
    pseudo.run_stage1(open_source(tmp_path / "v.npy"), out, "otsu", 4)
    np.testing.assert_array_equal(out.array, _stage1(volume, "otsu", 4)[1])
