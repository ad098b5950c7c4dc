"""Today's default over seeds: how much a run's scores move with the seed alone.

Stage 1 is shared (the default k-means draws no seed); each seed trains its own stage 2
and stage 3. The CPU size is the demo (the cpu preset on the 48x160x160 phantom).
"""

from srjax.sweep import Sweep, grid, sized

SEEDS = {"tiny": (0, 1), "cpu": (0, 1, 2, 3, 4), "paper": (0, 1, 2, 3, 4)}


def sweep(size: str) -> Sweep:
    base, phantom = sized(size)
    volumes = {"phantom": phantom}
    return Sweep("seeds", base, volumes, grid(volumes, {}, SEEDS[size]))
