"""Whether two machines compute srjax's training alike: a fingerprint of one tiny training.

  python tools/numerics_fingerprint.py

The same code, seed and packages train to different weights on processors that round
floating-point arithmetic differently (other vector units, other XLA code paths), and
over a thousand steps the differences grow into other labels: the demo's stage 2 scores
80.63 % on one 2-core machine and 78.00 % on another. A comparison between settings is
only sound between runs of one machine kind. This trains the tiny preset's stage 2 on a
tiny phantom (about a minute) and prints the SHA-256 of the weights, with the CPU, the
JAX version and the XLA flags: two machines that print the same digest train alike.
"""

from __future__ import annotations

import hashlib
import os
import platform
import tempfile

import jax
import numpy as np

from srjax import presets
from srjax.phantom import PhantomSpec, make_phantom
from srjax.pipeline import run_pipeline
from srjax.train import latest_params


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    volume, truth = make_phantom(PhantomSpec(shape=(8, 48, 48), seed=3))
    with tempfile.TemporaryDirectory() as tmp:
        run_pipeline(volume, f"{tmp}/run", presets.tiny(), truth=truth, progress=False)
        params = latest_params(f"{tmp}/run/checkpoints/stage2")
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    print(f"cpu: {cpu_name()}; jax {jax.__version__}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"stage-2 weights sha256: {digest.hexdigest()}")


if __name__ == "__main__":
    main()
