"""Clusterers of a weighted histogram: 1-D k-means (exact DP and Lloyd), Multi-Otsu, GMMs.

Each takes the occupied bins of a histogram (centres ``x`` ascending, counts ``w``)
and returns class means in ascending order plus a class id for every bin, so that
stage 1 labels a voxel with one table lookup. Costs depend on the number of bins,
never on the number of voxels.

On a histogram, Multi-Otsu's between-class variance and k-means' within-class sum
of squares add up to the (fixed) total variance, so both are the same optimal
contiguous partition; ``optimal_partitions`` finds it exactly for every K at once.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import logsumexp

from srjax.progress import bar as progress_bar

LLOYD_MAX_ITER = 300
EM_MAX_ITER = 1000
EM_TOL = 1e-6  # change in mean log-likelihood per voxel at which EM stops (scikit-learn: 1e-3)
REG_COVAR = 1e-6  # added to every variance, as scikit-learn does


@dataclasses.dataclass(frozen=True)
class Clustering:
    """K classes ordered by ascending mean.

    A value belongs to the class of the interval between ``thresholds`` that holds it
    (a value equal to a threshold takes the lower class); without thresholds (GMMs), to
    the component of highest posterior probability.
    """

    means: np.ndarray  # [K] (channel-0 means for multi-channel features)
    objective: float  # within-class sum of squares, or total log-likelihood for GMMs
    thresholds: np.ndarray | None = None  # [K-1]
    weights: np.ndarray | None = None  # GMM only: [K], [K, d] means, [K, d, d] covariances
    centres: np.ndarray | None = None
    covariances: np.ndarray | None = None

    @property
    def classes(self) -> int:
        return len(self.means)

    def classify(self, points: np.ndarray) -> np.ndarray:
        """Class ids (uint8) of [n] values, or of [n, d] feature points for a multi-channel GMM."""
        if self.thresholds is not None:
            return np.searchsorted(self.thresholds, points).astype(np.uint8)
        points = points.reshape(len(points), -1)
        log_prob = _gaussian_log_density(points, self.centres, self.covariances) + np.log(self.weights)
        return np.argmax(log_prob, axis=1).astype(np.uint8)


# ---------------------------------------------------------------- exact 1-D k-means

def optimal_partitions(x: np.ndarray, w: np.ndarray, max_classes: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Globally optimal contiguous partitions of sorted weighted points for K = 1..max_classes.

    Dynamic programme D[k, i] = min_j D[k-1, j] + SSE(j, i) over the first i points; the
    optimal j is monotone in i, so each layer is solved by divide and conquer, one
    vectorised sweep per recursion level: O(K n log n) in all. Returns the SSE of each K
    and, for each K, the start index of every class.
    """
    n = len(x)
    scale = max(float(x.max() - x.min()), 1e-300)
    z = (x - np.average(x, weights=w)) / scale  # centred and scaled: keeps the prefix sums accurate
    cw = np.concatenate([[0.0], np.cumsum(w)])
    cs = np.concatenate([[0.0], np.cumsum(w * z)])
    cq = np.concatenate([[0.0], np.cumsum(w * z * z)])

    def cost(j, i):
        weight = cw[i] - cw[j]
        total = cs[i] - cs[j]
        return np.maximum(cq[i] - cq[j] - total * total / np.where(weight > 0, weight, 1.0), 0.0)

    layers = [cost(np.zeros(n + 1, np.int64), np.arange(n + 1))]
    choices = [np.zeros(n + 1, np.int64)]
    for k in range(2, max_classes + 1):
        previous = layers[-1]
        best = np.full(n + 1, np.inf)
        arg = np.zeros(n + 1, np.int64)
        lo, hi = np.array([k]), np.array([n])
        opt_lo, opt_hi = np.array([k - 1]), np.array([n - 1])
        while len(lo):
            mid = (lo + hi) // 2
            end = np.minimum(mid - 1, opt_hi)
            lengths = end - opt_lo + 1
            starts = np.repeat(opt_lo, lengths)
            segment = np.repeat(np.arange(len(mid)), lengths)
            offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            j = starts + np.arange(lengths.sum()) - np.repeat(offsets, lengths)
            i = mid[segment]
            values = previous[j] + cost(j, i)
            seg_min = np.minimum.reduceat(values, offsets)
            first = np.where(values <= seg_min[segment], np.arange(len(values)), len(values))
            pick = np.minimum.reduceat(first, offsets)
            best[mid], arg[mid] = seg_min, j[pick]
            left = lo <= mid - 1
            right = mid + 1 <= hi
            lo, hi, opt_lo, opt_hi = (
                np.concatenate([lo[left], (mid + 1)[right]]),
                np.concatenate([(mid - 1)[left], hi[right]]),
                np.concatenate([opt_lo[left], arg[mid][right]]),
                np.concatenate([arg[mid][left], opt_hi[right]]),
            )
        layers.append(best)
        choices.append(arg)
    starts_per_k = []
    for k in range(1, max_classes + 1):
        starts, i = [], n
        for layer in range(k - 1, -1, -1):
            i = int(choices[layer][i]) if layer else 0
            starts.append(i)
        starts_per_k.append(np.array(starts[::-1]))
    sse = np.array([layer[n] for layer in layers]) * scale * scale
    return sse, starts_per_k


