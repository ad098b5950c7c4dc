"""Which items to label: random, TypiClust, ProbCover and domain-informed diversity sampling.

Each sampler takes embeddings X [n, d] (and DIDS a domain signal per item) and returns
exactly ``budget`` distinct indices, the same for the same seed. Neighbourhoods come
from scikit-learn's trees, never from a dense n x n matrix, so 100,000 items take
minutes at most:

* ``random``: uniform without replacement.
* ``typiclust`` (Hacohen et al. 2022): k-means into ``budget`` clusters; from each,
  largest first, the most typical item: the inverse of its mean distance to its 20
  nearest neighbours inside the cluster.
* ``probcover`` (Yehuda et al. 2022): greedy coverage of δ-balls, each pick the item
  whose ball holds the most items not yet covered; δ is the largest radius at which
  95 % of balls hold one k-means cluster only (the paper's purity rule).
* ``dids``: the talk's Algorithm 1, line by line: displacements scaled to [0, 1],
  clusters given items in proportion to their size within [n_min, n_max], and in each
  cluster a start at the densest item and greedy max-min on
  α·D_emb + (1 − α)·D_disp. A cluster larger than ``DENSITY_SAMPLE`` estimates its
  densities and its largest distance from that many of its items.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors

from srjax.errors import SrjaxError

METHODS = ("random", "typiclust", "probcover", "dids")
TYPICALITY_NEIGHBOURS = 20
PURITY = 0.95
DENSITY_SAMPLE = 2048


def check_budget(n: int, budget: int) -> None:
    if not 1 <= budget <= n:
        raise SrjaxError(f"--budget {budget} is not between 1 and the {n} items to choose from")


def kmeans(x: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    return KMeans(n_clusters=clusters, n_init=3, random_state=seed).fit_predict(x)


def random(x: np.ndarray, budget: int, seed: int) -> np.ndarray:
    check_budget(len(x), budget)
    return np.sort(np.random.default_rng(seed).choice(len(x), budget, replace=False))


def typicality(x: np.ndarray, neighbours: int = TYPICALITY_NEIGHBOURS) -> np.ndarray:
    """Inverse mean distance to the ``neighbours`` nearest other items."""
    k = min(neighbours, len(x) - 1)
    if k < 1:
        return np.ones(len(x))
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return 1.0 / (distances[:, 1:].mean(axis=1) + 1e-12)


def typiclust(x: np.ndarray, budget: int, seed: int) -> np.ndarray:
    check_budget(len(x), budget)
    cluster = kmeans(x, budget, seed)
    sizes = np.bincount(cluster, minlength=budget)
    picks = []
    for c in np.argsort(-sizes, kind="stable"):
        members = np.flatnonzero(cluster == c)
        if len(members):
            picks.append(members[np.argmax(typicality(x[members]))])
    if len(picks) < budget:  # k-means left clusters empty: the most typical of the rest
        rest = np.setdiff1d(np.arange(len(x)), picks)
        picks += list(rest[np.argsort(-typicality(x)[rest], kind="stable")[: budget - len(picks)]])
    return np.sort(np.asarray(picks[:budget]))


def _purity(x: np.ndarray, cluster: np.ndarray, delta: float) -> float:
    balls = NearestNeighbors(radius=delta).fit(x).radius_neighbors(x, return_distance=False)
    return float(np.mean([np.all(cluster[ball] == cluster[i]) for i, ball in enumerate(balls)]))


def probcover_delta(x: np.ndarray, clusters: int, seed: int) -> float:
    """The largest δ (to 5 %) with ball purity ≥ PURITY, on a sample of at most 5,000 items."""
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(len(x), min(len(x), 5000), replace=False)]
    cluster = kmeans(sample, min(clusters, len(sample)), seed)
    nearest, _ = NearestNeighbors(n_neighbors=2).fit(sample).kneighbors(sample)
    low, high = float(np.median(nearest[:, 1])), float(np.linalg.norm(sample.max(0) - sample.min(0)))
    if _purity(sample, cluster, low) < PURITY:
        return low
    while high / low > 1.05:
        middle = np.sqrt(low * high)
        low, high = (middle, high) if _purity(sample, cluster, middle) >= PURITY else (low, middle)
    return low


def probcover(x: np.ndarray, budget: int, seed: int, delta: float | None = None) -> np.ndarray:
    check_budget(len(x), budget)
    delta = delta if delta is not None else probcover_delta(x, budget, seed)
    # Symmetric (i is in j's ball when j is in i's), so a row is a ball and a column its holders.
    graph = NearestNeighbors(radius=delta).fit(x).radius_neighbors_graph(x, mode="connectivity").tocsr()
    uncovered = np.ones(len(x), bool)
    gain = np.asarray(graph.sum(axis=0)).ravel()  # items each ball would newly cover
    picks = []
    for _ in range(budget):
        candidates = np.setdiff1d(np.arange(len(x)), picks) if picks else np.arange(len(x))
        best = candidates[np.argmax(gain[candidates])]
        picks.append(best)
        newly = graph.indices[graph.indptr[best] : graph.indptr[best + 1]]
        newly = newly[uncovered[newly]]
        uncovered[newly] = False
        if len(newly):  # a newly covered item no longer counts for any ball that holds it
            gain -= np.asarray(graph[newly].sum(axis=0)).ravel()
    return np.sort(np.asarray(picks))


def allocation(sizes: np.ndarray, budget: int, n_min: int, n_max: int) -> np.ndarray:
    """Picks per cluster: in proportion to its size, each within [n_min, n_max] and at most
    its size, summing to ``budget`` (largest remainders first)."""
    sizes = np.asarray(sizes)
    upper = np.minimum(n_max, sizes)
    lower = np.minimum(n_min, upper)
    if lower.sum() > budget or upper.sum() < budget:
        raise SrjaxError(f"a budget of {budget} cannot give each of {len(sizes)} clusters between {n_min} and "
                         f"{n_max} picks; change --budget or --clusters")
    share = budget * sizes / sizes.sum()
    counts = np.clip(np.floor(share), lower, upper).astype(np.int64)
    remainder = share - np.floor(share)
    while counts.sum() != budget:
        step = 1 if counts.sum() < budget else -1
        room = (counts < upper) if step > 0 else (counts > lower)
        order = np.argsort(-remainder if step > 0 else remainder, kind="stable")
        counts[order[room[order]][0]] += step
        remainder[order[room[order]][0]] = -np.inf if step > 0 else np.inf
    return counts


def _embedding_distance(x: np.ndarray, metric: str, scale: float):
    """D_emb from items ``i`` to every item of ``x``."""
    if metric == "cosine":
        unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return lambda i: 1.0 - unit @ unit[i]
    return lambda i: np.linalg.norm(x - x[i], axis=1) / scale


def _densities(x: np.ndarray, metric: str, rng) -> tuple[np.ndarray, float]:
    """ρ_i = 1 − mean_j D_emb(i, j), and the euclidean scale max ||x_p − x_q||: exact up to
    DENSITY_SAMPLE items, estimated against a sample of that many above."""
    reference = x if len(x) <= DENSITY_SAMPLE else x[rng.choice(len(x), DENSITY_SAMPLE, replace=False)]
    if metric == "cosine":
        unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # noqa: E731
        return 1.0 - (1.0 - unit(x) @ unit(reference).mean(axis=0)), 1.0
    distances = cdist(x, reference)
    scale = float(distances.max()) or 1.0
    return 1.0 - distances.mean(axis=1) / scale, scale


def dids(x: np.ndarray, displacement: np.ndarray | None, budget: int, seed: int, alpha: float = 0.85,
         clusters: int | None = None, metric: str = "euclidean", n_min: int = 1, n_max: int | None = None,
         cluster: np.ndarray | None = None) -> np.ndarray:
    """Algorithm 1 of the talk; ``displacement`` None (no domain signal) is α = 1."""
    check_budget(len(x), budget)
    if metric not in ("euclidean", "cosine"):
        raise SrjaxError(f"--metric {metric!r} is not euclidean or cosine")
    if not 0.0 <= alpha <= 1.0:
        raise SrjaxError(f"--alpha {alpha} is not between 0 and 1")
    rng = np.random.default_rng(seed)
    d = np.zeros(len(x)) if displacement is None else np.asarray(displacement, np.float64)
    spread = d.max() - d.min()
    d_hat = (d - d.min()) / spread if spread > 0 else np.zeros(len(x))
    if cluster is None:
        cluster = kmeans(x, clusters or min(budget, 10), seed)
    labels = np.unique(cluster)
    sizes = np.array([np.sum(cluster == c) for c in labels])
    n_max = n_max or max(n_min, -(-2 * budget // len(labels)))
    counts = allocation(sizes, budget, n_min, n_max)
    picks = []
    for c, n_k in zip(labels, counts):
        members = np.flatnonzero(cluster == c)
        if n_k == 0:
            continue
        density, scale = _densities(x[members], metric, rng)
        distance = _embedding_distance(x[members], metric, scale)
        chosen = [int(np.argmax(density))]
        nearest = alpha * distance(chosen[0]) + (1 - alpha) * np.abs(d_hat[members] - d_hat[members[chosen[0]]])
        while len(chosen) < n_k:
            nearest[chosen] = -np.inf
            best = int(np.argmax(nearest))
            chosen.append(best)
            combined = alpha * distance(best) + (1 - alpha) * np.abs(d_hat[members] - d_hat[members[best]])
            nearest = np.minimum(nearest, combined)
        picks += members[chosen].tolist()
    return np.sort(np.asarray(picks))


def sample(method: str, x: np.ndarray, budget: int, seed: int, displacement=None, **options) -> np.ndarray:
    if method == "random":
        return random(x, budget, seed)
    if method == "typiclust":
        return typiclust(x, budget, seed)
    if method == "probcover":
        return probcover(x, budget, seed)
    if method == "dids":
        return dids(x, displacement, budget, seed, **options)
    raise SrjaxError(f"--method {method!r} is not one of {', '.join(METHODS)}")
