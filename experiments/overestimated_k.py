"""Over-estimated K: the phantom has 4 classes; cluster into 5 (true + 1) and 10.

confusion.png shows, for each run, which true class the voxels of each pseudo-label
cluster and each stage-3 class belong to: whether the extra clusters split one phase
and whether stage 3 merges them back.
"""

from srjax.sweep import Sweep, grid, sized

SEEDS = {"tiny": (0,), "cpu": (0, 1, 2), "paper": (0, 1, 2, 3, 4)}


def sweep(size: str) -> Sweep:
    base, phantom = sized(size)
    volumes = {"phantom": phantom}
    return Sweep("overestimated_k", base, volumes, grid(volumes, {"pseudo.classes": [5, 10]}, SEEDS[size]),
                 figures=("confusion",))
