"""Samplers and the diversity score: deterministic, exact budgets, DIDS against a plain
max-min reference, and a clumped selection scoring below a spread one."""

import numpy as np
import pytest

from srjax.analysis import diversity, samplers
from srjax.errors import SrjaxError


def blobs(n=600, d=6, centres=8, seed=0):
    rng = np.random.default_rng(seed)
    middle = rng.normal(0, 5, size=(centres, d))
    which = rng.integers(0, centres, n)
    return middle[which] + rng.normal(0, 1, size=(n, d)), rng.random(n)


@pytest.mark.parametrize("method", samplers.METHODS)
def test_each_sampler_is_deterministic_and_exact(method):
    x, displacement = blobs()
    first = samplers.sample(method, x, 12, seed=3, displacement=displacement)
    again = samplers.sample(method, x, 12, seed=3, displacement=displacement)
    np.testing.assert_array_equal(first, again)
    assert len(first) == len(set(first.tolist())) == 12
    assert first.min() >= 0 and first.max() < len(x)
    with pytest.raises(SrjaxError, match="--budget"):
        samplers.sample(method, x, len(x) + 1, seed=0, displacement=displacement)


def maxmin_reference(x, cluster, counts):
    """Greedy max-min on euclidean embedding distance from each cluster's densest item, with dense matrices."""
    picks = []
    for c, n_k in zip(np.unique(cluster), counts):
        members = np.flatnonzero(cluster == c)
        distance = np.linalg.norm(x[members][:, None] - x[members][None], axis=-1)
        distance /= distance.max()
        chosen = [int(np.argmax(1 - distance.mean(axis=1)))]
        while len(chosen) < n_k:
            nearest = distance[:, chosen].min(axis=1)
            nearest[chosen] = -1
            chosen.append(int(np.argmax(nearest)))
        picks += members[chosen].tolist()
    return np.sort(picks)


def test_dids_with_alpha_one_is_max_min_on_embeddings_alone():
    x, displacement = blobs(n=300)
    cluster = samplers.kmeans(x, 5, seed=0)
    counts = samplers.allocation(np.bincount(cluster), 15, 1, 6)
    mine = samplers.dids(x, displacement, 15, seed=0, alpha=1.0, cluster=cluster, n_max=6)
    np.testing.assert_array_equal(mine, maxmin_reference(x, cluster, counts))
    other = samplers.dids(x, np.random.default_rng(9).random(300), 15, seed=0, alpha=1.0, cluster=cluster, n_max=6)
    np.testing.assert_array_equal(mine, other)  # the displacement has no say at α = 1
    assert not np.array_equal(mine, samplers.dids(x, displacement, 15, seed=0, alpha=0.3, cluster=cluster, n_max=6))


def test_allocation_is_proportional_within_bounds():
    counts = samplers.allocation(np.array([500, 300, 150, 40, 10]), 20, 1, 8)
    assert counts.sum() == 20 and counts.min() >= 1 and counts.max() <= 8
    assert list(counts) == sorted(counts, reverse=True)
    with pytest.raises(SrjaxError, match="cannot give"):
        samplers.allocation(np.array([5, 5]), 20, 1, 8)


def test_probcover_covers_more_than_random():
    x, _ = blobs(n=500)
    delta = samplers.probcover_delta(x, 10, seed=0)
    def covered(picks):
        return np.mean(np.min(np.linalg.norm(x[:, None] - x[picks][None], axis=-1), axis=1) <= delta)
    assert covered(samplers.probcover(x, 10, 0, delta)) > covered(samplers.random(x, 10, 0))


def test_clumped_selection_scores_below_a_spread_one():
    x, displacement = blobs(n=400)
    population = np.arange(len(x))
    cluster = samplers.kmeans(x, 8, seed=0)
    clumped = np.flatnonzero(cluster == np.bincount(cluster).argmax())[:10]
    spread = samplers.dids(x, displacement, 10, seed=0, cluster=cluster)
    maps = np.random.default_rng(1).normal(size=(len(x), 4, 4, 3))
    maps[cluster == cluster[clumped[0]]] = maps[clumped[0]]  # the clump also looks alike
    scored = {name: diversity.score(x, picks, population, [maps[picks]], [maps[population]], displacement)
              for name, picks in (("clumped", clumped), ("spread", spread))}
    for term in ("latent", "perceptual", "total", "mst_coverage"):
        assert scored["clumped"][term] < scored["spread"][term], term
    random = diversity.score(x, samplers.random(x, 40, 0), population, None, None, None)
    assert 0.8 < random["latent"] < 1.2  # a random selection is about the population


def test_perceptual_distance_of_identical_maps_is_zero():
    maps = np.random.default_rng(0).normal(size=(3, 5, 5, 4))
    maps[1] = maps[0] * 3  # the same up to channel scale: LPIPS normalises channels
    distance = diversity.perceptual_distance([maps])
    assert distance[0, 1] == pytest.approx(0, abs=1e-9) and distance[0, 2] > 0.1