def class_stats(x: np.ndarray, w: np.ndarray, assignment: np.ndarray, classes: int):
    """Weight, mean and within-class sum of squares of each class (two passes, for accuracy)."""
    weight = np.bincount(assignment, w, classes)
    mean = np.bincount(assignment, w * x, classes) / np.where(weight > 0, weight, 1.0)
    sse = np.bincount(assignment, w * (x - mean[assignment]) ** 2, classes)
    return weight, mean, sse


def _from_starts(starts: np.ndarray, n: int) -> np.ndarray:
    assignment = np.zeros(n, np.int64)
    assignment[starts[1:]] = 1
    return np.cumsum(assignment)


def _optimal_classes(x, w, classes: int):
    """Start index of each class of the optimal K-partition, and each class's mean and SSE."""
    starts = optimal_partitions(x, w, classes)[1][-1]
    _, means, sse = class_stats(x, w, _from_starts(starts, len(x)), classes)
    return starts, means, sse


def kmeans_exact(x, w, classes: int) -> Clustering:
    """The globally optimal 1-D k-means; every voxel goes to its nearest class mean."""
    return nearest_mean(x, w, _optimal_classes(x, w, classes)[1])


def nearest_mean(x, w, means: np.ndarray) -> Clustering:
    means = np.sort(means)
    thresholds = (means[1:] + means[:-1]) / 2
    sse = class_stats(x, w, np.searchsorted(thresholds, x), len(means))[2].sum()
    return Clustering(means, float(sse), thresholds)


def multi_otsu(x, w, classes: int) -> Clustering:
    """Multi-Otsu thresholds: the partition of maximal between-class variance.

    Thresholds are reported as skimage does, the centre of the last bin of each class
    but the brightest.
    """
    starts, means, sse = _optimal_classes(x, w, classes)
    return Clustering(means, float(sse.sum()), x[starts[1:] - 1])


# ---------------------------------------------------------------- Lloyd with k-means++

