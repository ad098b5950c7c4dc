"""Parameters and forward+backward time of every registered model at a width preset.

  python tools/bench_models.py                       # paper preset, batch 4 of 128x128x7, CPU
  python tools/bench_models.py --size 512 --batch 16 # the paper's crops (on a GPU)

Times one jitted step (logits, cross-entropy against random labels, gradients) after
compiling, as the median of --repeats runs, and prints each model's time relative to
the paper's model, unet_noskip, measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from srjax.losses import cross_entropy
from srjax.models import MODEL_NAMES, build_model

REFERENCE = "unet_noskip"


def measure(name: str, width: str, batch: int, size: int, slices: int, classes: int, repeats: int):
    model = build_model(name, classes, width)
    x = jax.random.normal(jax.random.key(0), (batch, size, size, slices))
    y = jax.random.randint(jax.random.key(1), (batch, size, size), 0, classes)
    params = model.init(jax.random.key(2), x[:1])["params"]
    count = sum(p.size for p in jax.tree.leaves(params))

    @jax.jit
    def step(params):
        def loss(p):
            logits = model.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.key(3)})
            return cross_entropy(logits, y).mean()
        return jax.value_and_grad(loss)(params)

    start = time.perf_counter()
    jax.block_until_ready(step(params))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(params))
        times.append(time.perf_counter() - start)
    return count, float(np.median(times)), compile_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", default="paper")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--slices", type=int, default=7)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    args = parser.parse_args()
    names = args.models.split(",")
    names = [REFERENCE] + [n for n in names if n != REFERENCE]
    print(f"{jax.devices()[0].platform}, {len(jax.devices())} device(s); batch {args.batch} of "
          f"{args.size}x{args.size}x{args.slices}, {args.classes} classes, width {args.width}")
    print(f"{'model':<24}{'parameters':>12}{'step ms':>10}{'x ' + REFERENCE:>18}{'compile s':>11}")
    measure(REFERENCE, args.width, args.batch, args.size, args.slices, args.classes, 2)  # warm up the CPU
    reference = None
    for name in names:
        count, seconds, compile_s = measure(name, args.width, args.batch, args.size, args.slices, args.classes,
                                            args.repeats)
        reference = reference or seconds
        print(f"{name:<24}{count / 1e6:>11.3f}M{1e3 * seconds:>10.0f}{seconds / reference:>18.2f}{compile_s:>11.1f}")


if __name__ == "__main__":
    main()
