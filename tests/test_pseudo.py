import numpy as np
import pytest
from sklearn.cluster import KMeans

from srjax import pseudo
from srjax.errors import SrjaxError


def _stage1(volume, classes, seed=0):
    low, high = pseudo.value_range(volume)
    hist = pseudo.histogram(volume, low, high)
    clustering = pseudo.cluster(hist, classes, seed=seed)
    return clustering, pseudo.label_volume(volume, clustering, np.empty(volume.shape, np.uint8))


def test_kmeans_matches_sklearn_with_ids_by_ascending_centroid(tiny_phantom):
    volume, _ = tiny_phantom
    clustering, labels = _stage1(volume, 4)
    voxels = volume.reshape(-1, 1).astype(np.float64)
    reference = KMeans(4, n_init=4, random_state=0, tol=0.0).fit(voxels)
    ref_centres = reference.cluster_centers_.ravel()
    order = np.argsort(ref_centres)
    np.testing.assert_allclose(clustering.means, ref_centres[order], atol=2e-3)
    assert np.all(np.diff(clustering.means) > 0)
    rank = np.empty(4, np.int64)
    rank[order] = np.arange(4)
    ref_labels = rank[reference.labels_].reshape(volume.shape)
    # Labels may differ only for voxels lying between our threshold and the reference's.
    ref_thresholds = (ref_centres[order][1:] + ref_centres[order][:-1]) / 2
    low = np.minimum(clustering.thresholds, ref_thresholds)
    high = np.maximum(clustering.thresholds, ref_thresholds)
    between = ((volume[..., None] >= low) & (volume[..., None] <= high)).any(-1)
    assert np.all((labels == ref_labels) | between)
    ours = ((volume - clustering.means[labels]) ** 2).sum()
    default = KMeans(4, n_init=4, random_state=0).fit(voxels)
    assert ours <= default.inertia_ * (1 + 1e-6)


def test_integer_volume_uses_exact_values():
    volume = np.repeat(np.array([10, 10, 20, 200, 210], np.uint16), 20).reshape(4, 5, 5)
    clustering, labels = _stage1(volume, 2)
    assert set(np.unique(labels)) == {0, 1}
    assert labels[volume <= 20].max() == 0 and labels[volume >= 200].min() == 1


@pytest.mark.parametrize(
    "volume, classes, message",
    [
        (np.full((2, 4, 4), 3.0), 2, "constant"),
        (np.array([np.nan, 1.0, 2.0, 3.0]).reshape(1, 2, 2), 2, "NaN or Inf"),
        (np.array([np.inf, 1.0, 2.0, 3.0]).reshape(1, 2, 2), 2, "NaN or Inf"),
        (np.array([0.0, 1.0, 1.0, 0.0]).reshape(1, 2, 2), 3, "distinct values"),
    ],
)
def test_bad_volumes_are_refused(volume, classes, message):
    with pytest.raises(SrjaxError, match=message):
        _stage1(volume, classes)
