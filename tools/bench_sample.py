"""Time `srjax sample` on 100,000 tiles (the issue's scale), on CPU.

  python tools/bench_sample.py                    # samplers on 100,000 embeddings, then the whole command
  python tools/bench_sample.py --items 20000 --slices 80

First each sampler alone on ``--items`` embeddings of Gaussian clusters, like a tile
population's (k-means, neighbour searches and all), against a random selection's time.
Then `srjax sample --compare` end to end in a fresh process on a synthetic volume of
``--slices`` 1024² slices cut into 64² tiles (256 a slice: 100,352 tiles at 392 slices),
with tile statistics as embeddings: tiling, embedding, every sampler and its diversity
score, and the outputs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from srjax import io
from srjax.analysis import samplers

SIDE, TILE = 1024, 64


def build(path: Path, slices: int, seed: int = 0) -> None:
    """Slices of smooth random fields of a few textures, written as an OME-Zarr image."""
    rng = np.random.default_rng(seed)
    with io.ome_zarr_writer(path, (slices, SIDE, SIDE), np.float32, name="benchmark volume") as writer:
        for z in range(0, slices, 8):
            depth = min(8, slices - z)
            field = ndimage.gaussian_filter(rng.standard_normal((depth, SIDE, SIDE)).astype(np.float32), (0, 4, 4))
            writer[z : z + depth] = field * (1 + z / slices) + rng.normal(0, 0.1, field.shape).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=32)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--slices", type=int, default=392, help="0: the samplers alone")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, size=(40, args.dims))
    x = centres[rng.integers(0, 40, args.items)] + rng.normal(0, 1, size=(args.items, args.dims))
    displacement = rng.random(args.items)
    print(f"{args.items} embeddings of {args.dims} dimensions, budget {args.budget}")
    for method in samplers.METHODS:
        start = time.perf_counter()
        picks = samplers.sample(method, x, args.budget, seed=0, displacement=displacement)
        print(f"  {method:10s} {time.perf_counter() - start:8.1f} s  ({len(picks)} picks)")
    if not args.slices:
        return
    with tempfile.TemporaryDirectory() as tmp:
        volume = Path(tmp) / "volume.ome.zarr"
        build(volume, args.slices)
        command = [sys.executable, "-m", "srjax.cli", "sample", str(volume), "--budget", str(args.budget),
                   "--tile", str(TILE), "--compare", "--out", str(Path(tmp) / "out")]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        tiles = json.loads((Path(tmp) / "out" / "summary.json").read_text())["tiles"]
        print(f"srjax sample --compare on {tiles} tiles ({args.slices} slices of {SIDE}²): {seconds:.0f} s "
              f"({seconds / 60:.1f} min) for all four samplers, end to end")


if __name__ == "__main__":
    main()
