"""How diverse a selection is: the talk's composite score, and MST coverage.

D_total = w_lat·LatentSpread + w_vis·Perceptual + w_disp·Displacement, each term a
ratio to the same measure over the whole population, so a uniform random selection
scores about 1 on each and the weights mix comparable numbers:

* LatentSpread: mean pairwise embedding distance of the selection;
* Perceptual: mean pairwise LPIPS-style distance (Zhang et al. 2018) between the
  selected tiles' feature maps: channels unit-normalised, squared differences averaged
  over positions and layers. LPIPS proper needs downloaded ImageNet weights; srjax uses
  its own encoder's early layers when a run is given, and the tiles' pixels otherwise;
* Displacement: the spread (standard deviation) of the selection's domain signal.

MST coverage is the length of the minimum spanning tree over the selection's
embeddings, in units of the population's mean pairwise distance: larger when the picks
reach further apart.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import pdist, squareform

WEIGHTS = {"latent": 1 / 3, "perceptual": 1 / 3, "displacement": 1 / 3}


def mean_pairwise(x: np.ndarray) -> float:
    return float(pdist(x).mean()) if len(x) > 1 else 0.0


def perceptual_distance(maps: list[np.ndarray]) -> np.ndarray:
    """[n, n] LPIPS-style distances between n items, each given as feature maps [n, h, w, c] per layer."""
    total = 0.0
    for layer in maps:
        unit = layer / np.maximum(np.linalg.norm(layer, axis=-1, keepdims=True), 1e-10)
        flat = unit.reshape(len(unit), -1)
        squared = (flat**2).sum(1)
        total = total + (squared[:, None] + squared[None] - 2 * flat @ flat.T) / (layer.shape[1] * layer.shape[2])
    return np.maximum(total / len(maps), 0.0)


def _ratio(value: float, reference: float) -> float:
    return value / reference if reference > 0 else 0.0


def mst_coverage(x: np.ndarray, unit: float) -> float:
    if len(x) < 2 or unit <= 0:
        return 0.0
    return float(minimum_spanning_tree(squareform(pdist(x))).sum()) / unit


def score(x: np.ndarray, picks: np.ndarray, population: np.ndarray, maps: list[np.ndarray] | None,
          population_maps: list[np.ndarray] | None, displacement: np.ndarray | None,
          weights: dict = WEIGHTS) -> dict:
    """The terms, D_total and MST coverage of selection ``picks`` of items ``x``.

    ``population`` indexes a sample of the items that stands for all of them (pairwise
    distances over all 100,000 would be 5e9); ``maps`` and ``population_maps`` are the
    perceptual feature maps of the picks and of that sample, in the same order."""
    unit = mean_pairwise(x[population])
    terms = {"latent": _ratio(mean_pairwise(x[picks]), unit)}
    if maps is not None:
        pairs = np.triu_indices(len(picks), 1)
        population_pairs = np.triu_indices(len(population), 1)
        terms["perceptual"] = _ratio(float(perceptual_distance(maps)[pairs].mean()) if len(picks) > 1 else 0.0,
                                     float(perceptual_distance(population_maps)[population_pairs].mean()))
    if displacement is not None:
        terms["displacement"] = _ratio(float(np.std(displacement[picks])), float(np.std(displacement)))
    used = {k: weights[k] for k in terms}
    total = sum(used[k] * terms[k] for k in terms) / sum(used.values())
    return {**terms, "total": total, "mst_coverage": mst_coverage(x[picks], unit)}
