"""Table V: how long stage 2 trains before stage 3 starts, up to 5x the default.

Each seed trains stage 2 once, for the longest duration, keeping a checkpoint at every
shorter stopping point; one stage 3 starts from each. results.md gives each stopping
point's stage-2 mean confidence, the quantity the paper reads to choose it.
"""

from srjax.sweep import Sweep, grid, sized

SEEDS = {"tiny": (0,), "cpu": (0, 1, 2), "paper": (0, 1, 2, 3, 4)}
# Stage-2 steps: half, once, twice and five times the size's default (tiny: 3, cpu: 1,200;
# paper: 200 epochs of the 192-slice phantom at batch 16, 2,400 steps).
STOPPING_POINTS = {"tiny": [1, 3, 6, 15], "cpu": [600, 1200, 2400, 6000], "paper": [1200, 2400, 4800, 12000]}


def sweep(size: str) -> Sweep:
    base, phantom = sized(size)
    volumes = {"phantom": phantom}
    return Sweep("table5_stage2_duration", base, volumes,
                 grid(volumes, {"stage2.steps": STOPPING_POINTS[size]}, SEEDS[size]))
