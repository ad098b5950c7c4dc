"""Table IV: the pseudo-label method; each method's stage-1 wall time is in results (seconds.stage1)."""

from srjax.sweep import Sweep, grid, sized

SEEDS = {"tiny": (0,), "cpu": (0, 1, 2), "paper": (0, 1, 2, 3, 4)}


def sweep(size: str) -> Sweep:
    base, phantom = sized(size)
    volumes = {"phantom": phantom}
    methods = ["kmeans", "otsu", "gmm"]
    return Sweep("table4_pseudo", base, volumes, grid(volumes, {"pseudo.method": methods}, SEEDS[size]))
