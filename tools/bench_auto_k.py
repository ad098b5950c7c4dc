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

  python tools/bench_auto_k.py [--cases 8]
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
from scipy import ndimage
from scipy.special import logsumexp

from srjax import clustering as cl
from srjax import pseudo
from srjax.phantom import PhantomSpec, make_phantom

SHAPE = (24, 96, 96)
BINS = 1024
MAX_K = 8


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
        print(f"{name} ({len(cases)} volumes): " + ", ".join(f"{rule} {count}/{len(cases)}"
                                                           for rule, count in sorted(right.items())))


if __name__ == "__main__":
    main()
