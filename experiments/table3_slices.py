"""Table III: the number of adjacent slices a 2.5D crop stacks as channels."""

from srjax.sweep import Sweep, grid, sized

SEEDS = {"tiny": (0,), "cpu": (0, 1, 2), "paper": (0, 1, 2, 3, 4)}


def sweep(size: str) -> Sweep:
    base, phantom = sized(size)
    volumes = {"phantom": phantom}
    return Sweep("table3_slices", base, volumes, grid(volumes, {"data.slices": [1, 3, 5, 7, 9]}, SEEDS[size]))
