"""Time each sampler of `srjax sample` on 100,000 items (the issue's scale), on CPU.

  python tools/bench_sample.py [--items 100000] [--dims 32] [--budget 100]

Embeddings are Gaussian clusters like a tile population's; each sampler runs once
(k-means, neighbour searches and all) and its seconds are printed, with a random
selection's time as the floor they are measured against.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from srjax.analysis import samplers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=32)
    parser.add_argument("--budget", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, size=(40, args.dims))
    x = centres[rng.integers(0, 40, args.items)] + rng.normal(0, 1, size=(args.items, args.dims))
    displacement = rng.random(args.items)
    print(f"{args.items} items of {args.dims} dimensions, budget {args.budget}")
    for method in samplers.METHODS:
        start = time.perf_counter()
        picks = samplers.sample(method, x, args.budget, seed=0, displacement=displacement)
        print(f"{method:10s} {time.perf_counter() - start:8.1f} s  ({len(picks)} picks)")


if __name__ == "__main__":
    main()
