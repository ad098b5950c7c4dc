"""How often ``--classes auto`` finds the true number of phases, and candidate rules beside it.

Synthetic volumes with known K = 2..6 (every phase at least 2, 5, 10 or 20 % of the
voxels, separation/noise from 4 to 12.5, partial-volume blur), in two layouts:
``blobs`` (each phase in compact grains or pores) and ``layers`` (phases as nested
bands of one smooth field, so every middle phase is a thin layer between two others,
as partial-volume ramps are), plus the demo phantom (K = 4) at three seeds. Each rule
sees the 1,024-bin histogram of all voxels (``raw``) or of the voxels whose in-plane
gradient magnitude is at most their slice's median (``interior``):

  srjax      what ``--classes auto`` does today (``pseudo.choose_classes`` on the raw histogram)
  bic, icl   lowest BIC / ICL (BIC plus twice the posterior entropy) of 1-D Gaussian mixtures
  sepD       the largest K whose mixture components are all pairwise separated by Ashman's
             D > D and weigh at least 0.5 %
  pv         lowest BIC of a partial-volume mixture: K Gaussians plus, for every pair, the
             values of a blurred edge between them (mixing fractions Phi(u), u in -2..2),
             each K fitted from a k-means start and a greedy start (the K-1 fit plus a
             component at the worst-fitting bin), the better kept
  pv+assoc   K from ``pv``, lowered while two classes adjacent in value are not spatially
             associated: the phi coefficient of (own class, face neighbour's class) over the
             voxel pairs in those two classes is below 0.4. Spurious splits of one phase by
             independent noise give phi near 0; real phases give 0.45-0.9. Needs one extra
             pass for a 256x256 co-occurrence histogram of face-neighbour values.

  python tools/bench_auto_k.py [--cases 8]
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
from scipy import ndimage
from scipy.special import logsumexp
from scipy.stats import norm

from srjax import clustering as cl
from srjax import pseudo
from srjax.phantom import PhantomSpec, make_phantom

SHAPE = (24, 96, 96)
BINS = 1024
MAX_K = 8
LEVELS = 256  # value bins of the co-occurrence histogram
EDGE_FRACTIONS = norm.cdf(np.linspace(-2, 2, 18)[1:-1])  # a Gaussian-blurred edge, sampled evenly in space
ASSOCIATION = 0.4


def layouts(count: int, seed: int = 0):
    """(K, fractions, noise, seed) for ``count`` volumes per K."""
    rng = np.random.default_rng(seed)
    for k in range(2, 7):
        for _ in range(count):
            minor = rng.choice([0.02, 0.05, 0.1, 0.2])
            fractions = rng.dirichlet(np.ones(k)) * (1 - minor * k) + minor
            yield k, fractions, rng.uniform(0.08, 0.25), int(rng.integers(1 << 30))


def volume(layout: str, k: int, fractions, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if layout == "layers":
        field = ndimage.gaussian_filter(rng.normal(size=SHAPE), 6)
        labels = np.searchsorted(np.quantile(field, np.cumsum(fractions)[:-1]), field)
    else:
        fields = np.stack([ndimage.gaussian_filter(rng.normal(size=SHAPE), 4) for _ in range(k)])
        fields /= fields.std(axis=(1, 2, 3), keepdims=True)
        bias = np.zeros(k)
        for _ in range(60):  # biases that give each phase its fraction
            labels = np.argmax(fields + bias[:, None, None, None], 0)
            got = np.bincount(labels.ravel(), minlength=k) / labels.size
            bias += 0.5 * (np.log(fractions) - np.log(np.maximum(got, 1e-6)))
    means = rng.permutation(k).astype(np.float64)  # unit separation, in a random order
    return ndimage.gaussian_filter(means[labels], 0.7) + rng.normal(0, noise, SHAPE)


def interior(values: np.ndarray) -> np.ndarray:
    kept = []
    for image in values:
        gradient = ndimage.gaussian_gradient_magnitude(image.astype(np.float64), 1.0)
        kept.append(image[gradient <= np.median(gradient)])
    return np.concatenate(kept)


def histogram(values: np.ndarray):
    counts, edges = np.histogram(values, BINS, (values.min(), values.max()))
    occupied = np.flatnonzero(counts)
    return (edges[1:] + edges[:-1])[occupied] / 2, counts[occupied].astype(np.float64), edges[1] - edges[0]


def choices(x, w, width) -> dict:
    reg = cl.REG_COVAR + width**2 / 12
    total = w.sum()
    bic, icl, separation = [], [], []
    for k in range(1, MAX_K + 1):
        g = cl.gmm(x, w, k, reg)
        b = -2 * g.objective + cl.gmm_parameter_count(k, 1) * np.log(total)
        log_prob = cl._gaussian_log_density(x[:, None], g.centres, g.covariances) + np.log(g.weights)
        resp = np.exp(log_prob - logsumexp(log_prob, 1)[:, None])
        bic.append(b)
        icl.append(b - 2 * (w[:, None] * resp * np.log(np.maximum(resp, 1e-300))).sum())
        means, sd = g.centres[:, 0], np.sqrt(g.covariances[:, 0, 0])
        d = np.abs(np.diff(means)) * np.sqrt(2 / (sd[1:] ** 2 + sd[:-1] ** 2)) if k > 1 else np.array([np.inf])
        separation.append((d.min(), g.weights.min()))
    found = {"bic": int(np.argmin(bic)) + 1, "icl": int(np.argmin(icl)) + 1}
    for threshold in (2.0, 2.5):
        ok = [k for k, (d, weight) in enumerate(separation, 1) if d > threshold and weight > 0.005]
        found[f"sep{threshold}"] = max(ok)
    return found


def cooccurrence(values: np.ndarray):
    """[LEVELS, LEVELS] counts of face-neighbour value pairs (symmetric), and the level centres."""
    low, high = values.min(), values.max()
    level = np.minimum(((values - low) / (high - low) * LEVELS).astype(np.int64), LEVELS - 1)
    counts = np.zeros((LEVELS, LEVELS))
    for axis in range(3):
        a = np.moveaxis(level, axis, 0)
        counts += np.bincount((a[1:] * LEVELS + a[:-1]).ravel(), minlength=LEVELS**2).reshape(LEVELS, LEVELS)
    return counts + counts.T, (np.arange(LEVELS) + 0.5) / LEVELS * (high - low) + low


def _pv_log_terms(x, weights, means, variances, pair_weights):
    k = len(means)
    pure = -0.5 * ((x[:, None] - means) ** 2 / variances + np.log(2 * np.pi * variances)) + np.log(np.maximum(weights, 1e-300))
    if k == 1:
        return pure
    i, j = np.triu_indices(k, 1)
    t = EDGE_FRACTIONS[None, :]
    mean = t * means[i, None] + (1 - t) * means[j, None]
    variance = t * variances[i, None] + (1 - t) * variances[j, None]
    mixed = (-0.5 * ((x[:, None, None] - mean) ** 2 / variance + np.log(2 * np.pi * variance))
             + np.log(np.maximum(pair_weights, 1e-300))[None, :, None] - np.log(len(EDGE_FRACTIONS)))
    return np.concatenate([pure, mixed.reshape(len(x), -1)], 1)


def _pv_em(x, w, start, reg, max_iter=500):
    weights, means, variances, pair_weights = start
    k, total, previous = len(means), w.sum(), -np.inf
    for _ in range(max_iter):
        terms = _pv_log_terms(x, weights, means, variances, pair_weights)
        log_density = logsumexp(terms, 1)
        loglik = (w * log_density).sum()
        if loglik - previous < 1e-8 * total:
            break
        previous = loglik
        resp = np.exp(terms - log_density[:, None]) * w[:, None]
        n = np.maximum(resp[:, :k].sum(0), 1e-300)
        weights = resp[:, :k].sum(0) / total
        means = (resp[:, :k] * x[:, None]).sum(0) / n
        variances = (resp[:, :k] * (x[:, None] - means) ** 2).sum(0) / n + reg
        pair_weights = resp[:, k:].sum(0).reshape(-1, len(EDGE_FRACTIONS)).sum(1) / total
    order = np.argsort(means)
    return loglik, weights[order], means[order], variances[order], pair_weights


def pv_fits(x, w, reg):
    """The partial-volume mixture for K = 1..MAX_K (see the module doc)."""
    fits = []
    for k in range(1, MAX_K + 1):
        pairs = k * (k - 1) // 2
        assignment = cl.kmeans_exact(x, w, k).classify(x)
        n = np.maximum(np.bincount(assignment, w, k), 1e-12)
        means = np.bincount(assignment, w * x, k) / n
        variances = np.bincount(assignment, w * (x - means[assignment]) ** 2, k) / n + reg
        spread = np.full(pairs, 0.05 / max(pairs, 1))
        starts = [(n / n.sum() * (1 - spread.sum()), means, variances, spread)]
        if fits:
            _, weights, means, variances, pair_weights = fits[-1]
            model = np.exp(logsumexp(_pv_log_terms(x, weights, means, variances, pair_weights), 1))
            worst = x[np.argmax(w / w.sum() - model / model.sum())]
            spread = np.full(pairs, pair_weights.sum() / pairs)
            starts.append((np.append(weights * 0.9, 0.1 * weights.sum()), np.append(means, worst),
                           np.append(variances, variances.min()), spread))
        fits.append(max((_pv_em(x, w, start, reg) for start in starts), key=lambda fit: fit[0]))
    return fits


def association(counts: np.ndarray, classes: np.ndarray, k: int) -> float:
    """The smallest phi coefficient of (class, neighbour's class) over pairs of classes adjacent in value."""
    pairs = np.zeros((k, k))
    np.add.at(pairs, (classes[:, None], classes[None, :]), counts)
    phis = []
    for a in range(k - 1):
        same_a, across, same_b = pairs[a, a], pairs[a, a + 1], pairs[a + 1, a + 1]
        phis.append((same_a * same_b - across**2) / max((same_a + across) * (across + same_b), 1e-300))
    return min(phis, default=1.0)


def partial_volume_choices(values: np.ndarray) -> dict:
    counts, centres = cooccurrence(values)
    w = counts.sum(1)
    occupied = w > 0
    reg = cl.REG_COVAR + (centres[1] - centres[0]) ** 2 / 12
    bic, phi = [], []
    for k, (loglik, weights, means, variances, _) in enumerate(pv_fits(centres[occupied], w[occupied] / 6, reg), 1):
        bic.append(-2 * loglik + (3 * k - 1 + k * (k - 1) // 2) * np.log(w.sum() / 6))
        log_posterior = (-0.5 * ((centres[:, None] - means) ** 2 / variances + np.log(variances))
                         + np.log(np.maximum(weights, 1e-300)))
        phi.append(association(counts, np.argmax(log_posterior, 1), k))
    chosen = int(np.argmin(bic)) + 1
    found = {"pv": chosen}
    while chosen > 2 and phi[chosen - 1] < ASSOCIATION:
        chosen -= 1
    found["pv+assoc"] = max(chosen, 2)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=8, help="volumes per K and layout (default 8)")
    args = parser.parse_args()
    sets = {layout: [(k, volume(layout, k, *rest)) for k, *rest in layouts(args.cases)]
            for layout in ("blobs", "layers")}
    sets["phantom"] = [(4, make_phantom(PhantomSpec(shape=(48, 160, 160), seed=s))[0]) for s in range(3)]
    for name, cases in sets.items():
        right = collections.Counter()
        for k, values in cases:
            x, w, width = histogram(values.ravel())
            srjax_k, _ = pseudo.choose_classes("kmeans", x, w, MAX_K, 0, cl.REG_COVAR + width**2 / 12)
            right["srjax raw"] += srjax_k == k
            for view, (vx, vw, vwidth) in (("raw", (x, w, width)), ("interior", histogram(interior(values)))):
                for rule, chosen in choices(vx, vw, vwidth).items():
                    right[f"{rule} {view}"] += chosen == k
            for rule, chosen in partial_volume_choices(values).items():
                right[rule] += chosen == k
        print(f"{name} ({len(cases)} volumes): " + ", ".join(f"{rule} {count}/{len(cases)}"
                                                           for rule, count in sorted(right.items())))


if __name__ == "__main__":
    main()