def kmeans_plus_plus(x, w, classes: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding on weighted points, as scikit-learn does it."""
    trials = 2 + int(np.log(classes))
    p = w / w.sum()
    centres = [x[rng.choice(len(x), p=p)]]
    closest = (x - centres[0]) ** 2
    for _ in range(1, classes):
        potential = w * closest
        if potential.sum() <= 0:
            break
        candidates = x[rng.choice(len(x), size=trials, p=potential / potential.sum())]
        distances = np.minimum(closest[None], (x[None] - candidates[:, None]) ** 2)
        best = int(np.argmin((w[None] * distances).sum(1)))
        centres.append(candidates[best])
        closest = distances[best]
    return np.array(centres)


def lloyd(x, w, centres: np.ndarray, max_iter: int = LLOYD_MAX_ITER) -> np.ndarray:
    """Lloyd iterations until no point changes class; an empty class keeps its centre."""
    centres = np.sort(np.asarray(centres, np.float64))
    assignment = None
    for _ in range(max_iter):
        new = np.searchsorted((centres[1:] + centres[:-1]) / 2, x)
        if assignment is not None and np.array_equal(new, assignment):
            break
        assignment = new
        weight = np.bincount(assignment, w, len(centres))
        sums = np.bincount(assignment, w * x, len(centres))
        centres = np.sort(np.where(weight > 0, sums / np.where(weight > 0, weight, 1.0), centres))
    return centres


def kmeans_lloyd(x, w, classes: int, seed: int = 0, n_init: int = 10) -> Clustering:
    """Best of ``n_init`` Lloyd runs from k-means++ seeds (scikit-learn's recipe, on the histogram)."""
    rng = np.random.default_rng(seed)
    runs = [nearest_mean(x, w, lloyd(x, w, kmeans_plus_plus(x, w, classes, rng))) for _ in range(n_init)]
    return min(runs, key=lambda run: run.objective)


# ---------------------------------------------------------------- Gaussian mixtures

def _gaussian_log_density(points, means, covariances):
    """log N(points | mean_k, cov_k) for [n, d] points and K components: [n, K]."""
    d = points.shape[1]
    # Whitening by the inverse Cholesky factor of each covariance, as scikit-learn does.
    precision_chol = np.linalg.inv(np.linalg.cholesky(covariances)).transpose(0, 2, 1)
    log_det = 2 * np.log(np.diagonal(precision_chol, axis1=1, axis2=2)).sum(1)
    mahalanobis = np.stack([(((points - m) @ p) ** 2).sum(1) for m, p in zip(means, precision_chol)], axis=1)
    return -0.5 * (mahalanobis + d * np.log(2 * np.pi)) + 0.5 * log_det


def em(points, w, resp, reg: float, max_iter: int = EM_MAX_ITER, tol: float = EM_TOL, progress: bool = False):
    """EM for a full-covariance Gaussian mixture on weighted points from initial responsibilities."""
    total = w.sum()
    d = points.shape[1]
    previous = -np.inf
    desc = f"stage 1: EM with {resp.shape[1]} components"
    for _ in progress_bar(range(max_iter), desc=desc, unit="iteration", disable=not progress):
        nk = (w[:, None] * resp).sum(0) + 10 * np.finfo(float).eps
        means = (w[:, None] * resp).T @ points / nk[:, None]
        cov = np.stack([
            ((w * r)[:, None] * (points - m)).T @ (points - m) / n for r, m, n in zip(resp.T, means, nk)
        ]) + reg * np.eye(d)
        log_prob = _gaussian_log_density(points, means, cov) + np.log(nk / total)
        log_norm = logsumexp(log_prob, axis=1)
        resp = np.exp(log_prob - log_norm[:, None])
        loglik = float((w * log_norm).sum())
        if loglik / total - previous / total < tol:
            break
        previous = loglik
    return nk / total, means, cov, loglik


def gmm(points: np.ndarray, w: np.ndarray, classes: int, reg: float = REG_COVAR, progress: bool = False) -> Clustering:
    """Full-covariance Gaussian mixture by EM on weighted [n] values or [n, d] feature points.

    EM starts from the exact k-means partition of channel 0; components are ordered by
    the mean of channel 0.
    """
    points = points.reshape(len(points), -1)
    channel0, inverse = np.unique(points[:, 0], return_inverse=True)
    start = kmeans_exact(channel0, np.bincount(inverse.ravel(), w), classes)
    resp = np.eye(classes)[start.classify(points[:, 0])]
    weights, means, cov, loglik = em(points, w, resp, reg, progress=progress)
    order = np.argsort(means[:, 0])
    return Clustering(means[order, 0], loglik, None, weights[order], means[order], cov[order])


def gmm_parameter_count(classes: int, dims: int) -> int:
    return classes * (dims + dims * (dims + 1) // 2) + classes - 1


# ---------------------------------------------------------------- choosing K

def elbow(sse: np.ndarray) -> int:
    """K at the knee of the SSE curve (K = 1, 2, ...): farthest below the chord from first to last."""
    k = np.arange(1, len(sse) + 1, dtype=np.float64)
    y = sse / sse[0]
    chord = y[0] + (y[-1] - y[0]) * (k - 1) / (k[-1] - 1)
    return int(k[np.argmax(chord - y)])
