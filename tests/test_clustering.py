"""Each clusterer against its reference: brute force, scikit-learn, scikit-image."""

import numpy as np
import pytest
from skimage.filters import threshold_multiotsu
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from srjax import clustering as cl


def _brute_force_sse(x, w, max_classes):
    """O(K n^2) dynamic programme over every split point."""
    n = len(x)

    def cost(j, i):
        mean = np.average(x[j:i], weights=w[j:i])
        return float((w[j:i] * (x[j:i] - mean) ** 2).sum())

    best = np.full((max_classes + 1, n + 1), np.inf)
    best[0, 0] = 0.0
    for k in range(1, max_classes + 1):
        for i in range(k, n + 1):
            best[k, i] = min(best[k - 1, j] + cost(j, i) for j in range(k - 1, i))
    return best[1:, n]


def _mixture_histogram(seed=0, n=400_000):
    """Integer voxel values from three overlapping phases, as (values, counts) and the voxels."""
    rng = np.random.default_rng(seed)
    voxels = np.concatenate([
        rng.normal(9000, 1500, n // 2), rng.normal(20000, 2500, n // 3), rng.normal(31000, 1200, n // 6),
    ]).round().clip(0, 65535)
    x, w = np.unique(voxels, return_counts=True)
    return x, w.astype(np.float64), voxels


@pytest.mark.parametrize("seed", range(4))
def test_optimal_partitions_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(12, 40))
    x = np.sort(rng.choice(1000, n, replace=False)).astype(np.float64)
    w = rng.integers(1, 100, n).astype(np.float64)
    sse, starts = cl.optimal_partitions(x, w, 5)
    np.testing.assert_allclose(sse, _brute_force_sse(x, w, 5), rtol=1e-9)
    _, _, by_class = cl.class_stats(x, w, np.searchsorted(starts[2], np.arange(n), side="right") - 1, 3)
    np.testing.assert_allclose(by_class.sum(), sse[2], rtol=1e-9)


def test_exact_kmeans_is_never_worse_than_sklearn():
    x, w, _ = _mixture_histogram()
    for k in (2, 3, 4, 6):
        ours = cl.kmeans_exact(x, w, k)
        reference = KMeans(k, n_init=10, random_state=0).fit(x[:, None], sample_weight=w)
        assert ours.objective <= reference.inertia_ * (1 + 1e-9)
        assert np.all(np.diff(ours.means) > 0)


def test_lloyd_follows_sklearn_from_the_same_start():
    x, w, _ = _mixture_histogram()
    start = np.array([5000.0, 15000.0, 25000.0, 40000.0])
    ours = cl.lloyd(x, w, start)
    reference = KMeans(4, init=start[:, None], n_init=1, tol=0.0, max_iter=300).fit(x[:, None], sample_weight=w)
    np.testing.assert_allclose(ours, np.sort(reference.cluster_centers_.ravel()), rtol=1e-9)


def test_kmeans_plus_plus_runs_reach_sklearns_objective():
    x, w, _ = _mixture_histogram(1)
    ours = cl.kmeans_lloyd(x, w, 4, seed=0)
    reference = KMeans(4, n_init=10, random_state=0).fit(x[:, None], sample_weight=w)
    assert ours.objective <= reference.inertia_ * (1 + 1e-3)


def test_multi_otsu_matches_skimage_within_one_bin():
    _, _, voxels = _mixture_histogram(2)
    counts, edges = np.histogram(voxels, bins=256)
    centres = (edges[1:] + edges[:-1]) / 2
    occupied = counts > 0
    for classes in (2, 3, 4):
        reference = threshold_multiotsu(hist=(counts, centres), classes=classes)
        ours = cl.multi_otsu(centres[occupied], counts[occupied].astype(np.float64), classes)
        assert np.all(np.abs(ours.thresholds - reference) <= (edges[1] - edges[0]) * (1 + 1e-9)), classes


def test_otsu_and_kmeans_find_the_same_partition():
    x, w, _ = _mixture_histogram(3)
    otsu, kmeans = cl.multi_otsu(x, w, 3), cl.kmeans_exact(x, w, 3)
    np.testing.assert_allclose(otsu.objective, kmeans.objective, rtol=1e-12)
    np.testing.assert_array_equal(otsu.classify(x), kmeans.classify(x))


def test_gmm_log_likelihood_matches_sklearn():
    x, w, voxels = _mixture_histogram(4)
    ours = cl.gmm(x, w, 3)
    reference = GaussianMixture(3, n_init=3, random_state=0, tol=1e-8, max_iter=1000).fit(voxels[:, None])
    theirs = reference.score(voxels[:, None]) * len(voxels)
    assert abs(ours.objective - theirs) <= 0.01 * abs(theirs)
    np.testing.assert_allclose(ours.means, np.sort(reference.means_.ravel()), rtol=0.02)


def test_full_covariance_gmm_on_two_features_matches_sklearn():
    rng = np.random.default_rng(5)
    cov = [[1.0, 0.8], [0.8, 1.0]]
    points = np.concatenate([rng.multivariate_normal([0, 0], cov, 30000),
                             rng.multivariate_normal([3, 1], np.diag([0.5, 2.0]), 20000)])
    binned = np.round(points * 20) / 20  # a 2-D histogram with bins 0.05 wide
    cells, w = np.unique(binned, axis=0, return_counts=True)
    ours = cl.gmm(cells, w.astype(np.float64), 2, reg=cl.REG_COVAR + 0.05**2 / 12)
    reference = GaussianMixture(2, covariance_type="full", random_state=0, tol=1e-8).fit(points)
    theirs = reference.score(points) * len(points)
    assert abs(ours.objective - theirs) <= 0.01 * abs(theirs)
    order = np.argsort(reference.means_[:, 0])
    np.testing.assert_allclose(ours.centres, reference.means_[order], atol=0.05)
    np.testing.assert_allclose(ours.covariances, reference.covariances_[order], atol=0.05)


def test_elbow_finds_the_knee():
    assert cl.elbow(np.array([100.0, 30.0, 10.0, 9.0, 8.5, 8.2])) == 3
